/* kmalloc / kzalloc / kfree: objects up to 2 KiB, whole pages above (guest/slab.c). */
#ifndef _LINUX_SLAB_H
#define _LINUX_SLAB_H
#include <linux/gfp.h>
#include <linux/types.h>

void *kmalloc(size_t size, gfp_t flags);
void *kzalloc(size_t size, gfp_t flags);
void kfree(const void *objp);

static inline void *kcalloc(size_t n, size_t size, gfp_t flags)
{
	if (size && n > ~0UL / size)
		return NULL;
	return kzalloc(n * size, flags);
}

#endif
