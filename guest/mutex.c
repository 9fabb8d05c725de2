// Sleeping locks as Linux names them: mutex_lock/mutex_trylock/mutex_unlock (on a binary
// semaphore, with an owner for debugging), console_lock/console_unlock around writes that
// may sleep, sched_clock/local_clock, and debug_check_no_locks_held at task exit.
#include "types.h"
#include "defs.h"
#include "percpu.h"
#include "task.h"
#include "x86.h"

void mutex_init(struct mutex *m, const char *name)
{
	sema_init(&m->sem, 1);
	m->owner = NULL;
	m->name = name;
}

// Sleeps until the mutex is free; process context only.
void mutex_lock(struct mutex *m)
{
	if (in_interrupt())
		panic("mutex_lock(%s) in interrupt context", m->name);
	down(&m->sem);
	m->owner = current;
}

// 1 if taken, 0 if somebody holds it (never sleeps).
int mutex_trylock(struct mutex *m)
{
	if (down_trylock(&m->sem))
		return 0;
	m->owner = current;
	return 1;
}

void mutex_unlock(struct mutex *m)
{
	if (m->owner != current)
		panic("mutex_unlock(%s) by a task that does not hold it", m->name);
	m->owner = NULL;
	up(&m->sem);
}

static struct mutex console_mutex;

// The console for writers that may sleep (user write(2)); printk does not take it.
void console_lock(void)
{
	mutex_lock(&console_mutex);
}

void console_unlock(void)
{
	mutex_unlock(&console_mutex);
}

void console_lock_init(void)
{
	mutex_init(&console_mutex, "console");
}

// Nanoseconds since boot from the TSC (the machine's virtual time).
u64 sched_clock(void)
{
	return rdtsc();
}

u64 local_clock(void)
{
	return sched_clock();
}

// At exit a task must hold no lock: a spinlock would have left preemption disabled.
void debug_check_no_locks_held(void)
{
	if (preempt_count() & PREEMPT_MASK)
		panic("task %d exits holding a lock (preempt_count %x)", current->pid, preempt_count());
}
