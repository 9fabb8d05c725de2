// Boot: main() on the boot CPU tells the story; kernel_init (pid 1) finishes it.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "task.h"

char saved_command_line[BP_CMDLINE_MAX];
int nr_cpus_present;
u64 mem_bytes;
static u8 *boot_params;         // identity mapped at first, then through the direct map
extern char _end[];

#define BP_U32(off) (*(volatile u32 *)(boot_params + (off)))
#define BP_U64(off) (*(volatile u64 *)(boot_params + (off)))

// Copy what the loader left at BOOT_PARAMS_PA (still identity mapped).
static void boot_params_init(u64 pa)
{
	boot_params = (u8 *)pa;
	if (BP_U32(BP_MAGIC) != BOOT_MAGIC)
		poweroff(EXIT_PANIC);   // no console yet: nothing better to do
	nr_cpus_present = BP_U32(BP_NCPUS);
	if (nr_cpus_present < 1 || nr_cpus_present > NCPU)
		nr_cpus_present = 1;
	mem_bytes = BP_U64(BP_MEM_BYTES);
	strlcpy(saved_command_line, (char *)boot_params + BP_CMDLINE, BP_CMDLINE_MAX);
}

// Where the next secondary CPU starts (read by the machine on STARTUP).
void boot_params_set_ap(u64 entry, u64 stack, u64 cr3)
{
	BP_U64(BP_AP_ENTRY) = entry;
	BP_U64(BP_AP_STACK) = stack;
	BP_U64(BP_AP_CR3) = cr3;
}

// Value of "name=<int>" on the command line, or dflt.
int cmdline_get_int(const char *name, int dflt)
{
	size_t n = strlen(name);

	for (const char *p = saved_command_line; *p; p++) {
		if ((p == saved_command_line || p[-1] == ' ') && strncmp(p, name, n) == 0 && p[n] == '=') {
			int v = 0, neg = 0;
			p += n + 1;
			if (*p == '-')
				neg = 1, p++;
			while (*p >= '0' && *p <= '9')
				v = v * 10 + (*p++ - '0');
			return neg ? -v : v;
		}
	}
	return dflt;
}

// pid 1: start the other CPUs, test the kernel, start the daemons, become init.
static int kernel_init(void *arg)
{
	smp_init();                                     // secondary CPUs
	run_kernel_tests();                             // ALL TESTS PASSED
	kernel_thread(hotplug_thread, NULL, "hotplugd"); // CPU down/up cycling, requests
	kernel_thread(rcu_demo_thread, NULL, "rcu_sync"); // synchronize_rcu now and then
	kernel_thread(watchdog_thread, NULL, "watchdog"); // NMI IPIs
	bench_init();                                   // busy threads if bench=N
	printk("Run init as init process\n");
	user_exec("init");                              // ring 3 from here on
}

// The boot CPU, from _start: GS points at percpu[0], current is swapper/0.
void __noreturn main(u64 boot_params_pa)
{
	cpu_prepare(0);                         // GDT and TSS first: NMIs may come
	cpu_init(0);
	idt_init();                             // interrupt descriptor table, filled
	idt_load();                             // before it is loaded: an NMI may come
	boot_params_init(boot_params_pa);       // cpus, memory, command line
	uart_init();                            // console
	console_lock_init();                    // the console's sleeping lock (write(2))
	printk("ftemu kernel: x86-64, %d CPUs, %lu MiB\n", nr_cpus_present, mem_bytes >> 20);
	printk("Command line: %s\n", saved_command_line);
	kvm_init();                             // kernel page tables
	idle_task_init(0);                      // swapper/0 is this boot thread
	boot_params = P2V(BOOT_PARAMS_PA);
	kalloc_init(0x100000, EXECMEM_PA);      // page allocator: free RAM, never EXECMEM
	kalloc_init(EXECMEM_PA + EXECMEM_SIZE, MODULES_PA); // nor the module area
	kalloc_init(MODULES_PA + MODULES_SIZE, KERNEL_PA);
	kalloc_init(V2P(_end), mem_bytes);
	printk("Memory: %luK available\n", nr_free_pages() * 4);
	syscall_init();                         // syscall MSRs
	sched_init();                           // runqueue
	user_sems_init();                       // semaphores for user tasks
	hotplug_init();                         // hotplug lock
	workqueue_init();                       // the system workqueue (kworkers start on use)
	lapic_init();                           // local APIC timer at HZ
	set_cpu_online(0, 1);
	kstat_inc(KSTAT_CPU_ONLINE);
	kernel_thread(kernel_init, NULL, "kernel_init"); // pid 1
	cpu_startup_entry();                    // this CPU's idle loop
}
