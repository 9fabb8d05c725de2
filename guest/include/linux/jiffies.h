/* jiffies: the tick counter (HZ from memlayout.h). */
#ifndef _LINUX_JIFFIES_H
#define _LINUX_JIFFIES_H
#include "../../defs.h"

static inline unsigned long msecs_to_jiffies(const unsigned int m)
{
	return (unsigned long)m * HZ / 1000;
}

#endif
