/* ftemu's native block hook: exact instruction counts and precise stops for one vCPU.
 *
 * Registered with uc_hook_add(UC_HOOK_BLOCK) with a struct vcpu_count as user data. At the
 * start of every translation block it either stops the run (a stop was requested, or the
 * block would overrun the slice budget) or adds the block's instruction count to `ran`.
 * A stop issued here, from the emulating thread before the block's first instruction, is
 * exact: Unicorn's asynchronous uc_emu_stop from another thread may end a run in the middle
 * of a block with RIP rolled back to the block start, re-executing its first instructions.
 *
 * Instruction counts come from Unicorn's own translation block (UC_CTL_TB_REQUEST_CACHE:
 * the block being executed is in the cache, so the request only looks it up) and are
 * cached by (pc, size) for kernel addresses. Any code change invalidates the whole cache in
 * O(1) (`generation`); user-space blocks are never cached, since the guest reuses the same
 * user addresses for different programs. The host corrects a block that did not run to its
 * end (a fault, an I/O stop) by decoding it: see emu/blockcount.py.
 *
 * No Unicorn header is needed: the two entry points we call are handed in as pointers.
 */
#include <stdint.h>
#include <string.h>

typedef struct { uint64_t pc; uint16_t icount; uint16_t size; } uc_tb;
typedef int (*uc_ctl_fn)(void *uc, int ctl, ...);
typedef int (*uc_emu_stop_fn)(void *uc);

#define UC_CTL_TB_REQUEST_CACHE 8
#define UC_CTL_IO_READ_WRITE 3
#define CTL_REQUEST_CACHE ((UC_CTL_IO_READ_WRITE << 30) | (2 << 26) | UC_CTL_TB_REQUEST_CACHE)
#define SLOTS 8192              /* power of two */
#define PROBES 8

struct slot { uint64_t pc; uint32_t size; uint16_t icount; uint16_t gen; };

/* The layout is mirrored by emu/blockcount.py (_VcpuCount): keep them in step. */
struct vcpu_count {
	uint64_t ran;           /* instructions of the blocks started in this run */
	uint64_t budget;        /* stop before a block that would take ran past this (0: none) */
	uint32_t stop;          /* set by anyone (another thread too): stop at the next block */
	uint32_t stopped;       /* this hook ended the run (before a block it did not count) */
	uint64_t block_pc;      /* the last block counted, and its size and count */
	uint32_t block_size;
	uint32_t block_icount;
	uint64_t misses;        /* blocks whose count was looked up in Unicorn's cache */
	uint64_t unknown;       /* blocks Unicorn could not describe (counted as 1 each) */
	uint32_t generation;    /* bumped by ftemu_count_invalidate */
	uint32_t pad;
	void *uc;
	uc_ctl_fn ctl;
	uc_emu_stop_fn emu_stop;
	struct slot slots[SLOTS];
};

/* A code hook that never runs (bound to address 0): with it, a Python code hook is never the
 * only UC_HOOK_CODE, which Unicorn 2.1.4 would call directly from the translated block; after
 * hook_del that block would call a freed callback. With two, it goes through a helper that
 * skips deleted hooks. (count= gets the same from its own counting hook.) */
void ftemu_no_code(void *uc, uint64_t pc, uint32_t size, void *user)
{
	(void)uc; (void)pc; (void)size; (void)user;
}

uint64_t ftemu_count_size(void) { return sizeof(struct vcpu_count); }

void ftemu_count_invalidate(struct vcpu_count *v)
{
	v->generation++;
	if ((uint16_t)v->generation == 0) {          /* wrapped: really forget */
		memset(v->slots, 0, sizeof(v->slots));
		v->generation = 1;
	}
}

static inline uint32_t slot_of(uint64_t pc, uint32_t size)
{
	uint64_t h = (pc ^ ((uint64_t)size << 40)) * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 51) & (SLOTS - 1);
}

static uint32_t lookup_icount(struct vcpu_count *v, uint64_t pc, uint32_t size)
{
	uint16_t gen = (uint16_t)v->generation;
	int cacheable = (int64_t)pc < 0;            /* kernel half of the address space */
	uint32_t i = slot_of(pc, size), free_slot = SLOTS;
	uc_tb tb;

	if (cacheable) {
		for (int p = 0; p < PROBES; p++, i = (i + 1) & (SLOTS - 1)) {
			struct slot *s = &v->slots[i];
			if (s->gen == gen && s->pc == pc && s->size == size)
				return s->icount;
			if (s->gen != gen && free_slot == SLOTS)
				free_slot = i;
		}
	}
	v->misses++;
	if (v->ctl(v->uc, CTL_REQUEST_CACHE, pc, &tb) != 0 || tb.pc != pc || tb.size != size || !tb.icount) {
		v->unknown++;
		return 1;
	}
	if (cacheable) {
		if (free_slot == SLOTS)
			free_slot = slot_of(pc, size);      /* evict the first candidate */
		v->slots[free_slot] = (struct slot){ pc, size, tb.icount, gen };
	}
	return tb.icount;
}

void ftemu_count_block(void *uc, uint64_t pc, uint32_t size, void *user)
{
	struct vcpu_count *v = user;
	uint32_t n;

	if (v->stop) {
		v->stopped = 1;
		v->emu_stop(uc);
		return;
	}
	n = lookup_icount(v, pc, size);
	if (v->budget && v->ran && v->ran + n > v->budget) {
		v->stopped = 1;
		v->emu_stop(uc);
		return;
	}
	v->ran += n;
	v->block_pc = pc;
	v->block_size = size;
	v->block_icount = n;
}
