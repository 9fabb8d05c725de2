// kmalloc: small objects in power-of-two size classes carved from pages. kfree takes what
// kmalloc or kalloc returned: page-aligned pointers are whole pages, others carry a header.
#include "types.h"
#include "defs.h"
#include "mmu.h"

#define KMALLOC_MIN     32
#define KMALLOC_CLASSES 7                       // 32 .. 2048 bytes, header included
#define SLAB_HDR        16                      // before each object: its class

struct slab_free {
	struct slab_free *next;
};

static struct spinlock slab_lock = SPINLOCK_INIT("slab");
static struct slab_free *slab_free[KMALLOC_CLASSES];   // slab_lock

void *kmalloc(size_t size, gfp_t flags)
{
	int cls = 0;
	u64 irq;
	u8 *obj;

	while ((KMALLOC_MIN << cls) < size + SLAB_HDR)
		if (++cls == KMALLOC_CLASSES)
			return NULL;            // larger than a class: not supported
	irq = spin_lock_irqsave(&slab_lock);
	if (!slab_free[cls]) {
		u8 *page = kalloc();
		size_t sz = KMALLOC_MIN << cls;
		if (!page) {
			spin_unlock_irqrestore(&slab_lock, irq);
			return NULL;
		}
		// The first slot stays unused: no object is ever page-aligned.
		for (size_t off = sz; off + sz <= PGSIZE; off += sz) {
			struct slab_free *f = (void *)(page + off);
			f->next = slab_free[cls];
			slab_free[cls] = f;
		}
	}
	obj = (u8 *)slab_free[cls];
	slab_free[cls] = slab_free[cls]->next;
	spin_unlock_irqrestore(&slab_lock, irq);
	*(u64 *)obj = cls;
	return obj + SLAB_HDR;
}

void *kzalloc(size_t size, gfp_t flags)
{
	void *p = kmalloc(size, flags);

	if (p)
		memset(p, 0, size);
	return p;
}

void kfree(const void *va)
{
	struct slab_free *f;
	u64 irq;
	int cls;

	if (!va)
		return;
	if ((u64)va % PGSIZE == 0) {
		free_page((void *)va);
		return;
	}
	f = (void *)((u8 *)va - SLAB_HDR);
	cls = *(u64 *)f;
	if (cls < 0 || cls >= KMALLOC_CLASSES)
		panic("kfree %p: not a kmalloc object", va);
	irq = spin_lock_irqsave(&slab_lock);
	f->next = slab_free[cls];
	slab_free[cls] = f;
	spin_unlock_irqrestore(&slab_lock, irq);
}
