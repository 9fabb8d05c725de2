// Shadow variables: attach, find, construct, free; every step logged.
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/slab.h>

static int ctor(void *obj, void *shadow_data, void *ctor_data)
{
	*(int *)shadow_data = *(int *)ctor_data;
	pr_info("ctor: %d\n", *(int *)ctor_data);
	return 0;
}

static void dtor(void *obj, void *shadow_data)
{
	pr_info("dtor: %d\n", *(int *)shadow_data);
}

static int klp_shadow_init(void)
{
	int *obj = kmalloc(2 * sizeof(int), GFP_KERNEL);
	int one = 1, two = 2, *sv;

	if (!obj)
		return -ENOMEM;
	pr_info("get before alloc: %s\n", klp_shadow_get(obj, 0x1234) ? "found" : "NULL");
	sv = klp_shadow_alloc(obj, 0x1234, sizeof(int), GFP_KERNEL, ctor, &one);
	pr_info("get: %d\n", *(int *)klp_shadow_get(obj, 0x1234));
	pr_info("duplicate alloc: %s\n",
		klp_shadow_alloc(obj, 0x1234, sizeof(int), GFP_KERNEL, ctor, &two) ? "made" : "NULL");
	pr_info("get_or_alloc same: %s\n",
		klp_shadow_get_or_alloc(obj, 0x1234, sizeof(int), GFP_KERNEL, ctor, &two) == sv ? "same" : "other");
	klp_shadow_get_or_alloc(obj + 1, 0x1234, sizeof(int), GFP_KERNEL, ctor, &two);
	klp_shadow_free(obj, 0x1234, dtor);
	pr_info("get after free: %s\n", klp_shadow_get(obj, 0x1234) ? "found" : "NULL");
	klp_shadow_free_all(0x1234, dtor);
	pr_info("get after free_all: %s\n", klp_shadow_get(obj + 1, 0x1234) ? "found" : "NULL");
	kfree(obj);
	return 0;
}

static void klp_shadow_exit(void)
{
}

module_init(klp_shadow_init);
module_exit(klp_shadow_exit);
MODULE_LICENSE("GPL");
