// Per-CPU GDT (Linux's layout) and TSS with IST stacks; the syscall MSRs.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"

// GDT of the CPU being started, loaded by secondary_startup_64 (cpu_up sets it).
struct desc_ptr ap_gdt_descr;

// IST stacks per CPU: [0] for #DF (IST_DF), [1] for NMI (IST_NMI).
static u8 ist_stacks[NCPU][2][IST_STACK_SIZE] __aligned(16);

static void set_tss_desc(u64 *gdt, struct tss *tss)
{
	u64 base = (u64)tss, limit = sizeof(struct tss) - 1;

	gdt[GDT_ENTRY_TSS] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
		((u64)(0x80 | STS_T64A) << 40) | (((limit >> 16) & 0xf) << 48) |
		(((base >> 24) & 0xff) << 56);
	gdt[GDT_ENTRY_TSS + 1] = base >> 32;
}

// Fill cpu's GDT and TSS (before it runs: the boot CPU for itself, cpu_up for the
// others), so an NMI finds its IST stack as soon as the TSS is loaded. Field by
// field, never zeroed first: a parked CPU still takes NMIs through this TSS.
void cpu_prepare(int cpu)
{
	struct cpu *c = cpu_of(cpu);
	u64 *gdt = c->gdt;

	gdt[GDT_ENTRY_KERNEL32_CS] = SEG_KERNEL32_CS;
	gdt[GDT_ENTRY_KERNEL_CS] = SEG_KERNEL_CS;
	gdt[GDT_ENTRY_KERNEL_DS] = SEG_KERNEL_DS;
	gdt[GDT_ENTRY_USER32_CS] = SEG_USER32_CS;
	gdt[GDT_ENTRY_USER_DS] = SEG_USER_DS;
	gdt[GDT_ENTRY_USER_CS] = SEG_USER_CS;
	c->tss.rsp[0] = (u64)idle_stacks[cpu] + KSTACK_SIZE;
	c->tss.ist[IST_DF - 1] = (u64)ist_stacks[cpu][0] + IST_STACK_SIZE;
	c->tss.ist[IST_NMI - 1] = (u64)ist_stacks[cpu][1] + IST_STACK_SIZE;
	c->tss.iomap_base = sizeof(struct tss);
	set_tss_desc(gdt, &c->tss);
	ap_gdt_descr.size = sizeof(c->gdt) - 1;
	ap_gdt_descr.address = (u64)gdt;
}

// Load this CPU's GDT, reload CS (far return) and the data segments, load the TSS.
// GS/FS are not touched: loading a selector would clear the GS base.
void cpu_init(int cpu)
{
	struct cpu *c = cpu_of(cpu);

	set_tss_desc(c->gdt, &c->tss);  // "available" again after a previous ltr
	lgdt(c->gdt, sizeof(c->gdt));
	__asm__ volatile(
		"pushq %0\n\t"
		"leaq 1f(%%rip), %%rax\n\t"
		"pushq %%rax\n\t"
		"lretq\n"
		"1:\n\t"
		"movl %1, %%eax\n\t"
		"movl %%eax, %%ds\n\t"
		"movl %%eax, %%es\n\t"
		"movl %%eax, %%ss\n\t"
		: : "i"(KERNEL_CS), "i"(KERNEL_DS) : "rax", "memory");
	ltr(TSS_SEL);
}

// syscall/sysret: STAR selectors, LSTAR entry, FMASK clears IF, TF, DF, AC.
void syscall_init(void)
{
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
	wrmsr(MSR_STAR, ((u64)USER32_CS << 48) | ((u64)KERNEL_CS << 32));
	wrmsr(MSR_LSTAR, (u64)entry_SYSCALL_64);
	wrmsr(MSR_SYSCALL_MASK, FL_IF | FL_TF | FL_DF | FL_AC);
}
