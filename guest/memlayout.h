// Machine memory map and hardware contract: the one source of truth shared by
// the guest kernel (C, assembly) and the host (emu/memlayout.py parses the
// "#define NAME value" lines below). Keep every value a plain number.
#ifndef MEMLAYOUT_H
#define MEMLAYOUT_H

// ---- physical memory -------------------------------------------------------
#define BOOT_PARAMS_PA      0x6000      // struct boot_params, written by the loader
#define BOOT_GDT_PA         0x7000      // loader's temporary GDT
#define BOOT_PML4_PA        0x8000      // loader's temporary page tables (4 pages)
#define EXECMEM_PA          0x800000    // 2 MiB the kernel maps RWX at EXECMEM_VA and never allocates
#define EXECMEM_SIZE        0x200000
#define EXECMEM_CODE_SIZE   0x80000     // its first 512 KiB are executable; the rest is NX data
#define MODULES_PA          0xa00000    // 4 MiB the kernel maps at MODULES_VA for loadable modules:
#define MODULES_SIZE        0x400000
#define MODULES_CODE_SIZE   0x200000    // the first 2 MiB executable (module text), the rest NX
#define KERNEL_PA           0x1000000   // kernel image load address (16 MiB)
#define LAPIC_PA            0xfee00000  // local APIC registers (one 4 KiB page per CPU, same address)

// ---- virtual memory --------------------------------------------------------
#define KERNEL_VA           0xffffffff81000000  // kernel image (linked here)
#define KERNEL_VA_OFFSET    0xffffffff80000000  // KERNEL_VA - KERNEL_PA
#define DIRECT_MAP_VA       0xffff888000000000  // all RAM: va = DIRECT_MAP_VA + pa
#define EXECMEM_VA          0xffffffffa0000000  // execmem area (trampolines) -> EXECMEM_PA
#define MODULES_VA          0xffffffffa0200000  // loadable modules (emu/module.py) -> MODULES_PA
#define LAPIC_VA            0xffffffffff5fd000  // fixmap of LAPIC_PA (uncached)
#define USER_CODE_VA        0x400000            // user programs are linked here
#define USER_STACK_TOP      0x800000            // top of each user task's stack
#define USER_STACK_PAGES    4

// ---- boot protocol ---------------------------------------------------------
// The loader enters the kernel ELF entry point in 64-bit mode, CPL0, paging on
// (identity map of the first 1 GiB + KERNEL_VA_OFFSET -> 0), interrupts off,
// RDI = BOOT_PARAMS_PA. Application processors are started by an INIT then a
// STARTUP IPI: the CPU begins at boot_params.ap_entry with RSP = ap_stack,
// CR3 = ap_cr3, RDI = its APIC id, on the loader's GDT.
#define BOOT_MAGIC          0x46544d55          // "FTMU"
#define BP_MAGIC            0x00    // u32
#define BP_NCPUS            0x04    // u32: CPUs present (1..NCPU)
#define BP_MEM_BYTES        0x08    // u64: RAM size
#define BP_AP_ENTRY         0x10    // u64: written by the kernel before STARTUP
#define BP_AP_STACK         0x18    // u64
#define BP_AP_CR3           0x20    // u64
#define BP_CMDLINE          0x100   // char[BP_CMDLINE_MAX], NUL-terminated
#define BP_CMDLINE_MAX      256
#define NCPU                8
#define NTASK               64          // task slots, not counting idle tasks

// ---- segments (Linux's GDT layout) -----------------------------------------
#define KERNEL_CS           0x10
#define KERNEL_DS           0x18
#define USER32_CS           0x23
#define USER_DS             0x2b
#define USER_CS             0x33
#define TSS_SEL             0x40

// ---- stacks ----------------------------------------------------------------
#define KSTACK_SIZE         0x4000      // per task kernel stack
#define IST_STACK_SIZE      0x2000      // per CPU, per IST slot
#define IST_DF              1           // IST slot for #DF
#define IST_NMI             2           // IST slot for NMI (the host treats RSP in it as "in NMI")

