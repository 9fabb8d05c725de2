// Every cross-file prototype of the kernel, grouped by the file that defines it.
#ifndef DEFS_H
#define DEFS_H
#include "types.h"
#include "memlayout.h"
#include "spinlock.h"

struct cpu;
struct task;
struct pt_regs;
struct spinlock;
struct timer_list;
struct semaphore;
struct seq_file;

// entry.S
void entry_SYSCALL_64(void);
void secondary_startup_64(void);
void ret_from_fork(void);
void __noreturn ret_to_user_regs(struct pt_regs *regs);
void arch_safe_halt(void);
void __noreturn play_dead(void);

// switch.S
struct task *switch_to(struct task *prev, struct task *next);

// bench.c
int bench_fib(int n);
void bench_init(void);

// main.c
extern char saved_command_line[BP_CMDLINE_MAX];
extern int nr_cpus_present;
extern u64 mem_bytes;
int cmdline_get_int(const char *name, int dflt);
void boot_params_set_ap(u64 entry, u64 stack, u64 cr3);

// percpu.c
extern u64 kstat[NCPU][KSTAT_NR];
extern volatile u64 cpu_online_mask;
void percpu_early_init(int cpu, int bsp);
void kstat_inc(int i);
int cpu_online(int cpu);
void set_cpu_online(int cpu, int online);
int num_online_cpus(void);

// uart.c
void uart_init(void);
void uart_putc(int c);

// printk.c
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
int sprintf(char *buf, const char *fmt, ...) __printf(2, 3);
int printk(const char *fmt, ...) __printf(1, 2);
int vprintk(const char *fmt, va_list ap);
extern int console_loglevel;
#define KERN_SOH_ASCII  '\001'
#define LOGLEVEL_CONT   -2                      // KERN_CONT: continues the previous line
#define MESSAGE_LOGLEVEL_DEFAULT 4              // printk without a level (KERN_WARNING)
#define CONSOLE_LOGLEVEL_DEFAULT 7              // the console shows levels 0..6
void console_write(const char *s, size_t n);

// string.c
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
size_t strlcpy(char *dst, const char *src, size_t size);

// panic.c
extern volatile int panicking;
void __noreturn panic(const char *fmt, ...) __printf(1, 2);
void dump_stack(void);
void __noreturn poweroff(u32 code);

// kalloc.c
void kalloc_init(u64 start_pa, u64 end_pa);
void *kalloc(void);
void free_page(void *va);
u64 nr_free_pages(void);

// slab.c (the kernel's gfp values)
#define GFP_KERNEL      0xcc0u
#define GFP_ATOMIC      0xa20u
#define GFP_NOWAIT      0x800u
void *kmalloc(size_t size, gfp_t flags);
void *kzalloc(size_t size, gfp_t flags);
void kfree(const void *va);

// livepatch.c
void klp_update_patch_state(struct task *task);
void klp_copy_process(struct task *child);

// vm.c
extern u64 *kernel_pml4;
void kvm_init(void);
u64 *pml4_alloc(void);
int uvm_map(u64 *pml4, u64 va, u64 size, const void *src, u64 srclen, int nx);
void pml4_free(u64 *pml4);
int access_ok(const void *uaddr, u64 len);
int copy_from_user(void *dst, const void *usrc, u64 len);
int copy_to_user(void *udst, const void *src, u64 len);

// seg.c
void cpu_prepare(int cpu);
void cpu_init(int cpu);
void syscall_init(void);

// trap.c
void idt_init(void);
void idt_load(void);
void do_divide_error(struct pt_regs *regs, long error_code);
void do_int3(struct pt_regs *regs, long error_code);
void do_invalid_op(struct pt_regs *regs, long error_code);
void do_general_protection(struct pt_regs *regs, long error_code);
void do_page_fault(struct pt_regs *regs, long error_code);
void do_double_fault(struct pt_regs *regs, long error_code);
void do_unknown_exception(struct pt_regs *regs, long vector);

// lapic.c
void lapic_init(void);
void lapic_timer_stop(void);
void lapic_eoi(void);
void lapic_send_ipi(int cpu, u32 icr);
void lapic_send_ipi_others(u32 icr);
void lapic_startup_cpu(int cpu);

