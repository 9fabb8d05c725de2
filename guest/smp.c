// SMP: secondary CPU start-up, reschedule and call-function IPIs.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"

// Bring up every other present CPU, one at a time.
void smp_init(void)
{
	for (int cpu = 1; cpu < nr_cpus_present; cpu++)
		if (cpu_up(cpu) < 0)
			printk("smp: CPU%d failed to come up\n", cpu);
	printk("smp: Brought up %d CPUs\n", num_online_cpus());
}

// First C code of a secondary CPU (from secondary_startup_64): GS only.
notrace void secondary_percpu_early(int cpu)
{
	percpu_early_init(cpu, 0);
}

// Early bring-up, RCU not yet watching this CPU: reset the idle task.
noinline void cpu_bringup_early(int cpu)
{
	idle_task_init(cpu);
	mycpu()->dying = 0;
	mycpu()->ct_depth = 0;
}

// A secondary CPU: descriptor tables, RCU, timer, online, then idle forever.
void __noreturn start_secondary(int cpu)
{
	idt_load();
	cpu_init(cpu);
	syscall_init();
	cpu_bringup_early(cpu);
	rcu_cpu_starting(cpu);
	lapic_init();
	set_cpu_online(cpu, 1);
	kstat_inc(KSTAT_CPU_ONLINE);
	cpu_startup_entry();
}

// RESCHEDULE_VECTOR: the sender already set need_resched on our current task.
void smp_reschedule_interrupt(void)
{
	lapic_eoi();
	kstat_inc(KSTAT_IPIS);
	if (mycpu()->dying)
		set_tsk_need_resched(current);
}

// ---- cross calls ---------------------------------------------------------------
struct call_data {
	void (*fn)(void *);
	void *arg;
	int wait;                       // clear pending only after fn ran
	volatile u64 pending;           // CPUs that still hold the request
};

static struct spinlock call_lock = SPINLOCK_INIT("call_function");
static struct call_data *volatile call_req[NCPU];     // call_lock (set) / target (take)

// Run fn(arg) on every other online CPU, from task context. The request lives on
// this stack, so we wait at least until each target has taken it (all of fn if wait).
int smp_call_function(void (*fn)(void *), void *arg, int wait)
{
	struct call_data d = { fn, arg, wait, 0 };
	u64 mask;
	int me;

	spin_lock(&call_lock);
	me = smp_processor_id();
	mask = READ_ONCE(cpu_online_mask) & ~(1ul << me);
	d.pending = mask;
	for (int cpu = 0; cpu < NCPU; cpu++) {
		if (mask & (1ul << cpu)) {
			call_req[cpu] = &d;
			lapic_send_ipi(cpu, CALL_FUNCTION_VECTOR);
		}
	}
	while (d.pending & READ_ONCE(cpu_online_mask))
		cpu_relax();
	for (int cpu = 0; cpu < NCPU; cpu++)    // a CPU that died first never took it
		if (mask & (1ul << cpu))
			__atomic_compare_exchange_n(&call_req[cpu], &(struct call_data *){ &d }, NULL, 0,
						    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	spin_unlock(&call_lock);
	return 0;
}

// Take and run this CPU's request, if any (irqs off).
void flush_smp_call_function_queue(void)
{
	int me = smp_processor_id();
	struct call_data *d = __atomic_exchange_n(&call_req[me], NULL, __ATOMIC_SEQ_CST);
	void (*fn)(void *);
	void *arg;

	if (!d)
		return;
	fn = d->fn;
	arg = d->arg;
	if (!d->wait) {
		__atomic_fetch_and(&d->pending, ~(1ul << me), __ATOMIC_SEQ_CST);
		fn(arg);
	} else {
		fn(arg);
		__atomic_fetch_and(&d->pending, ~(1ul << me), __ATOMIC_SEQ_CST);
	}
}

void generic_smp_call_function_interrupt(void)
{
	lapic_eoi();
	kstat_inc(KSTAT_IPIS);
	flush_smp_call_function_queue();
}
