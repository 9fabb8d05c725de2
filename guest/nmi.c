// NMIs: from the host and from APIC_DM_NMI IPIs, on the IST_NMI stack.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "task.h"
#include "traps.h"

notrace void nmi_enter(void)
{
	preempt_count_add(NMI_OFFSET + HARDIRQ_OFFSET);
	ct_nmi_enter();
}

notrace void nmi_exit(void)
{
	ct_nmi_exit();
	preempt_count_sub(NMI_OFFSET + HARDIRQ_OFFSET);
}

// Called by the asm stub with the kernel GS in place.
notrace void exc_nmi(struct pt_regs *regs)
{
	nmi_enter();
	default_do_nmi(regs);
	nmi_exit();
}

// Count it and sample the running task; another CPU's panic parks us here.
noinline void default_do_nmi(struct pt_regs *regs)
{
	kstat_inc(KSTAT_NMIS);
	if (panicking)
		play_dead();
	mycpu()->last_nmi_pid = current->pid;
}

// Every 100 ms poke every other online CPU with an NMI (as a hard-lockup check would).
int watchdog_thread(void *arg)
{
	for (;;) {
		msleep(100);
		u64 flags = local_irq_save();
		int me = smp_processor_id();
		for (int cpu = 0; cpu < NCPU; cpu++)
			if (cpu != me && cpu_online(cpu) && !cpu_of(cpu)->dying)
				lapic_send_ipi(cpu, APIC_DM_NMI);
		local_irq_restore(flags);
	}
	return 0;
}
