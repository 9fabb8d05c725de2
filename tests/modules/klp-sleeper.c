// A target module: its work item sleeps inside sleeper_nap() for nap_ms, so a live patch of
// sleeper_nap cannot switch the kworker until the nap ends.
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/workqueue.h>
#include <linux/delay.h>

static int nap_ms = 3000;
module_param(nap_ms, int, 0644);

noinline int sleeper_nap(int ms)
{
	pr_info("%s: sleeping %d ms\n", __func__, ms);
	msleep(ms);
	pr_info("%s: awake\n", __func__);
	return ms;
}

static void sleeper_work_fn(struct work_struct *work)
{
	sleeper_nap(nap_ms);
}

static DECLARE_DELAYED_WORK(sleeper_work, sleeper_work_fn);

static int sleeper_init(void)
{
	schedule_delayed_work(&sleeper_work, 0);
	return 0;
}

static void sleeper_exit(void)
{
	cancel_delayed_work_sync(&sleeper_work);
}

module_init(sleeper_init);
module_exit(sleeper_exit);
MODULE_LICENSE("GPL");
