/* NR_CPUS: the most CPUs the kernel is built for (the guest's NCPU). */
#ifndef _LINUX_THREADS_H
#define _LINUX_THREADS_H

#define NR_CPUS 8

#endif
