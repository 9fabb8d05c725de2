// Completions: a thread waits until another says it is done (kernel/sched/completion.c's
// API). complete() lets one waiter through, complete_all() every present and future one.
// Layout in memlayout.h's COMPLETION_*, as guest/include/linux/completion.h declares it.
#include "types.h"
#include "defs.h"
#include "percpu.h"
#include "task.h"

#define COMPLETE_ALL 0xffffffffu

struct completion_waiter {
	struct task *task;
	struct completion_waiter *next;
	bool queued;                    // on the list; cleared by the one who wakes it
};

void complete(struct completion *x)
{
	u64 flags = spin_lock_irqsave(&x->lock);
	struct completion_waiter *w = x->waiters;

	if (x->done != COMPLETE_ALL)
		x->done++;
	if (w) {
		x->waiters = w->next;
		w->queued = false;
		wake_up_process(w->task);
	}
	spin_unlock_irqrestore(&x->lock, flags);
}

void complete_all(struct completion *x)
{
	u64 flags = spin_lock_irqsave(&x->lock);

	x->done = COMPLETE_ALL;
	for (struct completion_waiter *w = x->waiters; w; w = w->next) {
		w->queued = false;
		wake_up_process(w->task);
	}
	x->waiters = NULL;
	spin_unlock_irqrestore(&x->lock, flags);
}

// Sleep (uninterruptibly) until done is non-zero, then take one unit of it.
void wait_for_completion(struct completion *x)
{
	u64 flags = spin_lock_irqsave(&x->lock);
	struct completion_waiter w = { current, NULL, false };

	while (!x->done) {
		if (!w.queued) {                // FIFO: at the tail
			struct completion_waiter **pp = &x->waiters;
			while (*pp)
				pp = &(*pp)->next;
			w.next = NULL;
			*pp = &w;
			w.queued = true;
		}
		current->state = TASK_UNINTERRUPTIBLE;
		spin_unlock_irqrestore(&x->lock, flags);
		schedule();
		flags = spin_lock_irqsave(&x->lock);
	}
	if (w.queued) {                         // done without our wake-up: leave the list
		struct completion_waiter **pp = &x->waiters;
		while (*pp != &w)
			pp = &(*pp)->next;
		*pp = w.next;
	}
	if (x->done != COMPLETE_ALL)
		x->done--;
	spin_unlock_irqrestore(&x->lock, flags);
}

bool try_wait_for_completion(struct completion *x)
{
	u64 flags = spin_lock_irqsave(&x->lock);
	bool ok = x->done != 0;

	if (ok && x->done != COMPLETE_ALL)
		x->done--;
	spin_unlock_irqrestore(&x->lock, flags);
	return ok;
}

bool completion_done(struct completion *x)
{
	return READ_ONCE(x->done) != 0;
}
