// The scheduler: one global FIFO runqueue, __schedule/context_switch, wakeups, ticks.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"
#include "tracepoint.h"

// Runnable tasks that are not running. Lock order: any other lock, then rq_lock.
static struct spinlock rq_lock = SPINLOCK_INIT("rq");
static struct task *rq_head, *rq_tail;  // rq_lock
static volatile int rq_nr;              // rq_lock (read racily by the tick)
static volatile u64 nr_switches;        // rq_lock

void sched_init(void)
{
	rq_head = rq_tail = NULL;
	rq_nr = 0;
}

static void enqueue_task(struct task *p)
{
	if (p->on_rq)
		panic("enqueue_task: pid %d queued twice", p->pid);
	p->rq_next = NULL;
	if (rq_tail)
		rq_tail->rq_next = p;
	else
		rq_head = p;
	rq_tail = p;
	p->on_rq = 1;
	rq_nr++;
}

static struct task *pick_next_task(struct cpu *c)
{
	struct task *p = rq_head;

	if (c->dying || !p)
		return c->idle;
	rq_head = p->rq_next;
	if (!rq_head)
		rq_tail = NULL;
	p->rq_next = NULL;
	p->on_rq = 0;
	rq_nr--;
	return p;
}

// Switch address space and kernel stack, then registers. Returns the task we
// switched away from, as seen once this task runs again.
static noinline struct task *context_switch(struct cpu *c, struct task *prev, struct task *next)
{
	c->curr = next;
	c->kstack_top = task_stack_top(next);
	c->tss.rsp[0] = c->kstack_top;
	if (next->pml4 != prev->pml4)
		lcr3(V2P(next->pml4));
	return switch_to(prev, next);
}

// Runs on the new task right after switch_to: drop rq_lock, free a dead prev.
static noinline void finish_task_switch(struct task *prev)
{
	int dead = prev->state == TASK_DEAD;

	prev->on_cpu = 0;
	spin_unlock(&rq_lock);
	local_irq_enable();
	if (dead)
		task_free(prev);
}

// The core. preempt: prev was preempted, so it stays runnable whatever its state.
static noinline void __schedule(int preempt)
{
	struct cpu *c;
	struct task *prev, *next;

	local_irq_disable();
	spin_lock(&rq_lock);
	c = mycpu();
	prev = c->curr;
	rcu_note_context_switch();
	clear_tsk_need_resched(prev);
	if (prev != c->idle && !prev->on_rq && prev->state != TASK_DEAD &&
	    (prev->state == TASK_RUNNING || preempt))
		enqueue_task(prev);
	next = pick_next_task(c);
	if (next == prev) {
		spin_unlock(&rq_lock);
		local_irq_enable();
		return;
	}
	next->on_cpu = 1;
	next->cpu = c->cpu;
	next->ticks = 0;
	nr_switches++;
	kstat_inc(KSTAT_CTX_SWITCHES);
	trace_sched_switch(preempt, prev, next);
	prev = context_switch(c, prev, next);
	finish_task_switch(prev);
}

void schedule(void)
{
	if (preempt_count() != 0)
		panic("scheduling while atomic: preempt_count %x", preempt_count());
	do {
		preempt_disable();
		__schedule(0);
		preempt_enable_no_resched();
	} while (need_resched());
}

// The idle task (preempt_count 1) gives the CPU away.
void schedule_idle(void)
{
	do {
		__schedule(0);
	} while (need_resched());
}

// From preempt_enable() when the count drops to 0 with need_resched set.
void preempt_schedule(void)
{
	if (preempt_count() || irqs_disabled())
		return;
	do {
		preempt_disable();
		__schedule(1);
		preempt_enable_no_resched();
	} while (need_resched());
}

// From the interrupt return path to kernel mode: irqs off, preempt_count 0.
void preempt_schedule_irq(void)
{
	do {
		preempt_disable();
		local_irq_enable();
		__schedule(1);
		local_irq_disable();
		preempt_enable_no_resched();
	} while (need_resched());
}

// A new task's first code (from ret_from_fork).
void schedule_tail(struct task *prev)
{
	finish_task_switch(prev);
	preempt_enable();
}

// Make an idle online CPU pick up queued work: this CPU first, then the lowest.
static void wake_idle_cpu(void)
{
	int me = smp_processor_id();

	for (int i = -1; i < NCPU; i++) {
		int cpu = i < 0 ? me : i;
		struct cpu *c = cpu_of(cpu);
		if (!cpu_online(cpu) || c->dying || c->curr != c->idle)
			continue;
		if (test_tsk_need_resched(c->idle) && cpu != me)
			continue;       // already kicked: try another
		set_tsk_need_resched(c->idle);
		if (cpu != me)
			lapic_send_ipi(cpu, RESCHEDULE_VECTOR);
		return;
	}
}

// Wake p if its state is in state: make it runnable and queue it.
noinline int try_to_wake_up(struct task *p, int state)
{
	u64 flags = spin_lock_irqsave(&rq_lock);
	int queued = 0;

	if (!(p->state & state)) {
		spin_unlock_irqrestore(&rq_lock, flags);
		return 0;
	}
	p->state = TASK_RUNNING;
	trace_sched_wakeup(p);
	if (!p->on_cpu && !p->on_rq) {
		enqueue_task(p);
		queued = 1;
	}
	if (queued)
		wake_idle_cpu();
	spin_unlock_irqrestore(&rq_lock, flags);
	return 1;
}

int wake_up_process(struct task *p)
{
	return try_to_wake_up(p, TASK_NORMAL);
}

// Ask cpu to reschedule now (IPI if remote).
void resched_cpu(int cpu)
{
	struct task *t = READ_ONCE(cpu_of(cpu)->curr);

	set_tsk_need_resched(t);
	if (cpu != smp_processor_id())
		lapic_send_ipi(cpu, RESCHEDULE_VECTOR);
}

// Timer tick, hardirq context: time slices and the periodic rebalance.
void scheduler_tick(void)
{
	struct cpu *c = mycpu();
	struct task *curr = c->curr;

	c->clock = local_clock();
	if (c->dying) {
		set_tsk_need_resched(curr);
		return;
	}
	if (curr == c->idle) {
		if (READ_ONCE(rq_nr) > 0)
			set_tsk_need_resched(curr);
	} else if (++curr->ticks >= TIMESLICE_TICKS && READ_ONCE(rq_nr) > 0) {
		set_tsk_need_resched(curr);
	}
	if ((jiffies & 3) == (u64)c->cpu % 4)
		raise_softirq_irqoff(SCHED_SOFTIRQ);
}

// SCHED_SOFTIRQ: if work is waiting, wake an idle CPU for it.
void run_rebalance_domains(void)
{
	u64 flags;

	if (READ_ONCE(rq_nr) == 0)
		return;
	flags = spin_lock_irqsave(&rq_lock);
	if (rq_nr > 0)
		wake_idle_cpu();
	spin_unlock_irqrestore(&rq_lock, flags);
}

void sched_yield(void)
{
	set_tsk_need_resched(current);
	schedule();
}

u64 nr_context_switches(void)
{
	return nr_switches;
}
