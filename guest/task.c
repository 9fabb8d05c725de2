// Tasks: idle tasks, kernel threads, user tasks (spawn, exec, exit).
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"
#include "traps.h"

struct task idle_tasks[NCPU];
u8 idle_stacks[NCPU][KSTACK_SIZE] __aligned(16);

static struct spinlock tasks_lock = SPINLOCK_INIT("tasks");
static struct task tasks[NTASK];                        // used: tasks_lock
static u8 task_stacks[NTASK][KSTACK_SIZE] __aligned(16);
static int next_pid = 1;                                // tasks_lock

// The idle task of cpu, pid 0, "swapper/<cpu>": it is what the CPU runs at boot.
void idle_task_init(int cpu)
{
	struct task *t = &idle_tasks[cpu];

	t->pid = 0;
	t->state = TASK_RUNNING;
	snprintf(t->comm, sizeof(t->comm), "swapper/%d", cpu);
	t->flags = 0;
	t->kstack = (u64)idle_stacks[cpu];
	t->pml4 = kernel_pml4;
	t->on_cpu = 1;
	t->on_rq = 0;
	t->cpu = cpu;
	if (!t->used)           // first boot only: a CPU coming back keeps its livepatch state
		t->patch_state = KLP_TRANSITION_IDLE;
	t->used = 1;
}

// A task slot with a fresh pid, not yet runnable.
static struct task *task_alloc(const char *name)
{
	u64 flags = spin_lock_irqsave(&tasks_lock);
	struct task *t = NULL;

	for (int i = 0; i < NTASK; i++) {
		if (!tasks[i].used) {
			t = &tasks[i];
			memset(t, 0, sizeof(*t));
			t->used = 1;
			t->pid = next_pid++;
			t->kstack = (u64)task_stacks[i];
			break;
		}
	}
	spin_unlock_irqrestore(&tasks_lock, flags);
	if (!t)
		return NULL;
	t->state = TASK_UNINTERRUPTIBLE;        // until the first wake_up_process
	t->pml4 = kernel_pml4;
	t->cpu = -1;
	strlcpy(t->comm, name, sizeof(t->comm));
	klp_copy_process(t);
	return t;
}

// Build the stack of a task that has never run: a pt_regs at the top and below
// it a switch_to frame returning to ret_from_fork with r12 = fn, rbx = arg.
static struct pt_regs *task_stack_setup(struct task *t, int (*fn)(void *), void *arg)
{
	struct pt_regs *regs = (struct pt_regs *)(task_stack_top(t) - sizeof(struct pt_regs));
	struct inactive_task_frame *f = (struct inactive_task_frame *)regs - 1;

	memset(regs, 0, sizeof(*regs));
	memset(f, 0, sizeof(*f));
	f->r12 = (u64)fn;
	f->bx = (u64)arg;
	f->bp = 0;
	f->ret_addr = (u64)ret_from_fork;
	t->sp = (u64)f;
	return regs;
}

void task_free(struct task *t)
{
	u64 flags;

	if (t->user && t->pml4 != kernel_pml4)
		pml4_free(t->pml4);
	flags = spin_lock_irqsave(&tasks_lock);
	t->used = 0;
	spin_unlock_irqrestore(&tasks_lock, flags);
}

struct task *kthread_create(int (*fn)(void *), void *arg, const char *name)
{
	struct task *t = task_alloc(name);

	if (!t)
		panic("kthread_create %s: no task slots", name);
	task_stack_setup(t, fn, arg);
	return t;
}

struct task *kernel_thread(int (*fn)(void *), void *arg, const char *name)
{
	struct task *t = kthread_create(fn, arg, name);

	wake_up_process(t);
	return t;
}

// A fresh user address space with the embedded program name at USER_CODE_VA.
static u64 *load_program(const char *name, u64 *code_size)
{
	u64 size;
	const u8 *bin = uprog_find(name, &size);
	u64 *pml4;

	if (!bin)
		return NULL;
	pml4 = pml4_alloc();
	if (!pml4)
		return NULL;
	*code_size = PGROUNDUP(size + 1);
	if (uvm_map(pml4, USER_CODE_VA, *code_size, bin, size, 0) < 0 ||
	    uvm_map(pml4, USER_STACK_TOP - USER_STACK_PAGES * PGSIZE,
		    USER_STACK_PAGES * PGSIZE, NULL, 0, 1) < 0) {
		pml4_free(pml4);
		return NULL;
	}
	return pml4;
}

static void user_regs_init(struct pt_regs *regs)
{
	memset(regs, 0, sizeof(*regs));
	regs->ip = USER_CODE_VA;
	regs->cs = USER_CS;
	regs->flags = FL_IF | 0x2;
	regs->sp = USER_STACK_TOP;
	regs->ss = USER_DS;
}

// Start the embedded program name as a new user task; returns its pid.
int user_spawn(const char *name)
{
	u64 code_size;
	u64 *pml4 = load_program(name, &code_size);
	struct task *t;

	if (!pml4)
		return -ENOENT;
	t = task_alloc(name);
	if (!t) {
		pml4_free(pml4);
		return -EAGAIN;
	}
	t->pml4 = pml4;
	t->user = 1;
	t->code_size = code_size;
	user_regs_init(task_stack_setup(t, NULL, NULL));
	wake_up_process(t);
	return t->pid;
}

// Turn the current kernel thread into the user program name (kernel_init -> init).
void __noreturn user_exec(const char *name)
{
	struct task *t = current;
	struct pt_regs *regs = (struct pt_regs *)(task_stack_top(t) - sizeof(struct pt_regs));
	u64 code_size;
	u64 *pml4 = load_program(name, &code_size);

	if (!pml4)
		panic("user_exec: no program %s", name);
	preempt_disable();
	t->pml4 = pml4;
	t->user = 1;
	t->code_size = code_size;
	strlcpy(t->comm, name, sizeof(t->comm));
	lcr3(V2P(pml4));
	preempt_enable();
	user_regs_init(regs);
	ret_to_user_regs(regs);
}

// The current task ends; finish_task_switch frees it once off its stack.
void __noreturn do_exit(int code)
{
	struct task *t = current;

	if (t == mycpu()->idle)
		panic("do_exit: the idle task exits");
	debug_check_no_locks_held();
	local_irq_disable();
	t->state = TASK_DEAD;
	schedule();
	panic("do_exit: dead task %d ran again", t->pid);
}

// The programs embedded by programs.S: (name, start, end) triples, NULL name ends.
extern const u64 uprog_table[];

const u8 *uprog_find(const char *name, u64 *size)
{
	for (const u64 *p = uprog_table; p[0]; p += 3) {
		if (strcmp((const char *)p[0], name) == 0) {
			*size = p[2] - p[1];
			return (const u8 *)p[1];
		}
	}
	return NULL;
}
