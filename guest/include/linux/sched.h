/* Scheduling: sleeping and yielding (guest/sched.c, guest/timer.c). */
#ifndef _LINUX_SCHED_H
#define _LINUX_SCHED_H
#include <linux/types.h>

#define TASK_RUNNING		0x0000
#define TASK_INTERRUPTIBLE	0x0001
#define TASK_UNINTERRUPTIBLE	0x0002

#define MAX_SCHEDULE_TIMEOUT	((long)(~0UL >> 1))

void schedule(void);
long schedule_timeout(long timeout, int state);

#endif
