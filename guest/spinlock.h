// Spin locks: preemption off while held; the _irqsave variants also mask interrupts.
#ifndef SPINLOCK_H
#define SPINLOCK_H
#include "types.h"

struct spinlock {
	volatile u32 locked;    // 1 while held
	int cpu;                // holder, for debugging
	const char *name;
};

#define SPINLOCK_INIT(n) { 0, -1, (n) }

#endif