// ---- I/O ports -------------------------------------------------------------
#define COM1_PORT           0x3f8       // 16550 UART
#define EXIT_PORT           0xf4        // outl(code): power off with exit code (isa-debug-exit style)
#define EXIT_PANIC          0xdead      // exit code the kernel uses after panic()
#define KMSG_PORT           0xe8        // out: one printk record, rdi = text, rsi = length, rdx = level
#define KLP_PORT            0xe9        // out: livepatch request (guest/livepatch.c), rdi = request
#define FTRACE_RECURSION_PORT 0xe1      // out: ftrace refused a recursion, [rsp] = ip, [rsp+8] = parent_ip
#define SYSFS_PORT          0xea        // out: kobject/sysfs request (guest/kobject.c), rdi = request

// ---- local APIC (xAPIC register offsets) ------------------------------------
#define APIC_ID             0x20        // bits 24..31: APIC id (= CPU number)
#define APIC_EOI            0xb0
#define APIC_SVR            0xf0
#define APIC_ICR_LO         0x300       // write triggers the IPI
#define APIC_ICR_HI         0x310       // bits 24..31: destination APIC id
#define APIC_LVT_TIMER      0x320       // vector | masked(1<<16) | periodic(1<<17)
#define APIC_TIMER_INIT     0x380       // count in ns of virtual time; 0 stops
#define APIC_TIMER_CUR      0x390
#define APIC_TIMER_DIV      0x3e0       // accepted, ignored (the timer counts ns)
#define APIC_DM_FIXED       0x000
#define APIC_DM_NMI         0x400
#define APIC_DM_INIT        0x500
#define APIC_DM_STARTUP     0x600
#define APIC_DEST_SELF      0x40000
#define APIC_DEST_ALL       0x80000
#define APIC_DEST_OTHERS    0xc0000
#define APIC_LVT_MASKED     0x10000
#define APIC_TIMER_PERIODIC 0x20000

// ---- time ------------------------------------------------------------------
// Virtual time counts retired instructions: NS_PER_INSN ns each. rdtsc returns
// the CPU's virtual time in ns (a 1 GHz TSC).
#define NS_PER_INSN         10
#define HZ                  1000

// ---- interrupt vectors ------------------------------------------------------
#define T_DE                0
#define T_NMI               2
#define T_BP                3
#define T_UD                6
#define T_DF                8
#define T_GP                13
#define T_PF                14
#define LOCAL_TIMER_VECTOR  0xec
#define CALL_FUNCTION_VECTOR 0xfc
#define RESCHEDULE_VECTOR   0xfd
#define SPURIOUS_VECTOR     0xff

// ---- kernel statistics (u64 kstat[NCPU][KSTAT_NR], symbol "kstat") ---------
#define KSTAT_TIMER_IRQS    0
#define KSTAT_SOFTIRQS      1
#define KSTAT_NMIS          2
#define KSTAT_SYSCALLS      3
#define KSTAT_CTX_SWITCHES  4
#define KSTAT_IDLE_ENTRIES  5
#define KSTAT_CPU_OFFLINE   6
#define KSTAT_CPU_ONLINE    7
#define KSTAT_PAGE_FAULTS   8
#define KSTAT_IPIS          9
#define KSTAT_NR            10

// ---- system calls (Linux numbers where Linux has one) -----------------------
#define SYS_write           1
#define SYS_sched_yield     24
#define SYS_nanosleep       35          // arg0: milliseconds
#define SYS_getpid          39
#define SYS_exit            60
#define SYS_cmdline         400         // (buf, len): copy the kernel command line, via cmdline_proc_show
#define SYS_cpu_down        401         // (cpu)
#define SYS_cpu_up          402         // (cpu)
#define SYS_sem_up          403         // (sem id)
#define SYS_sem_down        404         // (sem id): sleep until the semaphore is > 0
#define SYS_spawn           405         // (name): start the embedded user program "name"; returns its pid


// ---- per-CPU area (GS base points at it in kernel mode) --------------------
#define PCPU_SELF           0x00    // u64: address of this area
#define PCPU_CPU            0x08    // u32: CPU number (= APIC id)
#define PCPU_PREEMPT_COUNT  0x0c    // u32: Linux's layout, masks below
#define PCPU_CURRENT        0x10    // struct task *: the running task
#define PCPU_RCU_WATCHING   0x18    // u32: 1 while RCU watches this CPU, else 0
#define PCPU_USER_RSP       0x20    // u64: scratch for the syscall entry
#define PCPU_KSTACK_TOP     0x28    // u64: kernel stack top of the running task
// The host's per-vCPU clock (the guest kernel never touches it; host-generated tracer code
// reads it): u64 instructions retired in the current slice before the running translation
// block, then u64 the slice's start in virtual ns, or PVCLOCK_INVALID when the time is not
// kept this way (rdtsc then). rdtsc = start + (retired + position in block) * NS_PER_INSN.
#define PCPU_PVCLOCK        0xf00
#define PVCLOCK_INVALID     0x4000000000000000
#define PCPU_SIZE           0x1000  // one page per CPU, symbol "percpu" (u8 percpu[NCPU][PCPU_SIZE])

