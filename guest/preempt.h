// preempt_disable/enable and need_resched, inline so they carry no ftrace site.
#ifndef PREEMPT_H
#define PREEMPT_H
#include "percpu.h"
#include "task.h"
#include "x86.h"

void preempt_schedule(void);

static __always_inline int need_resched(void)
{
	return test_tsk_need_resched(current);
}

static __always_inline void preempt_disable(void)
{
	preempt_count_add(1);
	barrier();
}

static __always_inline void preempt_enable_no_resched(void)
{
	barrier();
	preempt_count_sub(1);
}

static __always_inline void preempt_enable(void)
{
	barrier();
	preempt_count_sub(1);
	if (unlikely(preempt_count() == 0 && need_resched()))
		preempt_schedule();
}

#endif
