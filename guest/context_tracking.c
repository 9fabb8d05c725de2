// Context tracking: where RCU watches this CPU (PCPU_RCU_WATCHING). All notrace:
// these are the state flips themselves, and ftrace asks rcu_is_watching().
//
// Not watching: idle (rcu_idle_enter..exit), user mode (ct_user_enter..exit), an
// offline CPU, early bring-up before rcu_cpu_starting(), teardown after
// rcu_report_dead(). An irq or NMI makes RCU watch for its duration.
#include "types.h"
#include "defs.h"
#include "percpu.h"

notrace int rcu_is_watching(void)
{
	return this_cpu_rcu_watching();
}

// Entered the kernel from user mode (syscall, interrupt, exception): irqs are off.
notrace void ct_user_exit(void)
{
	this_cpu_set_rcu_watching(1);
}

// About to return to user mode, irqs off: a quiescent state.
notrace void ct_user_enter(void)
{
	mycpu()->rcu_qs++;
	this_cpu_set_rcu_watching(0);
}

// Nesting-safe against NMIs: the slot is filled before the depth moves, and the
// saved value is read before the depth drops.
static __always_inline void ct_nest_enter(void)
{
	struct cpu *c = mycpu();
	int d = c->ct_depth;

	if (d >= (int)sizeof(c->ct_saved))
		panic("ct: irq nesting too deep");
	c->ct_saved[d] = this_cpu_rcu_watching();
	barrier();
	c->ct_depth = d + 1;
	barrier();
	this_cpu_set_rcu_watching(1);
}

static __always_inline void ct_nest_exit(void)
{
	struct cpu *c = mycpu();
	int d = c->ct_depth - 1;
	u32 v;

	if (d < 0)
		panic("ct: irq nesting underflow");
	v = c->ct_saved[d];
	barrier();
	c->ct_depth = d;
	barrier();
	this_cpu_set_rcu_watching(v);
}

notrace void ct_irq_enter(void)
{
	ct_nest_enter();
}

notrace void ct_irq_exit(void)
{
	ct_nest_exit();
}

notrace void ct_nmi_enter(void)
{
	ct_nest_enter();
}

notrace void ct_nmi_exit(void)
{
	ct_nest_exit();
}

// The idle loop, irqs off: RCU stops watching (a quiescent state).
notrace void rcu_idle_enter(void)
{
	mycpu()->rcu_qs++;
	this_cpu_set_rcu_watching(0);
}

notrace void rcu_idle_exit(void)
{
	this_cpu_set_rcu_watching(1);
}

// A secondary CPU's bring-up: from here on RCU watches it.
notrace void rcu_cpu_starting(int cpu)
{
	mycpu()->rcu_qs++;
	this_cpu_set_rcu_watching(1);
}

// A dying CPU's last words to RCU: it stops watching for good.
notrace void rcu_report_dead(int cpu)
{
	mycpu()->rcu_qs++;
	this_cpu_set_rcu_watching(0);
}
