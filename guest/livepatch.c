// Livepatch, the guest's half. The host (livepatch/ in Python) decides: it reads patches,
// registers one ftrace ops per patched function and runs the transition. What runs on every
// call or in the patch module's context lives here: klp_ftrace_handler (no host round trip),
// the per-task switch at safe points, klp_enable_patch's request to the host, the
// transition work that retries every second, klp_get_state, and the shadow variables.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "task.h"
#include "traps.h"
#include "preempt.h"

#define FTRACE_OPS_PRIVATE 0x10 // ftrace_ops copy handed to callbacks: op->private (ftrace_64.py)

struct klp_func {               // the KLP_FUNC_* layout of memlayout.h
	const char *old_name;
	void *new_func;
	unsigned long old_sympos;
	void *old_func;
	struct klp_func *stack_next;
	unsigned long old_size, new_size;
	union {
		struct {
			bool nop, patched, transition;
		};
		u32 state;      // the three at once: the handler's common case is one test
	};
};
#define KLP_STATE_NOP           (1u << 8 * (KLP_FUNC_NOP - KLP_FUNC_NOP))
#define KLP_STATE_TRANSITION    (1u << 8 * (KLP_FUNC_TRANSITION - KLP_FUNC_NOP))
_Static_assert(offsetof(struct klp_func, stack_next) == KLP_FUNC_STACK_NEXT, "KLP_FUNC_STACK_NEXT");
_Static_assert(offsetof(struct klp_func, nop) == KLP_FUNC_NOP, "KLP_FUNC_NOP");
_Static_assert(offsetof(struct klp_func, state) == KLP_FUNC_NOP, "KLP_FUNC_NOP");
_Static_assert(offsetof(struct klp_func, transition) == KLP_FUNC_TRANSITION, "KLP_FUNC_TRANSITION");
_Static_assert(sizeof(struct klp_func) == KLP_FUNC_SIZE, "KLP_FUNC_SIZE");

struct klp_state {
	unsigned long id;
	unsigned int version;
	void *data;
};
_Static_assert(sizeof(struct klp_state) == KLP_STATE_SIZE, "KLP_STATE_SIZE");

struct klp_patch {
	void *mod;
	void *objs;
	struct klp_state *states;
	bool replace, enabled, forced;
};
_Static_assert(offsetof(struct klp_patch, states) == KLP_PATCH_STATES, "KLP_PATCH_STATES");

// Written by the host only.
int klp_target_state = KLP_TRANSITION_IDLE;
struct klp_patch *klp_transition_patch;
struct klp_patch *klp_patches[KLP_MAX_PATCHES];        // registered, oldest first; NULL ends
struct task *klp_signal_tasks[NTASK + NCPU];            // for the fake signal; NULL ends

// ---- the ftrace callback: one ops per patched function, private = its func stack head ---
// x86-64 with DYNAMIC_FTRACE_WITH_ARGS: the ops has no SAVE_REGS, so its trampoline builds
// ftrace_caller's ftrace_regs (a pt_regs only partly filled) and jumps to whatever ip the
// callback leaves in it (ftrace/arch/x86/ftrace_64.py, Frame.ARGS).
struct ftrace_regs {
	struct pt_regs regs;
};

static __always_inline void ftrace_regs_set_instruction_pointer(struct ftrace_regs *fregs, u64 ip)
{
	fregs->regs.ip = ip;
}

// include/linux/trace_recursion.h for an ftrace callback: TRACE_FTRACE_START's context bits
// in current->trace_recursion (the host's ftrace_rec_lock keeps the same bits), preemption
// off while held. One nested entry in the same context is let through (the TRANSITION bit);
// a refused one is reported to the host, which lists it in recursed_functions. current is
// never NULL here: a CPU sets it before it runs any traceable code (percpu_early_init).
#define TRACE_FTRACE_START      0
#define TRACE_CTX_NORMAL        3
#define TRACE_CTX_TRANSITION    4
#define TRACE_CTX_MASK          (NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET)