#define PREEMPT_MASK        0x000000ff
#define SOFTIRQ_OFFSET      0x00000100
#define SOFTIRQ_MASK        0x0000ff00
#define HARDIRQ_OFFSET      0x00010000
#define HARDIRQ_MASK        0x000f0000
#define NMI_OFFSET          0x00100000
#define NMI_MASK            0x00f00000

// ---- struct task: the fields the host reads --------------------------------
#define TASK_PID            0x00    // int
#define TASK_STATE          0x04    // int
#define TASK_TRACE_RECURSION 0x08   // u64: ftrace recursion bits (Linux's trace_recursion)
#define TASK_COMM           0x10    // char[16]
#define TASK_FLAGS          0x20    // u64: bit TIF_NEED_RESCHED
#define TASK_KSTACK         0x28    // u64: base of the task's kernel stack (KSTACK_SIZE bytes)
#define TASK_THREAD_SP      0x30    // u64: saved rsp while switched out (switch_to's frame)
#define TASK_ON_CPU         0x40    // int: on a CPU, from being picked until switched out
#define TASK_ON_RQ          0x44    // int: runnable and waiting for a CPU (not blocked)
#define TASK_CPU            0x48    // int: the CPU it runs or last ran on
#define TASK_TICKS          0x4c    // int: ticks in this slice; __schedule zeroes it on switch-in
#define TASK_USED           0x50    // int: the slot holds a live task
#define TASK_PATCH_STATE    0x68    // int: livepatch's per-task state, KLP_TRANSITION_* below
// Every task lives in "tasks" (switched-out ones hold a valid TASK_THREAD_SP) or
// "idle_tasks" (one per CPU); both are arrays of struct task.
#define TIF_NEED_RESCHED    3
#define TIF_PATCH_PENDING   13      // livepatch: switch patch_state at the next safe point
#define KLP_TRANSITION_IDLE       -1
#define KLP_TRANSITION_UNPATCHED  0
#define KLP_TRANSITION_PATCHED    1

// ---- struct irqaction (guest/tracepoint.h): what irq_handler_entry records ---------------
#define IRQACTION_NAME      0x00    // const char *
#define TIMER_IRQ           0       // the local APIC timer's irq number (Linux's PIT "timer")
#define IRQ_HANDLED         1

// ---- livepatch structures (guest/include/linux/livepatch.h; the host reads them) -----------
#define KLP_FUNC_OLD_NAME   0x00    // const char *
#define KLP_FUNC_NEW_FUNC   0x08    // void *
#define KLP_FUNC_OLD_SYMPOS 0x10    // unsigned long
#define KLP_FUNC_OLD_FUNC   0x18    // void *: resolved by the host
#define KLP_FUNC_STACK_NEXT 0x20    // struct klp_func *: the next older func on its func stack
#define KLP_FUNC_OLD_SIZE   0x28
#define KLP_FUNC_NEW_SIZE   0x30
#define KLP_FUNC_NOP        0x38    // bool
#define KLP_FUNC_PATCHED    0x39    // bool
#define KLP_FUNC_TRANSITION 0x3a    // bool
#define KLP_FUNC_SIZE       0x40
#define KLP_OBJ_NAME        0x00    // const char *: NULL is vmlinux
#define KLP_OBJ_FUNCS       0x08    // struct klp_func *, ends with a func without old_name
#define KLP_OBJ_CALLBACKS   0x10    // pre_patch, post_patch, pre_unpatch, post_unpatch, post_unpatch_enabled
#define KLP_OBJ_MOD         0x38    // struct module *: set while the object's module is loaded
#define KLP_OBJ_DYNAMIC     0x40    // bool
#define KLP_OBJ_PATCHED     0x41    // bool
#define KLP_OBJ_SIZE        0x48
#define KLP_STATE_ID        0x00    // unsigned long
#define KLP_STATE_VERSION   0x08    // unsigned int
#define KLP_STATE_DATA      0x10    // void *
#define KLP_STATE_SIZE      0x18
#define KLP_PATCH_MOD       0x00    // struct module *
#define KLP_PATCH_OBJS      0x08    // struct klp_object *, ends with an object without funcs
#define KLP_PATCH_STATES    0x10    // struct klp_state *, ends with id 0
#define KLP_PATCH_REPLACE   0x18    // bool
#define KLP_PATCH_ENABLED   0x19    // bool
#define KLP_PATCH_FORCED    0x1a    // bool
#define KLP_PATCH_SIZE      0x20

