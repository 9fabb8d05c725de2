/* kmalloc / kzalloc / kfree: objects up to 2 KiB (guest/slab.c). */
#ifndef _LINUX_SLAB_H
#define _LINUX_SLAB_H
#include <linux/gfp.h>
#include "../../defs.h"         /* kmalloc, kzalloc, kfree: the kernel's own */

#endif
