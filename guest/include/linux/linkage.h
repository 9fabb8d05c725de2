/* asmlinkage: the C calling convention the kernel's entry code calls (plain on x86-64). */
#ifndef _LINUX_LINKAGE_H
#define _LINUX_LINKAGE_H

#define asmlinkage

#endif
