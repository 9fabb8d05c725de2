// The system workqueue: a pool of kernel threads ("kworker/u:N") takes queued work items
// in order, so one item that sleeps does not hold up the others (as the kernel's
// concurrency-managed pools); delayed work is a timer that queues its item.
// Layouts match include/linux/workqueue.h.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "task.h"

static struct spinlock wq_lock = SPINLOCK_INIT("workqueue");
static struct work_struct *wq_head, *wq_tail;  // wq_lock: pending items, FIFO
#define NR_WORKERS 4
static struct work_struct *volatile wq_running[NR_WORKERS];    // what each worker runs now
static struct semaphore wq_sem;                 // one count per queued item

static int worker_thread(void *arg)
{
	int id = (int)(u64)arg;

	for (;;) {
		struct work_struct *w;
		u64 flags;

		down(&wq_sem);
		flags = spin_lock_irqsave(&wq_lock);
		w = wq_head;
		if (w) {
			wq_head = w->next;
			if (!wq_head)
				wq_tail = NULL;
			w->pending = 0;
			wq_running[id] = w;
		}
		spin_unlock_irqrestore(&wq_lock, flags);
		if (w) {
			w->func(w);
			WRITE_ONCE(wq_running[id], NULL);
		}
	}
	return 0;
}

void workqueue_init(void)
{
	sema_init(&wq_sem, 0);
}

// The workers start with the first work item (creating a task never sleeps here), so a
// kernel that queues no work has no kworkers, and the pids of the boot tasks stay put.
static void workers_start(void)
{
	static volatile int started;

	if (READ_ONCE(started) || __atomic_exchange_n(&started, 1, __ATOMIC_ACQ_REL))
		return;
	for (int i = 0; i < NR_WORKERS; i++) {
		char name[16];
		snprintf(name, sizeof(name), "kworker/u:%d", i);
		kernel_thread(worker_thread, (void *)(u64)i, name);
	}
}

static bool work_running(struct work_struct *w)
{
	for (int i = 0; i < NR_WORKERS; i++)
		if (READ_ONCE(wq_running[i]) == w)
			return true;
	return false;
}

// Queue w unless it is already pending; true if it was queued.
bool schedule_work(struct work_struct *w)
{
	u64 flags;
	bool queued;

	workers_start();
	flags = spin_lock_irqsave(&wq_lock);
	queued = !w->pending;
	if (queued) {
		w->pending = 1;
		w->next = NULL;
		if (wq_tail)
			wq_tail->next = w;
		else
			wq_head = w;
		wq_tail = w;
	}
	spin_unlock_irqrestore(&wq_lock, flags);
	if (queued)
		up(&wq_sem);
	return queued;
}

static void delayed_work_timer_fn(struct timer_list *t)
{
	schedule_work(&container_of(t, struct delayed_work, timer)->work);
}

bool schedule_delayed_work(struct delayed_work *dw, unsigned long delay)
{
	if (dw->work.pending || dw->timer.pending)
		return false;
	if (!delay)
		return schedule_work(&dw->work);
	init_timer(&dw->timer, delayed_work_timer_fn);
	dw->timer.expires = jiffies + delay;
	add_timer(&dw->timer);
	return true;
}

// Wait until w is neither queued nor running.
bool flush_work(struct work_struct *w)
{
	bool waited = false;

	while (READ_ONCE(w->pending) || work_running(w)) {
		msleep(1);
		waited = true;
	}
	return waited;
}

// Take w off the queue if it is there, then wait for a running instance to end.
bool cancel_work_sync(struct work_struct *w)
{
	u64 flags = spin_lock_irqsave(&wq_lock);
	struct work_struct **pp, *prev = NULL;
	bool was_pending = false;

	for (pp = &wq_head; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			if (wq_tail == w)
				wq_tail = prev;
			w->pending = 0;
			was_pending = true;
			break;
		}
	}
	spin_unlock_irqrestore(&wq_lock, flags);
	if (was_pending)
		down_trylock(&wq_sem);          // its count, so the worker does not wake for nothing
	flush_work(w);
	return was_pending;
}

bool cancel_delayed_work_sync(struct delayed_work *dw)
{
	bool pending = del_timer_sync(&dw->timer);

	return cancel_work_sync(&dw->work) || pending;
}

bool flush_delayed_work(struct delayed_work *dw)
{
	if (del_timer_sync(&dw->timer))
		schedule_work(&dw->work);
	return flush_work(&dw->work);
}
