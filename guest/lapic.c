// Local APIC (xAPIC, MMIO at LAPIC_VA): periodic timer, EOI, IPIs, INIT/STARTUP.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"

int lapic_usable;       // the LAPIC page is mapped and the boot CPU's LAPIC is set up

static __always_inline u32 lapic_read(u32 reg)
{
	return *(volatile u32 *)(LAPIC_VA + reg);
}

static __always_inline void lapic_write(u32 reg, u32 v)
{
	*(volatile u32 *)(LAPIC_VA + reg) = v;
}

// Enable this CPU's LAPIC and start its HZ periodic timer.
void lapic_init(void)
{
	if (lapic_read(APIC_ID) >> 24 != (u32)smp_processor_id())
		panic("lapic_init: APIC id %u on cpu %d", lapic_read(APIC_ID) >> 24, smp_processor_id());
	lapic_write(APIC_SVR, 0x100 | SPURIOUS_VECTOR);
	lapic_write(APIC_TIMER_DIV, 0xb);
	lapic_write(APIC_LVT_TIMER, LOCAL_TIMER_VECTOR | APIC_TIMER_PERIODIC);
	lapic_write(APIC_TIMER_INIT, 1000000000 / HZ);     // counts virtual ns
	mycpu()->lapic_ready = 1;
	lapic_usable = 1;
}

void lapic_timer_stop(void)
{
	lapic_write(APIC_LVT_TIMER, LOCAL_TIMER_VECTOR | APIC_LVT_MASKED);
	lapic_write(APIC_TIMER_INIT, 0);
	mycpu()->lapic_ready = 0;
}

void lapic_eoi(void)
{
	lapic_write(APIC_EOI, 0);
}

// ICR_HI then ICR_LO; interrupts off so no handler's IPI slips in between.
void lapic_send_ipi(int cpu, u32 icr)
{
	u64 flags = local_irq_save();

	lapic_write(APIC_ICR_HI, (u32)cpu << 24);
	lapic_write(APIC_ICR_LO, icr);
	local_irq_restore(flags);
}

void lapic_send_ipi_others(u32 icr)
{
	lapic_write(APIC_ICR_LO, icr | APIC_DEST_OTHERS);
}

// INIT then STARTUP: the CPU starts at boot_params.ap_entry.
void lapic_startup_cpu(int cpu)
{
	lapic_send_ipi(cpu, APIC_DM_INIT);
	lapic_send_ipi(cpu, APIC_DM_STARTUP);
}
