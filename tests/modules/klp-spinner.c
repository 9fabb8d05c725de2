// A target module whose kernel thread calls spin_target() in a loop, napping 1 ms every 16
// calls (a nap is where a transition switches it).
#include <linux/module.h>
#include <linux/delay.h>
#include <linux/errno.h>

struct task;
extern struct task *kernel_thread(int (*fn)(void *), void *arg, const char *name);

static volatile int stop;
static volatile int sink;

noinline int spin_target(int x)
{
	return x + 1;
}

static int spinner(void *arg)
{
	while (!stop) {
		for (int i = 0; i < 16; i++)
			sink = spin_target(i);
		msleep(1);
	}
	return 0;
}

static int spinner_init(void)
{
	return kernel_thread(spinner, NULL, "klp_spinner") ? 0 : -ENOMEM;
}

static void spinner_exit(void)
{
	stop = 1;
	msleep(20);
}

module_init(spinner_init);
module_exit(spinner_exit);
MODULE_LICENSE("GPL");
