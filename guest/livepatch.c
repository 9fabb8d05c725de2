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

#define FTRACE_OPS_PRIVATE 0x10 // ftrace_ops copy handed to callbacks: op->private (ftrace_64.py)

struct klp_func {               // the KLP_FUNC_* layout of memlayout.h
	const char *old_name;
	void *new_func;
	unsigned long old_sympos;
	void *old_func;
	struct klp_func *stack_next;
	unsigned long old_size, new_size;
	bool nop, patched, transition;
};
_Static_assert(offsetof(struct klp_func, stack_next) == KLP_FUNC_STACK_NEXT, "KLP_FUNC_STACK_NEXT");
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
notrace void klp_ftrace_handler(u64 ip, u64 parent_ip, void *op, struct pt_regs *regs)
{
	struct klp_func **stack = *(struct klp_func ***)((u8 *)op + FTRACE_OPS_PRIVATE);
	struct klp_func *func;
	u64 flags = local_irq_save();   // the host's sync waits for no vCPU to be in here

	func = READ_ONCE(*stack);
	if (unlikely(!func))
		goto out;
	barrier();                      // smp_rmb: x86 keeps loads in order
	if (unlikely(READ_ONCE(func->transition))) {
		if (READ_ONCE(current->patch_state) == KLP_TRANSITION_UNPATCHED) {
			func = func->stack_next;    // the previous version, or the original
			if (!func)
				goto out;
		}
	}
	if (func->nop)                  // atomic replace: back to the original
		goto out;
	regs->ip = (u64)func->new_func;
out:
	local_irq_restore(flags);
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
