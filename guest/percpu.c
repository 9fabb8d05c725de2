// Per-CPU areas, kstat counters and the online CPU mask.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "task.h"

u8 percpu[NCPU][PCPU_SIZE] __aligned(PCPU_SIZE);
u64 kstat[NCPU][KSTAT_NR];              // each CPU increments only its own row
volatile u64 cpu_online_mask;           // bit n: CPU n online (host reads it)

// Point GS at this CPU's area and make the idle task current. Runs before any
// traceable code on the CPU, so it must not have an ftrace site itself.
notrace void percpu_early_init(int cpu, int bsp)
{
	struct cpu *c = cpu_of(cpu);

	c->self = (u64)c;
	c->cpu = cpu;
	c->curr = &idle_tasks[cpu];
	c->idle = &idle_tasks[cpu];
	c->kstack_top = (u64)idle_stacks[cpu] + KSTACK_SIZE;
	c->softirq_pending = 0;
	// The boot CPU starts with RCU watching (as Linux); a secondary CPU does not
	// until rcu_cpu_starting(). Idle tasks run with preemption disabled.
	c->rcu_watching = bsp ? 1 : 0;
	c->preempt_count = 1;
	wrmsr(MSR_GS_BASE, (u64)c);
	wrmsr(MSR_KERNEL_GS_BASE, 0);
}

void kstat_inc(int i)
{
	__atomic_fetch_add(&kstat[smp_processor_id()][i], 1, __ATOMIC_RELAXED);
}

int cpu_online(int cpu)
{
	return (READ_ONCE(cpu_online_mask) >> cpu) & 1;
}

void set_cpu_online(int cpu, int online)
{
	if (online)
		__atomic_fetch_or(&cpu_online_mask, 1ul << cpu, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_and(&cpu_online_mask, ~(1ul << cpu), __ATOMIC_SEQ_CST);
}

int num_online_cpus(void)
{
	u64 m = READ_ONCE(cpu_online_mask);
	int n = 0;

	for (; m; m &= m - 1)
		n++;
	return n;
}
