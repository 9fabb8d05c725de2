/* Allocation flags (the kernel's values, GFP_KERNEL & co in guest/defs.h). */
#ifndef _LINUX_GFP_H
#define _LINUX_GFP_H
#include <linux/types.h>
#include "../../defs.h"

#endif
