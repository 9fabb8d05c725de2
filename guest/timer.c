// jiffies and the timer list: msleep() and schedule_timeout() sleep on it.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"

volatile u64 jiffies;                           // CPU 0's timer_interrupt
static struct spinlock timer_lock = SPINLOCK_INIT("timer");
static struct timer_list *timer_head;           // timer_lock: sorted by expires
static struct timer_list *volatile running_timer[NCPU]; // timer_lock: callback in progress

void init_timer(struct timer_list *t, void (*fn)(struct timer_list *))
{
	t->expires = 0;
	t->function = fn;
	t->next = NULL;
	t->pending = 0;
	t->task = NULL;
}

void add_timer(struct timer_list *t)
{
	u64 flags = spin_lock_irqsave(&timer_lock);
	struct timer_list **pp = &timer_head;

	if (t->pending)
		panic("add_timer: already pending");
	while (*pp && (*pp)->expires <= t->expires)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
	t->pending = 1;
	spin_unlock_irqrestore(&timer_lock, flags);
}

// Remove t if pending; returns 1 if it was.
int del_timer(struct timer_list *t)
{
	u64 flags = spin_lock_irqsave(&timer_lock);
	int ret = 0;

	if (t->pending) {
		struct timer_list **pp = &timer_head;
		while (*pp != t)
			pp = &(*pp)->next;
		*pp = t->next;
		t->pending = 0;
		ret = 1;
	}
	spin_unlock_irqrestore(&timer_lock, flags);
	return ret;
}

// del_timer, and wait until no CPU runs t's callback.
int del_timer_sync(struct timer_list *t)
{
	int ret = del_timer(t);

	for (int cpu = 0; cpu < NCPU; cpu++)
		while (running_timer[cpu] == t)
			cpu_relax();
	return ret;
}

// From the tick: raise TIMER_SOFTIRQ when the first timer has expired.
void timer_tick_check(void)
{
	struct timer_list *t = READ_ONCE(timer_head);

	if (t && READ_ONCE(t->expires) <= jiffies)
		raise_softirq_irqoff(TIMER_SOFTIRQ);
}

// TIMER_SOFTIRQ: run every expired timer's callback, without timer_lock.
void run_timer_softirq(void)
{
	int me = smp_processor_id();
	u64 flags = spin_lock_irqsave(&timer_lock);

	while (timer_head && timer_head->expires <= jiffies) {
		struct timer_list *t = timer_head;
		timer_head = t->next;
		t->pending = 0;
		running_timer[me] = t;
		spin_unlock_irqrestore(&timer_lock, flags);
		t->function(t);
		flags = spin_lock_irqsave(&timer_lock);
		running_timer[me] = NULL;
	}
	spin_unlock_irqrestore(&timer_lock, flags);
}

static void process_timeout(struct timer_list *t)
{
	wake_up_process(t->task);
}

// Sleep in state until woken or timeout jiffies pass; returns the jiffies left.
long schedule_timeout(long timeout, int state)
{
	struct timer_list t;
	u64 expire = jiffies + timeout;
	long left;

	init_timer(&t, process_timeout);
	t.task = current;
	t.expires = expire;
	current->state = state;
	add_timer(&t);
	schedule();
	del_timer_sync(&t);
	left = (long)(expire - jiffies);
	return left > 0 ? left : 0;
}

void msleep(unsigned int ms)
{
	long timeout = (long)ms * HZ / 1000 + 1;

	while (timeout)
		timeout = schedule_timeout(timeout, TASK_UNINTERRUPTIBLE);
}
