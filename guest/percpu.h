// Per-CPU area (GS base in kernel mode), current, and Linux's preempt_count layout.
#ifndef PERCPU_H
#define PERCPU_H
#include "types.h"
#include "memlayout.h"
#include "mmu.h"

struct task;

// One page per CPU in percpu[][]. The first fields are the host contract (PCPU_*).
struct cpu {
	u64 self;               // PCPU_SELF: address of this struct
	u32 cpu;                // PCPU_CPU: CPU number (= APIC id)
	u32 preempt_count;      // PCPU_PREEMPT_COUNT
	struct task *curr;      // PCPU_CURRENT: running task
	u32 rcu_watching;       // PCPU_RCU_WATCHING: 1 while RCU watches this CPU
	u32 pad0;
	u64 user_rsp;           // PCPU_USER_RSP: scratch for entry_SYSCALL_64
	u64 kstack_top;         // PCPU_KSTACK_TOP: kernel stack top of curr
	// ---- kernel private ----
	struct task *idle;      // this CPU's idle task (swapper/N)
	u32 softirq_pending;    // bit per softirq; changed only by this CPU, irqs off
	int dying;              // set by cpu_down: migrate everything off, then die
	u64 rcu_qs;             // quiescent states passed (switch, idle, user); read by synchronize_rcu
	int last_nmi_pid;       // pid running when the last NMI hit
	int lapic_ready;        // this CPU's LAPIC is set up
	int ct_depth;           // context tracking: irq/NMI nesting on this CPU
	u8 ct_saved[8];         // rcu_watching before each nested irq/NMI entry
	u64 clock;              // local_clock() at the last scheduler tick (the rq clock)
	struct tss tss __aligned(16);
	u64 gdt[GDT_ENTRIES] __aligned(16);
};

extern u8 percpu[NCPU][PCPU_SIZE];

_Static_assert(offsetof(struct cpu, self) == PCPU_SELF, "PCPU_SELF");
_Static_assert(offsetof(struct cpu, cpu) == PCPU_CPU, "PCPU_CPU");
_Static_assert(offsetof(struct cpu, preempt_count) == PCPU_PREEMPT_COUNT, "PCPU_PREEMPT_COUNT");
_Static_assert(offsetof(struct cpu, curr) == PCPU_CURRENT, "PCPU_CURRENT");
_Static_assert(offsetof(struct cpu, rcu_watching) == PCPU_RCU_WATCHING, "PCPU_RCU_WATCHING");
_Static_assert(offsetof(struct cpu, user_rsp) == PCPU_USER_RSP, "PCPU_USER_RSP");
_Static_assert(offsetof(struct cpu, kstack_top) == PCPU_KSTACK_TOP, "PCPU_KSTACK_TOP");
_Static_assert(sizeof(struct cpu) <= PCPU_PVCLOCK, "PCPU_PVCLOCK");

#define cpu_of(n) ((struct cpu *)percpu[n])

// Accessors through GS: always inline, so they never carry an ftrace site.
static __always_inline struct cpu *mycpu(void)
{
	struct cpu *c;
	__asm__ volatile("movq %%gs:%c1, %0" : "=r"(c) : "i"(PCPU_SELF));
	return c;
}

static __always_inline int smp_processor_id(void)
{
	u32 v;
	__asm__ volatile("movl %%gs:%c1, %0" : "=r"(v) : "i"(PCPU_CPU));
	return v;
}

static __always_inline struct task *get_current(void)
{
	struct task *t;
	__asm__ volatile("movq %%gs:%c1, %0" : "=r"(t) : "i"(PCPU_CURRENT));
	return t;
}
#define current get_current()

// preempt_count: Linux's layout (PREEMPT_MASK | SOFTIRQ | HARDIRQ | NMI)
static __always_inline u32 preempt_count(void)
{
	u32 v;
	__asm__ volatile("movl %%gs:%c1, %0" : "=r"(v) : "i"(PCPU_PREEMPT_COUNT) : "memory");
	return v;
}

static __always_inline void preempt_count_add(u32 v)
{
	__asm__ volatile("addl %0, %%gs:%c1" : : "ri"(v), "i"(PCPU_PREEMPT_COUNT) : "memory", "cc");
}

static __always_inline void preempt_count_sub(u32 v)
{
	__asm__ volatile("subl %0, %%gs:%c1" : : "ri"(v), "i"(PCPU_PREEMPT_COUNT) : "memory", "cc");
}

static __always_inline void preempt_count_set(u32 v)
{
	__asm__ volatile("movl %0, %%gs:%c1" : : "r"(v), "i"(PCPU_PREEMPT_COUNT) : "memory");
}

static __always_inline u32 this_cpu_rcu_watching(void)
{
	u32 v;
	__asm__ volatile("movl %%gs:%c1, %0" : "=r"(v) : "i"(PCPU_RCU_WATCHING) : "memory");
	return v;
}

static __always_inline void this_cpu_set_rcu_watching(u32 v)
{
	__asm__ volatile("movl %0, %%gs:%c1" : : "r"(v), "i"(PCPU_RCU_WATCHING) : "memory");
}

#define hardirq_count()   (preempt_count() & HARDIRQ_MASK)
#define softirq_count()   (preempt_count() & SOFTIRQ_MASK)
#define in_nmi()          (preempt_count() & NMI_MASK)
#define in_hardirq()      (hardirq_count() != 0)
#define in_interrupt()    (preempt_count() & (HARDIRQ_MASK | SOFTIRQ_MASK | NMI_MASK))
#define in_task()         (!in_interrupt())

#endif