// irq.c
void irq_enter(void);
void irq_exit(void);
void sysvec_apic_timer_interrupt(struct pt_regs *regs);
void sysvec_reschedule_ipi(struct pt_regs *regs);
void sysvec_call_function(struct pt_regs *regs);
void sysvec_spurious(struct pt_regs *regs);
void timer_interrupt(struct pt_regs *regs);

// softirq.c
#define TIMER_SOFTIRQ   1
#define SCHED_SOFTIRQ   7
#define RCU_SOFTIRQ     9
#define NR_SOFTIRQS     10
void raise_softirq_irqoff(int nr);
void __do_softirq(void);

// timer.c
struct timer_list {
	u64 expires;                    // jiffies; timer_lock
	void (*function)(struct timer_list *);
	struct timer_list *next;        // timer_lock: sorted pending list
	int pending;                    // timer_lock
	struct task *task;              // for process_timeout
};
extern volatile u64 jiffies;
void init_timer(struct timer_list *t, void (*fn)(struct timer_list *));
void add_timer(struct timer_list *t);
int del_timer(struct timer_list *t);
int del_timer_sync(struct timer_list *t);
void timer_tick_check(void);
void run_timer_softirq(void);
long schedule_timeout(long jiffies_left, int state);
void msleep(unsigned int ms);

// workqueue.c (layouts shared with include/linux/workqueue.h)
struct work_struct {
	struct work_struct *next;       // wq_lock: queue link
	void (*func)(struct work_struct *);
	volatile int pending;           // queued, not yet started
};
struct delayed_work {
	struct work_struct work;
	struct timer_list timer;
};
void workqueue_init(void);
bool schedule_work(struct work_struct *w);
bool schedule_delayed_work(struct delayed_work *dw, unsigned long delay);
bool flush_work(struct work_struct *w);
bool cancel_work_sync(struct work_struct *w);
bool cancel_delayed_work_sync(struct delayed_work *dw);
bool flush_delayed_work(struct delayed_work *dw);

// completion.c (layout shared with include/linux/completion.h)
struct completion_waiter;
struct completion {
	unsigned int done;              // lock; 0xffffffff after complete_all
	struct spinlock lock;
	struct completion_waiter *waiters;      // lock: FIFO of sleeping tasks
};
void complete(struct completion *x);
void complete_all(struct completion *x);
void wait_for_completion(struct completion *x);
bool try_wait_for_completion(struct completion *x);
bool completion_done(struct completion *x);

// sched.c
void sched_init(void);
void schedule(void);
void schedule_idle(void);
void preempt_schedule_irq(void);
void schedule_tail(struct task *prev);
int try_to_wake_up(struct task *p, int state);
int wake_up_process(struct task *p);
void scheduler_tick(void);
void run_rebalance_domains(void);
void resched_cpu(int cpu);
void sched_yield(void);
u64 nr_context_switches(void);

// task.c
extern u8 idle_stacks[NCPU][KSTACK_SIZE];
void idle_task_init(int cpu);
struct task *kthread_create(int (*fn)(void *), void *arg, const char *name);
struct task *kernel_thread(int (*fn)(void *), void *arg, const char *name);
int user_spawn(const char *name);
void __noreturn user_exec(const char *name);
void __noreturn do_exit(int code);
void task_free(struct task *t);

// programs.S / uprog.c
const u8 *uprog_find(const char *name, u64 *size);

// idle.c
void __noreturn cpu_startup_entry(void);
void do_idle(void);
void default_idle(void);

// sem.c
struct sem_waiter;
struct semaphore {
	struct spinlock lock;
	int count;                      // lock
	struct sem_waiter *head, *tail; // lock: FIFO of sleeping tasks
};
void sema_init(struct semaphore *s, int count);
void down(struct semaphore *s);
int down_trylock(struct semaphore *s);
void up(struct semaphore *s);
int sys_sem_op(int id, int up);

// mutex.c
struct mutex {
	struct semaphore sem;   // binary: 1 while free
	struct task *owner;     // holder, for debugging
	const char *name;
};
void mutex_init(struct mutex *m, const char *name);
void mutex_lock(struct mutex *m);
int mutex_trylock(struct mutex *m);
void mutex_unlock(struct mutex *m);
void console_lock_init(void);
void console_lock(void);
void console_unlock(void);
u64 sched_clock(void);
u64 local_clock(void);
void debug_check_no_locks_held(void);
void user_sems_init(void);