static __always_inline int ftrace_test_recursion_trylock(struct task *t, u64 ip, u64 parent_ip)
{
	u32 pc = preempt_count();
	u64 val = READ_ONCE(t->trace_recursion);
	int bit = TRACE_FTRACE_START + TRACE_CTX_NORMAL -
		  (!!(pc & NMI_MASK) + !!(pc & (NMI_MASK | HARDIRQ_MASK)) + !!(pc & TRACE_CTX_MASK));

	if (val & (1ul << bit)) {
		bit = TRACE_FTRACE_START + TRACE_CTX_TRANSITION;
		if (val & (1ul << bit)) {
			__asm__ volatile("push %1; push %0; outl %%eax, %[port]; add $16, %%rsp"
					 : : "r"(ip), "r"(parent_ip), "a"(0),
					   [port] "i"(FTRACE_RECURSION_PORT) : "memory");
			return -1;
		}
	}
	WRITE_ONCE(t->trace_recursion, val | 1ul << bit);
	barrier();
	preempt_disable();
	return bit;
}

// The bit goes first, then preemption (the kernel's order is the reverse; either way
// nothing runs in between): so a reschedule is the handler's last act, a tail call.
static __always_inline void ftrace_test_recursion_unlock(struct task *t, int bit)
{
	bool zero;

	WRITE_ONCE(t->trace_recursion, READ_ONCE(t->trace_recursion) & ~(1ul << bit));
	barrier();
	__asm__ volatile("subl $1, %%gs:%c1" : "=@ccz"(zero) : "i"(PCPU_PREEMPT_COUNT) : "memory");
	if (unlikely(zero) && need_resched())
		preempt_schedule();
}

// kernel/livepatch/patch.c, as it is. The host's klp_synchronize_transition waits until no
// vCPU is in the handler (by RIP), and the host holds interrupts while one is
// (Machine.hold_interrupts_in): it runs without cli/popfq (popfq leaves Unicorn's
// translated code).
static noinline notrace void klp_ftrace_handler_general(u64 ip, u64 parent_ip, void *op,
							struct ftrace_regs *fregs)
{
	struct klp_func **stack = *(struct klp_func ***)((u8 *)op + FTRACE_OPS_PRIVATE);
	struct task *t = current;
	struct klp_func *func;
	int bit;

	bit = ftrace_test_recursion_trylock(t, ip, parent_ip);
	if (bit < 0)
		return;
	func = READ_ONCE(*stack);       // list_first_or_null_rcu(&ops->func_stack, ...)
	if (!func)
		goto unlock;
	barrier();                      // smp_rmb: x86 keeps loads in order
	if (READ_ONCE(func->transition)) {
		barrier();
		if (READ_ONCE(t->patch_state) == KLP_TRANSITION_UNPATCHED) {
			func = func->stack_next;    // the previous version, or the original
			if (!func)
				goto unlock;
		}
	}
	if (func->nop)                  // atomic replace: back to the original
		goto unlock;
	ftrace_regs_set_instruction_pointer(fregs, (u64)func->new_func);
unlock:
	ftrace_test_recursion_unlock(t, bit);
}

// What the common case's one test reads when the func stack is empty (never, while the ops
// is registered): a nop, so that case goes the general way, which handles it.
static struct klp_func klp_empty_stack = { .nop = true };

// The common case, decided by one test (every branch ends a Unicorn translation block, which
// costs more than several instructions): task context with its recursion bit free, a func
// neither in transition nor a nop, and no reschedule due when preemption is enabled. Then
// the general code's steps without its tests (lock, set ip, unlock; the same loads and
// stores) and without preempt_enable's reschedule check: nothing can set need_resched here
// but another CPU's wakeup, whose IPI (held while a vCPU is in here) then preempts the task
// as soon as it is out, as in the kernel an IPI right after preempt_enable would. Anything
// else runs the general code.
notrace void klp_ftrace_handler(u64 ip, u64 parent_ip, void *op, struct ftrace_regs *fregs)
{
	struct klp_func **stack = *(struct klp_func ***)((u8 *)op + FTRACE_OPS_PRIVATE);
	struct klp_func *func = READ_ONCE(*stack);
	struct klp_func *probe = func ? func : &klp_empty_stack;
	struct task *t = current;
	u32 pc = preempt_count();
	const u64 normal = 1ul << (TRACE_FTRACE_START + TRACE_CTX_NORMAL);
	u64 slow = (pc & TRACE_CTX_MASK) | ((u64)(pc == 0) & (READ_ONCE(t->flags) >> TIF_NEED_RESCHED));

	slow |= READ_ONCE(probe->state) & (KLP_STATE_TRANSITION | KLP_STATE_NOP);
	slow |= READ_ONCE(t->trace_recursion) & normal;
	if (unlikely(slow)) {
		klp_ftrace_handler_general(ip, parent_ip, op, fregs);
		return;
	}
	WRITE_ONCE(t->trace_recursion, READ_ONCE(t->trace_recursion) | normal);
	barrier();
	preempt_disable();
	ftrace_regs_set_instruction_pointer(fregs, (u64)func->new_func);
	WRITE_ONCE(t->trace_recursion, READ_ONCE(t->trace_recursion) & ~normal);
	preempt_enable_no_resched();
}

