// A live patch of the klp_sleeper module's sleeper_nap (an object that is a module).
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static int patched_nap(int ms)
{
	pr_info("%s: no nap today\n", __func__);
	return -ms;
}

static struct klp_func funcs[] = {
	{ .old_name = "sleeper_nap", .new_func = patched_nap, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "klp_sleeper", .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int sleeper_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void sleeper_patch_exit(void)
{
}

module_init(sleeper_patch_init);
module_exit(sleeper_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