// context_tracking.c
void ct_user_enter(void);
void ct_user_exit(void);
void ct_irq_enter(void);
void ct_irq_exit(void);
void ct_nmi_enter(void);
void ct_nmi_exit(void);
int rcu_is_watching(void);
void rcu_idle_enter(void);
void rcu_idle_exit(void);
void rcu_cpu_starting(int cpu);
void rcu_report_dead(int cpu);

// rcu.c
void rcu_read_lock(void);
void rcu_read_unlock(void);
void rcu_note_context_switch(void);
void synchronize_rcu(void);
void rcu_sched_clock_irq(void);
void rcu_core(void);
int rcu_demo_thread(void *arg);

// nmi.c
void exc_nmi(struct pt_regs *regs);
void nmi_enter(void);
void nmi_exit(void);
void default_do_nmi(struct pt_regs *regs);
int watchdog_thread(void *arg);

// smp.c
void smp_init(void);
void __noreturn start_secondary(int cpu);
void cpu_bringup_early(int cpu);
int smp_call_function(void (*fn)(void *), void *arg, int wait);
void generic_smp_call_function_interrupt(void);
void smp_reschedule_interrupt(void);
void flush_smp_call_function_queue(void);
void secondary_percpu_early(int cpu);

// requester.c
void requester_poll(void);

// hotplug.c
extern volatile int hotplug_pending;
void hotplug_init(void);
int cpu_down(int cpu);
int cpu_up(int cpu);
int hotplug_request(int cpu, int up);
void hotplug_poll(void);
int hotplug_thread(void *arg);
void __noreturn cpu_die(void);
void cpu_teardown_late(int cpu);

// syscall.c
long do_syscall_64(struct pt_regs *regs, unsigned long nr);
void exit_to_user_mode_prepare(struct pt_regs *regs);

// seq_file.c
struct seq_file {
	char *buf;
	size_t size;
	size_t count;
};
int seq_printf(struct seq_file *m, const char *fmt, ...) __printf(2, 3);
int seq_puts(struct seq_file *m, const char *s);

// kobject.c: kobjects and their sysfs files (the module headers' layout, MODULE_ABI)
struct kobject {
	const char *name;
	struct kobject *parent;
	int refcount;
	int state_in_sysfs;
};
struct attribute {
	const char *name;
	u16 mode;
};
struct kobj_attribute {
	struct attribute attr;
	long (*show)(struct kobject *kobj, struct kobj_attribute *attr, char *buf);
	long (*store)(struct kobject *kobj, struct kobj_attribute *attr, const char *buf, size_t count);
};
extern struct kobject *kernel_kobj;
struct kobject *kobject_create_and_add(const char *name, struct kobject *parent);
struct kobject *kobject_get(struct kobject *kobj);
void kobject_put(struct kobject *kobj);
int sysfs_create_file(struct kobject *kobj, const struct attribute *attr);
void sysfs_remove_file(struct kobject *kobj, const struct attribute *attr);

// proc_cmdline.c
int cmdline_proc_show(struct seq_file *m, void *v);
int meminfo_proc_show(struct seq_file *m, void *v);

// module.c
struct module_call;
int module_call_thread(void *arg);

// tracepoint.c: the probe pointers of trace_<event>() (tracepoint.h)

// trace_selftest_dynamic.c
int trace_selftest_dynamic_test_func(void);
int trace_selftest_dynamic_test_func2(void);

// tests.c
void run_kernel_tests(void);

// crashme.c
int crash_divide(int a, int b);
u64 crash_fault_in_callee(u64 addr);
void crash_invalid_op(void);
void crash_triple_fault(void);

// spinlock.c
void spin_lock(struct spinlock *lk);
void spin_unlock(struct spinlock *lk);
u64 spin_lock_irqsave(struct spinlock *lk);
void spin_unlock_irqrestore(struct spinlock *lk, u64 flags);
int spin_is_locked(struct spinlock *lk);

#endif
