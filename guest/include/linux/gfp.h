/* Allocation flags (the kernel's values for GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT: printk's
 * %pGg names them). */
#ifndef _LINUX_GFP_H
#define _LINUX_GFP_H
#include <linux/types.h>

#define GFP_KERNEL      0xcc0u
#define GFP_ATOMIC      0xa20u
#define GFP_NOWAIT      0x800u

#endif
