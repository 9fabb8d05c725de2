// The idle loop of every CPU's swapper task (pid 0).
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "preempt.h"

// sti; hlt until the next interrupt. RCU is not watching here.
noinline void default_idle(void)
{
	arch_safe_halt();
}

// Halt until there is work; then schedule it. A dying CPU leaves for good.
noinline void do_idle(void)
{
	struct cpu *c = mycpu();

	while (!need_resched()) {
		if (READ_ONCE(c->dying))
			cpu_die();
		local_irq_disable();
		if (need_resched() || READ_ONCE(c->dying)) {
			local_irq_enable();
			continue;
		}
		kstat_inc(KSTAT_IDLE_ENTRIES);
		rcu_idle_enter();
		default_idle();
		local_irq_disable();
		rcu_idle_exit();
		local_irq_enable();
	}
	schedule_idle();
	klp_update_patch_state(current);        // the idle loop is a livepatch safe point
}

void __noreturn cpu_startup_entry(void)
{
	for (;;)
		do_idle();
}
