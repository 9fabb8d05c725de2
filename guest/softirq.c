// Softirqs: raised in hardirq context, run by irq_exit with interrupts enabled.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "tracepoint.h"

static void (*const softirq_vec[NR_SOFTIRQS])(void) = {
	[TIMER_SOFTIRQ] = run_timer_softirq,
	[SCHED_SOFTIRQ] = run_rebalance_domains,
	[RCU_SOFTIRQ] = rcu_core,
};

#define MAX_SOFTIRQ_RESTART 10

// Interrupts must be off: softirq_pending belongs to this CPU.
void raise_softirq_irqoff(int nr)
{
	mycpu()->softirq_pending |= 1u << nr;
}

// In SOFTIRQ_OFFSET context, interrupts on while the handlers run (as Linux).
void __do_softirq(void)
{
	struct cpu *c = mycpu();
	int restart = MAX_SOFTIRQ_RESTART;
	u32 pending;

	preempt_count_add(SOFTIRQ_OFFSET);
	do {
		pending = c->softirq_pending;
		c->softirq_pending = 0;
		local_irq_enable();
		for (int nr = 0; pending; nr++, pending >>= 1) {
			if (!(pending & 1))
				continue;
			kstat_inc(KSTAT_SOFTIRQS);
			trace_softirq_entry(nr);
			softirq_vec[nr]();
			trace_softirq_exit(nr);
		}
		local_irq_disable();
	} while (c->softirq_pending && --restart);
	preempt_count_sub(SOFTIRQ_OFFSET);
}