// ---- what loadable modules see of the kernel's structures ---------------------
// guest/include/linux/*.h declares them with the kernel's field names; both sides check
// MODULE_ABI: guest/include/abi_check.c the module headers, guest/module.c the kernel.
#define MOD_NAME            0x00    // struct module: char name[MODULE_NAME_LEN]
#define MOD_STATE           0x38    // enum module_state
#define MOD_REFCNT          0x3c    // int
#define MOD_SIZE            0x40
#define WORK_FUNC           0x08    // struct work_struct: work_func_t func
#define WORK_SIZE           0x18
#define TIMER_FUNCTION      0x08    // struct timer_list: void (*function)(struct timer_list *)
#define TIMER_SIZE          0x28
#define DWORK_TIMER         0x18    // struct delayed_work: struct timer_list timer
#define DWORK_SIZE          0x40
#define SEQ_FILE_COUNT      0x10    // struct seq_file: size_t count
#define SEQ_FILE_SIZE       0x18
#define MUTEX_COUNT         0x10    // struct mutex: its semaphore's count (1 while free)
#define MUTEX_SIZE          0x38
#define COMPLETION_WAITERS  0x18    // struct completion: done, a spin lock, the waiters
#define COMPLETION_SIZE     0x20
#define KOBJ_NAME           0x00    // struct kobject: const char *name
#define KOBJ_PARENT         0x08    // struct kobject *parent (NULL: a directory of /sys)
#define KOBJ_SIZE           0x18
#define ATTR_NAME           0x00    // struct attribute: const char *name
#define ATTR_MODE           0x08    // umode_t mode
#define ATTR_SIZE           0x10
#define KOBJ_ATTR_SHOW      0x10    // struct kobj_attribute: show, then store
#define KOBJ_ATTR_SIZE      0x20
#define SYSFS_REQ_OP        0x00    // struct sysfs_request (guest/kobject.c): SYSFS_* below
#define SYSFS_REQ_KOBJ      0x08    // struct kobject *
#define SYSFS_REQ_ATTR      0x10    // const struct attribute *
#define SYSFS_REQ_RET       0x18    // long: 0 or -errno, written by the host
#define SYSFS_ADD_DIR       1       // kobject_add: the kobject's directory
#define SYSFS_REMOVE_DIR    2       // kobject_del: the directory and its files
#define SYSFS_ADD_FILE      3       // sysfs_create_file
#define SYSFS_REMOVE_FILE   4       // sysfs_remove_file
#define MODULE_ABI(CHECK)							\
	CHECK(struct work_struct, func, WORK_FUNC, WORK_SIZE)				\
	CHECK(struct timer_list, function, TIMER_FUNCTION, TIMER_SIZE)			\
	CHECK(struct delayed_work, timer, DWORK_TIMER, DWORK_SIZE)			\
	CHECK(struct seq_file, count, SEQ_FILE_COUNT, SEQ_FILE_SIZE)			\
	CHECK(struct mutex, sem.count, MUTEX_COUNT, MUTEX_SIZE)				\
	CHECK(struct completion, waiters, COMPLETION_WAITERS, COMPLETION_SIZE)		\
	CHECK(struct kobject, parent, KOBJ_PARENT, KOBJ_SIZE)				\
	CHECK(struct attribute, mode, ATTR_MODE, ATTR_SIZE)				\
	CHECK(struct kobj_attribute, show, KOBJ_ATTR_SHOW, KOBJ_ATTR_SIZE)
#define MODULE_ABI_CHECK(type, field, off, size)					\
	_Static_assert(__builtin_offsetof(type, field) == (off), #type "." #field);	\
	_Static_assert(sizeof(type) == (size), "sizeof " #type);
#define KLP_MAX_PATCHES     16      // klp_patches[]: the registered patches, oldest first

#endif