// ---- the consistency model's safe points --------------------------------------------
static __always_inline bool test_and_clear_patch_pending(struct task *t)
{
	bool was;

	__asm__ volatile("lock btrq %2, %0; setc %1"
			 : "+m"(t->flags), "=q"(was) : "i"(TIF_PATCH_PENDING) : "memory", "cc");
	return was;
}

notrace void klp_update_patch_state(struct task *task)
{
	if (READ_ONCE(task->flags) & (1ul << TIF_PATCH_PENDING) && test_and_clear_patch_pending(task))
		task->patch_state = READ_ONCE(klp_target_state);
}

// A new task inherits its parent's state and pending flag (klp_copy_process).
void klp_copy_process(struct task *child)
{
	struct task *parent = current;

	child->patch_state = parent->patch_state;
	if (READ_ONCE(parent->flags) & (1ul << TIF_PATCH_PENDING))
		__asm__ volatile("lock btsq %1, %0" : "+m"(child->flags) : "i"(TIF_PATCH_PENDING) : "memory");
}

// ---- requests to the host ---------------------------------------------------------------
#define KLP_REQ_ENABLE          1       // arg: struct klp_patch *
#define KLP_REQ_TRANSITION_WORK 2
#define KLP_REQ_MODULE_COMING   3       // arg: struct module * (klp_module_coming)
#define KLP_REQ_MODULE_GOING    4
#define KLP_RESCHED             1       // answer flags: run klp_transition_work in a second
#define KLP_SIGNAL              2       // wake klp_signal_tasks[] (the fake signal)

struct klp_request {
	u64 op, arg;
	s64 ret;
	u64 flags;
	volatile u64 done;              // the host answers between two rounds of the machine,
};                                      // or asks again (KLP_ASK_AGAIN) after another round
#define KLP_ASK_AGAIN           2       // a vCPU held a spin lock: the host could not call

static void klp_transition_work_fn(struct work_struct *w);
static struct delayed_work klp_transition_work = { { NULL, klp_transition_work_fn, 0 } };

static void klp_send_signals(void)
{
	for (int i = 0; i < NTASK + NCPU && klp_signal_tasks[i]; i++)
		try_to_wake_up(klp_signal_tasks[i], TASK_INTERRUPTIBLE);
}

static long klp_request(u64 op, u64 arg)
{
	struct klp_request r = { op, arg, 0, 0, 0 };

	do {
		WRITE_ONCE(r.done, 0);
		__asm__ volatile("outl %%eax, %[port]" : : "a"(0), [port] "i"(KLP_PORT), "D"(&r) : "memory");
		while (!READ_ONCE(r.done))
			cpu_relax();
	} while (r.done == KLP_ASK_AGAIN);
	if (r.flags & KLP_SIGNAL)
		klp_send_signals();
	if (r.flags & KLP_RESCHED)
		schedule_delayed_work(&klp_transition_work, HZ);
	return r.ret;
}

static void klp_transition_work_fn(struct work_struct *w)
{
	klp_request(KLP_REQ_TRANSITION_WORK, 0);
}

// Called from the transition work the host schedules after a sysfs write.
void klp_schedule_transition_work(void)
{
	schedule_delayed_work(&klp_transition_work, HZ);
}

int klp_enable_patch(struct klp_patch *patch)
{
	return klp_request(KLP_REQ_ENABLE, (u64)patch);
}

struct klp_state *klp_get_state(struct klp_patch *patch, unsigned long id)
{
	if (!patch->states)
		return NULL;
	for (struct klp_state *s = patch->states; s->id; s++)
		if (s->id == id)
			return s;
	return NULL;
}

// The state of the same id set by the patches installed before the one in transition.
struct klp_state *klp_get_prev_state(unsigned long id)
{
	struct klp_state *last = NULL;

	if (!klp_transition_patch)
		return NULL;
	for (int i = 0; i < KLP_MAX_PATCHES && klp_patches[i]; i++) {
		struct klp_state *s;
		if (klp_patches[i] == klp_transition_patch)
			break;
		s = klp_get_state(klp_patches[i], id);
		if (s)
			last = s;
	}
	return last;
}
