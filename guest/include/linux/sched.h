/* Scheduling: sleeping and yielding (guest/sched.c, guest/timer.c). */
#ifndef _LINUX_SCHED_H
#define _LINUX_SCHED_H
#include <linux/compiler.h>
#include <linux/types.h>

#define TASK_RUNNING		0x0000
#define TASK_INTERRUPTIBLE	0x0001
#define TASK_UNINTERRUPTIBLE	0x0002

#define MAX_SCHEDULE_TIMEOUT	((long)(~0UL >> 1))

/* The start of the guest's struct task (memlayout.h TASK_*, checked by abi_check.c): what
 * modules read of a task. The guest has no thread groups, so a task's tgid is its pid. */
#define TASK_COMM_LEN 16
struct task_struct {
	pid_t pid;
	volatile unsigned int __state;
	u64 __trace_recursion;
	char comm[TASK_COMM_LEN];
};

#define __PCPU_CURRENT 0x10     /* memlayout.h PCPU_CURRENT: this CPU's running task */
static __always_inline struct task_struct *get_current(void)
{
	struct task_struct *t;

	__asm__ volatile("movq %%gs:%c1, %0" : "=r"(t) : "i"(__PCPU_CURRENT));
	return t;
}
#define current get_current()

static inline pid_t task_pid_nr(struct task_struct *tsk) { return tsk->pid; }
static inline pid_t task_tgid_nr(struct task_struct *tsk) { return tsk->pid; }
static inline pid_t task_pid_vnr(struct task_struct *tsk) { return tsk->pid; }
static inline pid_t task_tgid_vnr(struct task_struct *tsk) { return tsk->pid; }

void schedule(void);
long schedule_timeout(long timeout, int state);

#endif
