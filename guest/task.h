// struct task: kernel threads, user tasks and the per-CPU idle tasks.
#ifndef TASK_H
#define TASK_H
#include "memlayout.h"

#ifndef __ASSEMBLER__
#include "types.h"

// Task states (Linux's values)
#define TASK_RUNNING            0
#define TASK_INTERRUPTIBLE      1
#define TASK_UNINTERRUPTIBLE    2
#define TASK_NORMAL             (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE)
#define TASK_DEAD               0x80

#define TASK_COMM_LEN           16
#define TIMESLICE_TICKS         4       // ticks before a busy task yields to waiters

struct task {
	int pid;                // TASK_PID
	volatile int state;     // TASK_STATE; set by the task itself or under rq_lock
	u64 trace_recursion;    // TASK_TRACE_RECURSION: owned by the host's ftrace
	char comm[TASK_COMM_LEN];       // TASK_COMM
	volatile u64 flags;     // TASK_FLAGS: TIF_* bits, atomic bit operations
	u64 kstack;             // TASK_KSTACK: base of KSTACK_SIZE bytes
	// ---- kernel private ----
	u64 sp;                 // saved rsp while switched out (switch_to)
	u64 *pml4;              // page table root (direct map va); kernel_pml4 for kthreads
	int on_cpu;             // TASK_ON_CPU: running on some CPU; rq_lock
	int on_rq;              // queued on the runqueue; rq_lock
	int cpu;                // TASK_CPU: CPU it runs or last ran on; rq_lock
	int ticks;              // TASK_TICKS: timer ticks in this slice; owner CPU
	int used;               // slot in use; tasks_lock
	int user;               // has a user address space
	u64 code_size;          // bytes mapped at USER_CODE_VA; user tasks
	struct task *rq_next;   // runqueue link; rq_lock
	int patch_state;        // TASK_PATCH_STATE: KLP_TRANSITION_*; livepatch (guest/livepatch.c)
};

_Static_assert(offsetof(struct task, pid) == TASK_PID, "TASK_PID");
_Static_assert(offsetof(struct task, state) == TASK_STATE, "TASK_STATE");
_Static_assert(offsetof(struct task, trace_recursion) == TASK_TRACE_RECURSION, "TASK_TRACE_RECURSION");
_Static_assert(offsetof(struct task, comm) == TASK_COMM, "TASK_COMM");
_Static_assert(offsetof(struct task, flags) == TASK_FLAGS, "TASK_FLAGS");
_Static_assert(offsetof(struct task, kstack) == TASK_KSTACK, "TASK_KSTACK");
_Static_assert(offsetof(struct task, sp) == TASK_THREAD_SP, "TASK_THREAD_SP");
_Static_assert(offsetof(struct task, used) == TASK_USED, "TASK_USED");
_Static_assert(offsetof(struct task, on_cpu) == TASK_ON_CPU, "TASK_ON_CPU");
_Static_assert(offsetof(struct task, on_rq) == TASK_ON_RQ, "TASK_ON_RQ");
_Static_assert(offsetof(struct task, cpu) == TASK_CPU, "TASK_CPU");
_Static_assert(offsetof(struct task, ticks) == TASK_TICKS, "TASK_TICKS");
_Static_assert(offsetof(struct task, patch_state) == TASK_PATCH_STATE, "TASK_PATCH_STATE");

// The frame switch_to leaves on a switched-out task's stack (Linux's inactive_task_frame).
struct inactive_task_frame {
	u64 r15, r14, r13, r12, bx, bp;
	u64 ret_addr;
};

extern struct task idle_tasks[NCPU];    // task.c: swapper/N

static inline u64 task_stack_top(struct task *t)
{
	return t->kstack + KSTACK_SIZE;
}

static __always_inline void set_tsk_need_resched(struct task *t)
{
	__asm__ volatile("lock orq %1, %0" : "+m"(t->flags) : "i"(1ul << TIF_NEED_RESCHED) : "memory");
}

static __always_inline void clear_tsk_need_resched(struct task *t)
{
	__asm__ volatile("lock andq %1, %0" : "+m"(t->flags) : "i"(~(1ul << TIF_NEED_RESCHED)) : "memory");
}

static __always_inline int test_tsk_need_resched(struct task *t)
{
	return (READ_ONCE(t->flags) >> TIF_NEED_RESCHED) & 1;
}
#endif

#endif
