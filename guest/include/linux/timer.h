/* Kernel timers (guest/timer.c): the layout is the guest's, checked by abi_check.c. */
#ifndef _LINUX_TIMER_H
#define _LINUX_TIMER_H
#include <linux/types.h>
#include <linux/jiffies.h>

struct timer_list {
	unsigned long expires;
	void (*function)(struct timer_list *);
	struct timer_list *next;        /* the timer list's own fields */
	int pending;
	void *task;
};

void add_timer(struct timer_list *timer);
int del_timer(struct timer_list *timer);
int del_timer_sync(struct timer_list *timer);

#endif
