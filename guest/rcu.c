// A minimal RCU: readers disable preemption, synchronize_rcu waits for every online
// CPU to pass a quiescent state (context switch, idle, user mode). Plus a demo user.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "preempt.h"

noinline void rcu_read_lock(void)
{
	preempt_disable();
}

noinline void rcu_read_unlock(void)
{
	preempt_enable();
}

// From __schedule, rq_lock held: a quiescent state for this CPU.
void rcu_note_context_switch(void)
{
	mycpu()->rcu_qs++;
}

// Wait until every other online CPU passed a quiescent state, went idle or to
// user mode (not watching), or went offline. This CPU is quiescent: we are here.
void synchronize_rcu(void)
{
	u64 snap[NCPU];
	u64 mask;
	int me;

	if (preempt_count())
		panic("synchronize_rcu: atomic context");
	preempt_disable();
	me = smp_processor_id();
	mask = READ_ONCE(cpu_online_mask) & ~(1ul << me);
	for (int cpu = 0; cpu < NCPU; cpu++)
		if (mask & (1ul << cpu))
			snap[cpu] = READ_ONCE(cpu_of(cpu)->rcu_qs);
	preempt_enable();
	for (int cpu = 0; cpu < NCPU; cpu++) {
		if (!(mask & (1ul << cpu)))
			continue;
		while (cpu_online(cpu) && READ_ONCE(cpu_of(cpu)->rcu_qs) == snap[cpu] &&
		       READ_ONCE(cpu_of(cpu)->rcu_watching))
			msleep(1);
	}
}

// ---- the demo: a pointer replaced by rcu_sync, read by RCU_SOFTIRQ -------------
#define RCU_DEMO_MAGIC 0x52435544454d4f21ul     // "!OMEDUCR"

struct rcu_demo {
	u64 magic;
	u64 gen;
};

static struct rcu_demo *volatile rcu_demo_ptr;
static u64 rcu_demo_reads;

// Tick: every 8 jiffies run the RCU softirq on this CPU.
void rcu_sched_clock_irq(void)
{
	if ((jiffies & 7) == 0)
		raise_softirq_irqoff(RCU_SOFTIRQ);
}

// RCU_SOFTIRQ: read the demo pointer; freed memory would show kfree's poison.
void rcu_core(void)
{
	struct rcu_demo *p;

	rcu_read_lock();
	p = READ_ONCE(rcu_demo_ptr);
	if (p) {
		if (p->magic != RCU_DEMO_MAGIC)
			panic("rcu_core: reader saw freed data (gen %lu)", p->gen);
		__atomic_fetch_add(&rcu_demo_reads, 1, __ATOMIC_RELAXED);
	}
	rcu_read_unlock();
}

// Replace the pointer every 20 ms; free the old copy after a grace period.
int rcu_demo_thread(void *arg)
{
	u64 gen = 0;

	for (;;) {
		struct rcu_demo *n = kalloc(), *old;
		if (!n)
			panic("rcu_demo: out of memory");
		n->magic = RCU_DEMO_MAGIC;
		n->gen = ++gen;
		old = rcu_demo_ptr;
		__atomic_store_n(&rcu_demo_ptr, n, __ATOMIC_RELEASE);
		synchronize_rcu();
		if (old)
			kfree(old);
		msleep(20);
	}
	return 0;
}
