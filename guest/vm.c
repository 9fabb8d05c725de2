// Page tables: the kernel's (shared upper half) and per-task user address spaces.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "task.h"

#define KPD_DIRECT  4           // direct map covers at most 4 GiB of RAM

u64 *kernel_pml4;
static pte_t kpml4[NPTENTRIES] __aligned(PGSIZE);
static pte_t kpdpt_direct[NPTENTRIES] __aligned(PGSIZE);        // DIRECT_MAP_VA
static pte_t kpd_direct[KPD_DIRECT][NPTENTRIES] __aligned(PGSIZE);
static pte_t kpdpt_high[NPTENTRIES] __aligned(PGSIZE);          // top 512 GiB
static pte_t kpd_image[NPTENTRIES] __aligned(PGSIZE);           // kernel image, EXECMEM
#define KPT_IMAGE   2           // 4 KiB pages for the first 4 MiB of the image
static pte_t kpt_image[KPT_IMAGE][NPTENTRIES] __aligned(PGSIZE);
static pte_t kpt_execmem[NPTENTRIES] __aligned(PGSIZE);
static pte_t kpd_fixmap[NPTENTRIES] __aligned(PGSIZE);          // the last 1 GiB
static pte_t kpt_fixmap[NPTENTRIES] __aligned(PGSIZE);          // LAPIC
extern char _end[], _etext[];

// Build the kernel page tables and switch to them: image at KERNEL_VA, all RAM at
// DIRECT_MAP_VA, EXECMEM at EXECMEM_VA, the module area at MODULES_VA, the LAPIC uncached
// at LAPIC_VA. Only text is executable: the image's text pages, EXECMEM's and the module
// area's code parts; data, stacks, the direct map, EXECMEM's and the module area's data
// parts are NX. (Besides catching stray jumps,
// this is speed: Unicorn takes a slow path for every store to a page it may execute.)
void kvm_init(void)
{
	u64 mem = mem_bytes;

	if (mem > (u64)KPD_DIRECT << 30)
		mem = (u64)KPD_DIRECT << 30;
	for (u64 pa = 0; pa < mem; pa += HPGSIZE)
		kpd_direct[pa >> 30][PX(2, pa)] = pa | PTE_P | PTE_W | PTE_PS | PTE_NX;
	for (int i = 0; i < KPD_DIRECT; i++)
		kpdpt_direct[i] = V2P(kpd_direct[i]) | PTE_P | PTE_W;
	kpml4[PX(4, DIRECT_MAP_VA)] = V2P(kpdpt_direct) | PTE_P | PTE_W;

	if (V2P(_end) > KERNEL_PA + (u64)KPT_IMAGE * HPGSIZE)
		panic("kvm_init: kernel image larger than %d MiB", 2 * KPT_IMAGE);
	for (u64 pa = KERNEL_PA; pa < PGROUNDUP(V2P(_end)); pa += PGSIZE) {
		u64 i = (pa - KERNEL_PA) >> 12;
		kpt_image[i / NPTENTRIES][i % NPTENTRIES] =
			pa | PTE_P | PTE_W | (pa < V2P(_etext) ? 0 : PTE_NX);
	}
	for (int i = 0; i < KPT_IMAGE; i++)
		kpd_image[PX(2, KERNEL_VA) + i] = V2P(kpt_image[i]) | PTE_P | PTE_W;
	for (u64 off = 0; off < EXECMEM_SIZE; off += PGSIZE)
		kpt_execmem[PX(1, off)] = (EXECMEM_PA + off) | PTE_P | PTE_W |
			(off < EXECMEM_CODE_SIZE ? 0 : PTE_NX);
	kpd_image[PX(2, EXECMEM_VA)] = V2P(kpt_execmem) | PTE_P | PTE_W;
	for (u64 off = 0; off < MODULES_SIZE; off += HPGSIZE)
		kpd_image[PX(2, MODULES_VA + off)] = (MODULES_PA + off) | PTE_P | PTE_W | PTE_PS |
			(off < MODULES_CODE_SIZE ? 0 : PTE_NX);
	kpdpt_high[PX(3, KERNEL_VA)] = V2P(kpd_image) | PTE_P | PTE_W;

	kpt_fixmap[PX(1, LAPIC_VA)] = LAPIC_PA | PTE_P | PTE_W | PTE_PCD | PTE_PWT;
	kpd_fixmap[PX(2, LAPIC_VA)] = V2P(kpt_fixmap) | PTE_P | PTE_W;
	kpdpt_high[PX(3, LAPIC_VA)] = V2P(kpd_fixmap) | PTE_P | PTE_W;
	kpml4[PX(4, KERNEL_VA)] = V2P(kpdpt_high) | PTE_P | PTE_W;

	kernel_pml4 = kpml4;
	lcr3(V2P(kpml4));
}

