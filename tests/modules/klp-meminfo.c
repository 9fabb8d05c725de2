// A live patch of meminfo_proc_show that replaces every earlier patch when replace=1
// (atomic replace), in the manner of the kernel's atomic replace test module.
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int replace;
module_param(replace, int, 0644);

static int klp_meminfo_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: %s\n", THIS_MODULE->name, "patched meminfo");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "meminfo_proc_show", .new_func = klp_meminfo_show, },
	{ }
};

static struct klp_object objs[] = {
	{ .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int klp_meminfo_init(void)
{
	patch.replace = replace;
	return klp_enable_patch(&patch);
}

static void klp_meminfo_exit(void)
{
}

module_init(klp_meminfo_init);
module_exit(klp_meminfo_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
