/* The system workqueue (guest/workqueue.c): a pool of kworker threads runs queued items;
 * delayed work queues its item from a timer. The structures are the guest kernel's. */
#ifndef _LINUX_WORKQUEUE_H
#define _LINUX_WORKQUEUE_H
#include <linux/compiler.h>
#include <linux/jiffies.h>
#include "../../defs.h"         /* struct work_struct, struct delayed_work, schedule_work ... */

typedef void (*work_func_t)(struct work_struct *work);

#define __WORK_INITIALIZER(n, f) { .next = NULL, .func = (f), .pending = 0 }
#define DECLARE_WORK(n, f) struct work_struct n = __WORK_INITIALIZER(n, f)
#define DECLARE_DELAYED_WORK(n, f) struct delayed_work n = { .work = __WORK_INITIALIZER(n.work, f) }
#define INIT_WORK(_work, _func) \
	do { (_work)->next = NULL; (_work)->func = (_func); (_work)->pending = 0; } while (0)
#define INIT_DELAYED_WORK(_work, _func) INIT_WORK(&(_work)->work, (_func))

static inline struct delayed_work *to_delayed_work(struct work_struct *work)
{
	return container_of(work, struct delayed_work, work);
}

#endif
