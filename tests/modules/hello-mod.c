// A small module for the loader tests: a parameter, an exported-by-name function, init and
// exit that log, and an init that fails with -ENODEV when count=13.
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>

static int count = 3;
module_param(count, int, 0644);
MODULE_PARM_DESC(count, "how many greetings");
static bool loud;
module_param(loud, bool, 0444);
static char *who = "world";
module_param(who, charp, 0644);

int hello_twice(int x)
{
	return 2 * x + count;
}

static int __init hello_init(void)
{
	pr_info("hello %s %d loud=%d\n", who, hello_twice(count), loud);
	return count == 13 ? -ENODEV : 0;
}

static void __exit hello_exit(void)
{
	pr_info("bye\n");
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ftemu test: a module with parameters");
