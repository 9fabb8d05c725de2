/* The system workqueue (guest/workqueue.c): a pool of kworker threads runs queued items;
 * delayed work queues its item from a timer. Layouts are the guest's (abi_check.c). */
#ifndef _LINUX_WORKQUEUE_H
#define _LINUX_WORKQUEUE_H
#include <linux/compiler.h>
#include <linux/kernel.h>
#include <linux/timer.h>
#include <linux/completion.h>

struct work_struct;
typedef void (*work_func_t)(struct work_struct *work);

struct work_struct {
	struct work_struct *next;       /* the workqueue's own fields */
	work_func_t func;
	volatile int pending;
};

struct delayed_work {
	struct work_struct work;
	struct timer_list timer;
};

#define __WORK_INITIALIZER(n, f) { .next = NULL, .func = (f), .pending = 0 }
#define DECLARE_WORK(n, f) struct work_struct n = __WORK_INITIALIZER(n, f)
#define DECLARE_DELAYED_WORK(n, f) struct delayed_work n = { .work = __WORK_INITIALIZER(n.work, f) }
#define INIT_WORK(_work, _func) \
	do { (_work)->next = NULL; (_work)->func = (_func); (_work)->pending = 0; } while (0)
#define INIT_DELAYED_WORK(_work, _func) \
	do { INIT_WORK(&(_work)->work, (_func)); (_work)->timer.pending = 0; } while (0)

static inline struct delayed_work *to_delayed_work(struct work_struct *work)
{
	return container_of(work, struct delayed_work, work);
}

bool schedule_work(struct work_struct *work);
bool schedule_delayed_work(struct delayed_work *dwork, unsigned long delay);
bool flush_work(struct work_struct *work);
bool flush_delayed_work(struct delayed_work *dwork);
bool cancel_work_sync(struct work_struct *work);
bool cancel_delayed_work_sync(struct delayed_work *dwork);

#endif
