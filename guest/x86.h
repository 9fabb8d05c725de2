// Routines to let C code use special x86 instructions, named after the manual.
#ifndef X86_H
#define X86_H
#include "types.h"

// Model-specific registers
#define MSR_EFER            0xc0000080
#define MSR_STAR            0xc0000081
#define MSR_LSTAR           0xc0000082
#define MSR_SYSCALL_MASK    0xc0000084
#define MSR_FS_BASE         0xc0000100
#define MSR_GS_BASE         0xc0000101
#define MSR_KERNEL_GS_BASE  0xc0000102
#define EFER_SCE            (1 << 0)

// RFLAGS bits
#define FL_TF   0x00000100
#define FL_IF   0x00000200
#define FL_DF   0x00000400
#define FL_AC   0x00040000

static __always_inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static __always_inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static __always_inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static __always_inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static __always_inline void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

struct desc_ptr {
	u16 size;
	u64 address;
} __packed;

static __always_inline void lgdt(void *base, u16 size)
{
	struct desc_ptr d = { size - 1, (u64)base };
	__asm__ volatile("lgdt %0" : : "m"(d));
}

static __always_inline void lidt(void *base, u16 size)
{
	struct desc_ptr d = { size - 1, (u64)base };
	__asm__ volatile("lidt %0" : : "m"(d));
}

static __always_inline void ltr(u16 sel)
{
	__asm__ volatile("ltr %0" : : "r"(sel));
}

static __always_inline void lcr3(u64 pa)
{
	__asm__ volatile("mov %0, %%cr3" : : "r"(pa) : "memory");
}

static __always_inline u64 rcr3(void)
{
	u64 v;
	__asm__ volatile("mov %%cr3, %0" : "=r"(v));
	return v;
}

static __always_inline u64 rcr2(void)
{
	u64 v;
	__asm__ volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

static __always_inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static __always_inline u64 read_rflags(void)
{
	u64 f;
	__asm__ volatile("pushfq; popq %0" : "=r"(f) : : "memory");
	return f;
}

static __always_inline u64 read_rbp(void)
{
	u64 v;
	__asm__ volatile("mov %%rbp, %0" : "=r"(v));
	return v;
}

static __always_inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static __always_inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static __always_inline void hlt(void) { __asm__ volatile("hlt" ::: "memory"); }
static __always_inline void swapgs(void) { __asm__ volatile("swapgs" ::: "memory"); }
static __always_inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

static __always_inline void invlpg(u64 va)
{
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

// Interrupt flag save/restore, as Linux's local_irq_save/restore.
static __always_inline u64 local_irq_save(void)
{
	u64 f = read_rflags();
	cli();
	return f;
}

static __always_inline void local_irq_restore(u64 f)
{
	if (f & FL_IF)
		sti();
}

static __always_inline int irqs_disabled(void)
{
	return !(read_rflags() & FL_IF);
}

#define local_irq_disable() cli()
#define local_irq_enable() sti()

#endif
