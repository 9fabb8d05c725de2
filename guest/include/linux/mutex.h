/* Sleeping locks (guest/mutex.c; the layout is the guest's, checked by abi_check.c). */
#ifndef _LINUX_MUTEX_H
#define _LINUX_MUTEX_H
#include <linux/types.h>

struct mutex {
	struct {                        /* a binary semaphore, count 1 while free */
		struct {
			volatile unsigned int locked;
			int cpu;
			const char *name;
		} lock;
		int count;
		void *head, *tail;      /* FIFO of sleeping tasks */
	} sem;
	void *owner;
	const char *name;
};

#define __MUTEX_INITIALIZER(lockname) \
	{ { { 0, -1, "sem" }, 1, NULL, NULL }, NULL, #lockname }
#define DEFINE_MUTEX(mutexname) struct mutex mutexname = __MUTEX_INITIALIZER(mutexname)

void mutex_lock(struct mutex *lock);
int mutex_trylock(struct mutex *lock);
void mutex_unlock(struct mutex *lock);

#endif
