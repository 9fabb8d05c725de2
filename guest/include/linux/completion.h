/* Completions (guest/completion.c): wait until another thread says it is done. */
#ifndef _LINUX_COMPLETION_H
#define _LINUX_COMPLETION_H
#include <linux/types.h>

struct completion {
	unsigned int done;              /* UINT_MAX after complete_all */
	struct {                        /* a spin lock */
		volatile unsigned int locked;
		int cpu;
		const char *name;
	} lock;
	void *waiters;                  /* FIFO of sleeping tasks */
};

#define COMPLETION_INITIALIZER(work) { 0, { 0, -1, #work }, NULL }
#define DECLARE_COMPLETION(work) struct completion work = COMPLETION_INITIALIZER(work)
#define DECLARE_COMPLETION_ONSTACK(work) DECLARE_COMPLETION(work)

static inline void init_completion(struct completion *x)
{
	*x = (struct completion)COMPLETION_INITIALIZER(*x);
}

static inline void reinit_completion(struct completion *x)
{
	x->done = 0;
}

void complete(struct completion *x);
void complete_all(struct completion *x);
void wait_for_completion(struct completion *x);
bool try_wait_for_completion(struct completion *x);
bool completion_done(struct completion *x);

#endif
