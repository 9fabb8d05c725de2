// Physical page allocator: 4096-byte pages of free RAM, handed out as direct-map addresses.
#include "types.h"
#include "defs.h"
#include "mmu.h"

struct run {
	struct run *next;
};

static struct {
	struct spinlock lock;
	struct run *freelist;   // lock
	u64 nfree;              // lock
} kmem = { SPINLOCK_INIT("kmem"), NULL, 0 };

// Free every page in [start_pa, end_pa). EXECMEM is never in the range given.
void kalloc_init(u64 start_pa, u64 end_pa)
{
	for (u64 pa = PGROUNDUP(start_pa); pa + PGSIZE <= end_pa; pa += PGSIZE) {
		if (pa < EXECMEM_PA + EXECMEM_SIZE && pa + PGSIZE > EXECMEM_PA)
			panic("kalloc_init: EXECMEM");
		struct run *r = P2V(pa);        // boot: no lock, no poison (it is slow)
		r->next = kmem.freelist;
		kmem.freelist = r;
		kmem.nfree++;
	}
}

// Give back a page from kalloc (kfree also takes pages, and kmalloc's objects).
void free_page(void *va)
{
	struct run *r = va;
	u64 flags;

	if ((u64)va % PGSIZE || (u64)va < DIRECT_MAP_VA)
		panic("free_page %p", va);
	memset(va, 0x5a, PGSIZE);       // poison, to catch use after free
	flags = spin_lock_irqsave(&kmem.lock);
	r->next = kmem.freelist;
	kmem.freelist = r;
	kmem.nfree++;
	spin_unlock_irqrestore(&kmem.lock, flags);
}

// A zeroed page, or NULL when memory is exhausted.
void *kalloc(void)
{
	struct run *r;
	u64 flags;

	flags = spin_lock_irqsave(&kmem.lock);
	r = kmem.freelist;
	if (r) {
		kmem.freelist = r->next;
		kmem.nfree--;
	}
	spin_unlock_irqrestore(&kmem.lock, flags);
	if (r)
		memset(r, 0, PGSIZE);
	return r;
}

u64 nr_free_pages(void)
{
	return READ_ONCE(kmem.nfree);
}
