// Counting semaphores with a FIFO of sleeping tasks; the user-visible ones.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "task.h"

#define NSEM 8          // semaphores reachable from SYS_sem_up / SYS_sem_down

struct sem_waiter {
	struct task *task;
	struct sem_waiter *next;
	int up;                 // set by up(): the count was handed to this waiter
};

static struct semaphore user_sems[NSEM];

void sema_init(struct semaphore *s, int count)
{
	s->lock = (struct spinlock)SPINLOCK_INIT("sem");
	s->count = count;
	s->head = s->tail = NULL;
}

void down(struct semaphore *s)
{
	u64 flags = spin_lock_irqsave(&s->lock);
	struct sem_waiter w = { current, NULL, 0 };

	if (s->count > 0) {
		s->count--;
		spin_unlock_irqrestore(&s->lock, flags);
		return;
	}
	if (s->tail)
		s->tail->next = &w;
	else
		s->head = &w;
	s->tail = &w;
	for (;;) {
		current->state = TASK_UNINTERRUPTIBLE;
		spin_unlock_irqrestore(&s->lock, flags);
		schedule();
		flags = spin_lock_irqsave(&s->lock);
		if (w.up)
			break;
	}
	spin_unlock_irqrestore(&s->lock, flags);
}

int down_trylock(struct semaphore *s)
{
	u64 flags = spin_lock_irqsave(&s->lock);
	int ok = s->count > 0;

	if (ok)
		s->count--;
	spin_unlock_irqrestore(&s->lock, flags);
	return !ok;     // 0 on success, as Linux
}

// Hand the unit to the first sleeper, or count it.
void up(struct semaphore *s)
{
	u64 flags = spin_lock_irqsave(&s->lock);
	struct sem_waiter *w = s->head;

	if (!w) {
		s->count++;
	} else {
		s->head = w->next;
		if (!s->head)
			s->tail = NULL;
		w->up = 1;
		wake_up_process(w->task);
	}
	spin_unlock_irqrestore(&s->lock, flags);
}

void user_sems_init(void)
{
	for (int i = 0; i < NSEM; i++)
		sema_init(&user_sems[i], 0);
}

int sys_sem_op(int id, int is_up)
{
	if (id < 0 || id >= NSEM)
		return -EINVAL;
	if (is_up)
		up(&user_sems[id]);
	else
		down(&user_sems[id]);
	return 0;
}
