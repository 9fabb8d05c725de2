// A live patch of the klp_spinner module's spin_target.
#include <linux/module.h>
#include <linux/livepatch.h>

static int patched_target(int x)
{
	return x + 2;
}

static struct klp_func funcs[] = {
	{ .old_name = "spin_target", .new_func = patched_target, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "klp_spinner", .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int spinner_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void spinner_patch_exit(void)
{
}

module_init(spinner_patch_init);
module_exit(spinner_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