// A new address space: empty user half, the kernel half shared with kernel_pml4.
u64 *pml4_alloc(void)
{
	u64 *pml4 = kalloc();

	if (!pml4)
		return NULL;
	for (int i = KERNEL_PML4_FIRST; i < NPTENTRIES; i++)
		pml4[i] = kernel_pml4[i];
	return pml4;
}

// The PTE for va, creating the page-table pages on the way if alloc.
static pte_t *walk(u64 *pml4, u64 va, int alloc)
{
	pte_t *table = pml4;

	for (int level = 4; level > 1; level--) {
		pte_t *e = &table[PX(level, va)];
		if (!(*e & PTE_P)) {
			void *page;
			if (!alloc || !(page = kalloc()))
				return NULL;
			*e = V2P(page) | PTE_P | PTE_W | PTE_U;
		}
		table = P2V(PTE_ADDR(*e));
	}
	return &table[PX(1, va)];
}

// Map size bytes of fresh user pages at va, filled from src (srclen bytes) then zeros;
// nx: not executable (stacks: a store to a page Unicorn may execute takes its slow path).
int uvm_map(u64 *pml4, u64 va, u64 size, const void *src, u64 srclen, int nx)
{
	for (u64 off = 0; off < size; off += PGSIZE) {
		pte_t *pte = walk(pml4, va + off, 1);
		u8 *page = kalloc();
		if (!pte || !page)
			return -ENOMEM;
		if (*pte & PTE_P)
			panic("uvm_map: remap %lx", va + off);
		if (off < srclen)
			memcpy(page, (const u8 *)src + off, srclen - off < PGSIZE ? srclen - off : PGSIZE);
		*pte = V2P(page) | PTE_P | PTE_W | PTE_U | (nx ? PTE_NX : 0);
	}
	return 0;
}

static void free_level(pte_t *table, int level)
{
	for (int i = 0; i < NPTENTRIES; i++) {
		if (!(table[i] & PTE_P))
			continue;
		if (level > 1)
			free_level(P2V(PTE_ADDR(table[i])), level - 1);
		else
			kfree(P2V(PTE_ADDR(table[i])));
	}
	kfree(table);
}

// Free the user half (pages and tables) and the pml4 itself. Not the running one.
void pml4_free(u64 *pml4)
{
	if (V2P(pml4) == rcr3())
		panic("pml4_free: in use");
	for (int i = 0; i < KERNEL_PML4_FIRST; i++)
		if (pml4[i] & PTE_P)
			free_level(P2V(PTE_ADDR(pml4[i])), 3);
	kfree(pml4);
}

// Is [uaddr, uaddr+len) inside the current task's code or stack mapping?
int access_ok(const void *uaddr, u64 len)
{
	struct task *t = current;
	u64 a = (u64)uaddr, stack_lo = USER_STACK_TOP - USER_STACK_PAGES * PGSIZE;

	if (!t->user || a + len < a)
		return 0;
	if (a >= USER_CODE_VA && a + len <= USER_CODE_VA + t->code_size)
		return 1;
	return a >= stack_lo && a + len <= USER_STACK_TOP;
}

int copy_from_user(void *dst, const void *usrc, u64 len)
{
	if (!access_ok(usrc, len))
		return -EFAULT;
	memcpy(dst, usrc, len);
	return 0;
}

int copy_to_user(void *udst, const void *src, u64 len)
{
	if (!access_ok(udst, len))
		return -EFAULT;
	memcpy(udst, src, len);
	return 0;
}
