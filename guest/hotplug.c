// CPU hotplug: cpu_down/cpu_up, the dying CPU's last steps, and the hotplugd thread.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"

#define HOTPLUG_WAIT_MS 1000

volatile int hotplug_pending;           // requests queued or in progress (host reads)
static struct mutex cpu_add_remove_lock;         // serializes cpu_up / cpu_down
static volatile int hp_want[NCPU];      // 0: nothing, 1: up, 2: down (atomic xchg)
static volatile int hotplug_kick;       // a request arrived: CPU 0's tick wakes hotplugd
static struct task *volatile hotplug_task;

void hotplug_init(void)
{
	mutex_init(&cpu_add_remove_lock, "cpu_add_remove_lock");
}

static int check_cpu(int cpu, int up)
{
	if (cpu < 0 || cpu >= nr_cpus_present)
		return -EINVAL;
	if (cpu == 0 && !up)
		return -EBUSY;
	return 0;
}

// Take cpu offline: it migrates its tasks away, reports to RCU and parks itself.
int cpu_down(int cpu)
{
	int err = check_cpu(cpu, 0);

	if (err)
		return err;
	mutex_lock(&cpu_add_remove_lock);
	if (cpu_online(cpu)) {
		WRITE_ONCE(cpu_of(cpu)->dying, 1);
		resched_cpu(cpu);
		for (int ms = 0; cpu_online(cpu); ms++) {
			if (ms > HOTPLUG_WAIT_MS)
				panic("cpu_down: CPU%d did not go offline", cpu);
			msleep(1);
		}
	}
	mutex_unlock(&cpu_add_remove_lock);
	return 0;
}

// Bring cpu (back) online with INIT + STARTUP; wait until start_secondary is done.
int cpu_up(int cpu)
{
	int err = check_cpu(cpu, 1);

	if (err)
		return err;
	mutex_lock(&cpu_add_remove_lock);
	if (!cpu_online(cpu)) {
		cpu_prepare(cpu);
		boot_params_set_ap((u64)secondary_startup_64,
				   (u64)idle_stacks[cpu] + KSTACK_SIZE, V2P(kernel_pml4));
		lapic_startup_cpu(cpu);
		for (int ms = 0; !cpu_online(cpu); ms++) {
			if (ms > HOTPLUG_WAIT_MS) {
				err = -EIO;
				break;
			}
			msleep(1);
		}
	}
	mutex_unlock(&cpu_add_remove_lock);
	return err;
}

// Late teardown of a dying CPU, RCU no longer watching it.
noinline void cpu_teardown_late(int cpu)
{
	struct cpu *c = cpu_of(cpu);

	c->softirq_pending = 0;
	c->lapic_ready = 0;
}

// The idle task of a dying CPU: nothing else runs here any more.
void __noreturn cpu_die(void)
{
	int cpu = smp_processor_id();

	local_irq_disable();
	lapic_timer_stop();
	flush_smp_call_function_queue();
	rcu_report_dead(cpu);
	cpu_teardown_late(cpu);
	kstat_inc(KSTAT_CPU_OFFLINE);
	set_cpu_online(cpu, 0);
	play_dead();
}

// Queue a request for hotplugd. Takes no lock, so it is safe anywhere, irqs off.
int hotplug_request(int cpu, int up)
{
	int err = check_cpu(cpu, up);

	if (err)
		return err;
	if (__atomic_exchange_n(&hp_want[cpu], up ? 1 : 2, __ATOMIC_SEQ_CST) == 0)
		__atomic_fetch_add(&hotplug_pending, 1, __ATOMIC_SEQ_CST);
	hotplug_kick = 1;
	return 0;
}

// CPU 0's tick: wake hotplugd for new requests.
void hotplug_poll(void)
{
	if (READ_ONCE(hotplug_kick) && hotplug_task) {
		hotplug_kick = 0;
		wake_up_process(hotplug_task);
	}
}

static int requests_queued(void)
{
	for (int cpu = 0; cpu < NCPU; cpu++)
		if (READ_ONCE(hp_want[cpu]))
			return 1;
	return 0;
}

// Returns the number of requests served.
static int serve_requests(void)
{
	int served = 0;

	for (int cpu = 0; cpu < NCPU; cpu++) {
		int want = __atomic_exchange_n(&hp_want[cpu], 0, __ATOMIC_SEQ_CST);
		if (!want)
			continue;
		if (want == 1)
			cpu_up(cpu);
		else
			cpu_down(cpu);
		__atomic_fetch_sub(&hotplug_pending, 1, __ATOMIC_SEQ_CST);
		served++;
	}
	return served;
}

// hotplugd: serve requests; every hotplug_cycle= ms (default 50, 0 = never) take
// the highest CPU down and up again. A request postpones the next cycle, so what
// the requester asked for holds for at least a cycle.
int hotplug_thread(void *arg)
{
	long cycle = cmdline_get_int("hotplug_cycle", 50);
	u64 next = jiffies + cycle;

	hotplug_task = current;
	for (;;) {
		if (serve_requests())
			next = jiffies + cycle;
		if (cycle > 0 && nr_cpus_present > 1 && jiffies >= next) {
			int cpu = nr_cpus_present - 1;
			if (cpu_online(cpu)) {
				cpu_down(cpu);
				cpu_up(cpu);
			}
			next = jiffies + cycle;
		}
		current->state = TASK_INTERRUPTIBLE;
		if (READ_ONCE(hotplug_kick) || requests_queued()) {
			hotplug_kick = 0;
			current->state = TASK_RUNNING;
			continue;
		}
		long timeout = 1000;
		if (cycle > 0 && nr_cpus_present > 1)
			timeout = (long)(next - jiffies);
		schedule_timeout(timeout > 0 ? timeout : 1, TASK_INTERRUPTIBLE);
	}
	return 0;
}
