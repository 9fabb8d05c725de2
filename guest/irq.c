// Hardirq glue: irq_enter/irq_exit (HARDIRQ_OFFSET, RCU, softirqs) and the vectors.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "traps.h"
#include "tracepoint.h"

// Entering a hardirq: RCU watches, preempt_count gains HARDIRQ_OFFSET. The
// sysvec_* glue is notrace because it runs before RCU watches.
notrace void irq_enter(void)
{
	ct_irq_enter();
	preempt_count_add(HARDIRQ_OFFSET);
}

// Leaving a hardirq: run pending softirqs unless nested in another interrupt.
notrace void irq_exit(void)
{
	preempt_count_sub(HARDIRQ_OFFSET);
	if (!in_interrupt() && mycpu()->softirq_pending)
		__do_softirq();
	ct_irq_exit();
}

// The timer is the guest's one interrupt line with a handler (the IPIs are system vectors,
// as in Linux): irq 0 "timer", traced where its handler runs as __handle_irq_event_percpu
// does for every irqaction.
static struct irqaction timer_irqaction = { .name = "timer" };

notrace void sysvec_apic_timer_interrupt(struct pt_regs *regs)
{
	irq_enter();
	trace_irq_handler_entry(TIMER_IRQ, &timer_irqaction);
	timer_interrupt(regs);
	trace_irq_handler_exit(TIMER_IRQ, &timer_irqaction, IRQ_HANDLED);
	irq_exit();
}

notrace void sysvec_reschedule_ipi(struct pt_regs *regs)
{
	irq_enter();
	smp_reschedule_interrupt();
	irq_exit();
}

notrace void sysvec_call_function(struct pt_regs *regs)
{
	irq_enter();
	generic_smp_call_function_interrupt();
	irq_exit();
}

notrace void sysvec_spurious(struct pt_regs *regs)
{
	lapic_eoi();
}

// LOCAL_TIMER_VECTOR at HZ on every online CPU. CPU 0 (never offline) keeps jiffies.
noinline void timer_interrupt(struct pt_regs *regs)
{
	lapic_eoi();
	kstat_inc(KSTAT_TIMER_IRQS);
	if (smp_processor_id() == 0) {
		jiffies++;
		hotplug_poll();
		requester_poll();
	}
	timer_tick_check();
	scheduler_tick();
	rcu_sched_clock_irq();
}
