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
 * At every block start it also stores `ran` before that block in `*pvclock`: the vCPU's
 * PCPU_PVCLOCK word in guest RAM, from which host-generated guest code computes the TSC
 * without an rdtsc (slice start + (that word + position in the block) * ns per instruction).
 *
 * No Unicorn header is needed: the two entry points we call are handed in as pointers.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct { uint64_t pc; uint16_t icount; uint16_t size; } uc_tb;
typedef int (*uc_ctl_fn)(void *uc, int ctl, ...);
typedef int (*uc_emu_stop_fn)(void *uc);
typedef uint64_t (*tsc_miss_fn)(void);

#define UC_CTL_TB_REQUEST_CACHE 8
#define UC_CTL_IO_READ_WRITE 3
#define CTL_REQUEST_CACHE ((UC_CTL_IO_READ_WRITE << 30) | (2 << 26) | UC_CTL_TB_REQUEST_CACHE)
#define SLOTS 8192              /* power of two */
#define PROBES 8
#define TSC_SLOTS 1024          /* power of two */

struct slot { uint64_t pc; uint32_t size; uint16_t icount; uint16_t gen; };
struct tsc_slot { uint64_t pc; uint64_t rip; uint16_t offset; uint16_t gen; uint32_t pad; };

/* How rdtsc reads this vCPU's virtual time (VCpu.now; set before every emu_start). */
enum { TSC_PYTHON, TSC_BLOCKS, TSC_COUNTER, TSC_HOST };

/* The layout is mirrored by emu/blockcount.py (_VcpuCount): keep them in step. */
struct vcpu_count {
	uint64_t ran;           /* instructions of the blocks started in this run */
	uint64_t budget;        /* stop before a block that would take ran past this */
	uint32_t stop;          /* set by anyone (another thread too): stop at the next block */
	uint32_t stopped;       /* this hook ended the run (before a block it did not count) */
	uint64_t block_pc;      /* the last block counted, and its size and count */
	uint32_t block_size;
	uint32_t block_icount;
	uint64_t *pvclock;      /* guest-visible: `ran` before the block now running (the
				   vCPU's per-CPU PCPU_PVCLOCK word), else &pvclock_sink */
	uint32_t generation;    /* bumped by ftemu_count_invalidate */
	uint32_t pad;
	uint64_t misses;        /* blocks whose count was looked up in Unicorn's cache */
	uint64_t unknown;       /* blocks Unicorn could not describe (counted as 1 each) */
	void *uc;
	uc_ctl_fn ctl;
	uc_emu_stop_fn emu_stop;
	/* rdtsc: virtual time = tsc_base + instructions retired in this run * ns_per_insn */
	uint32_t tsc_mode;      /* TSC_* */
	uint32_t ns_per_insn;
	uint64_t tsc_base;      /* ns at the start of this run (the slice's start) */
	uint64_t host_start;    /* TSC_HOST: CLOCK_MONOTONIC ns at the slice's start */
	uint64_t *env;          /* the CPU state: regs[16] (rax rcx rdx ...), then rip */
	uint64_t *counter;      /* TSC_COUNTER: Unicorn's count= counter of this run */
	tsc_miss_fn miss;       /* the host's answer where this file has none (VCpu.now) */
	uint64_t tsc_native;    /* rdtsc answered here */
	uint64_t tsc_host;      /* rdtsc answered by `miss` */
	uint64_t pvclock_sink;
	struct slot slots[SLOTS];
	struct tsc_slot tsc_slots[TSC_SLOTS];
};

/* A code hook that never runs (bound to address 0): with it, a Python code hook is never the
 * only UC_HOOK_CODE, which Unicorn 2.1.4 would call directly from the translated block; after
 * hook_del that block would call a freed callback. With two, it goes through a helper that
 * skips deleted hooks. (count= gets the same from its own counting hook.) The benchmarks also
 * use it as a do-nothing block hook (same signature). */
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
		memset(v->tsc_slots, 0, sizeof(v->tsc_slots));
		v->generation = 1;
	}
}

static inline uint32_t slot_of(uint64_t pc, uint32_t size)
{
	/* Cheap on purpose: it is on every block's path, before the slot's load (a multiplying
	 * hash measured 3-4% slower on a busy guest; collisions go to the probing slow path). */
	return (uint32_t)(pc ^ (pc >> 13) ^ size) & (SLOTS - 1);
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

static inline void count(struct vcpu_count *v, uint64_t pc, uint32_t size, uint32_t n)
{
	*v->pvclock = v->ran;
	v->ran += n;
	v->block_pc = pc;
	v->block_size = size;
	v->block_icount = n;
}

/* Everything but a block found at its first slot within the budget (a stop request zeroes
 * the budget, so it comes here too). */
static __attribute__((noinline)) void count_block_slow(void *uc, uint64_t pc, uint32_t size,
						       struct vcpu_count *v)
{
	uint32_t n;

	if (v->stop) {
		v->stopped = 1;
		v->emu_stop(uc);
		return;
	}
	n = lookup_icount(v, pc, size);
	if (v->ran && v->ran + n > v->budget) {     /* the first block always runs */
		v->stopped = 1;
		v->emu_stop(uc);
		return;
	}
	count(v, pc, size, n);
}

/* Called at every block start, so the common case is a handful of instructions: the block's
 * count at its first slot, within the budget (no budget is UINT64_MAX). */
void ftemu_count_block(void *uc, uint64_t pc, uint32_t size, void *user)
{
	struct vcpu_count *v = user;
	struct slot *s = &v->slots[slot_of(pc, size)];

	if (__builtin_expect(s->pc == pc && s->size == size && s->gen == (uint16_t)v->generation
			     && v->ran + s->icount <= v->budget, 1)) {
		count(v, pc, size, s->icount);
		return;
	}
	count_block_slow(uc, pc, size, v);
}

/* Stop at the next block start. The budget goes to 0 as well, so that the common case above
 * needs no test of `stop`: from a hook, or from another thread (either store is enough). */
void ftemu_count_request_stop(struct vcpu_count *v)
{
	v->stop = 1;
	v->budget = 0;
}

/* ---- rdtsc ------------------------------------------------------------------------------
 * The UC_HOOK_INSN(rdtsc) callback: the value VCpu.now() would give, without leaving C.
 * Unicorn syncs env->eip to the rdtsc before calling it. Inside a counted block, the
 * instructions before it are the block's count minus its own, plus the rdtsc's position in
 * the block: found by the host once (decoding the block) and remembered here by (block pc,
 * rip) for kernel addresses, under the same generation as block counts, so any code change
 * forgets them. A user-space rdtsc, an unknown position, or a mode this file does not
 * compute goes to the host (`miss`), which gives the same value the slow way.
 */
static inline uint32_t tsc_slot_of(uint64_t pc, uint64_t rip)
{
	uint64_t h = (pc ^ (rip << 17)) * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 54) & (TSC_SLOTS - 1);
}

/* The host found that the instruction at `rip` is the `offset`-th of the block at `pc`. */
void ftemu_tsc_learn(struct vcpu_count *v, uint64_t pc, uint64_t rip, uint32_t offset)
{
	uint16_t gen = (uint16_t)v->generation;
	uint32_t i = tsc_slot_of(pc, rip);

	if ((int64_t)pc >= 0 || offset > 0xFFFF)
		return;
	for (int p = 0; p < PROBES; p++, i = (i + 1) & (TSC_SLOTS - 1)) {
		if (v->tsc_slots[i].gen != gen) {
			v->tsc_slots[i] = (struct tsc_slot){ pc, rip, (uint16_t)offset, gen, 0 };
			return;
		}
	}
	v->tsc_slots[tsc_slot_of(pc, rip)] = (struct tsc_slot){ pc, rip, (uint16_t)offset, gen, 0 };
}

static int tsc_offset(struct vcpu_count *v, uint64_t pc, uint64_t rip, uint32_t *offset)
{
	uint16_t gen = (uint16_t)v->generation;
	uint32_t i = tsc_slot_of(pc, rip);

	if ((int64_t)pc >= 0)
		return 0;
	for (int p = 0; p < PROBES; p++, i = (i + 1) & (TSC_SLOTS - 1)) {
		struct tsc_slot *s = &v->tsc_slots[i];
		if (s->gen == gen && s->pc == pc && s->rip == rip) {
			*offset = s->offset;
			return 1;
		}
	}
	return 0;
}

static int tsc_now(struct vcpu_count *v, uint64_t *tsc)
{
	uint64_t rip, n, c;
	uint32_t offset;
	struct timespec ts;

	switch (v->tsc_mode) {
	case TSC_BLOCKS:
		rip = v->env[16];
		n = v->ran;
		if (v->block_icount && v->block_pc <= rip && rip < v->block_pc + v->block_size) {
			if (!tsc_offset(v, v->block_pc, rip, &offset))
				return 0;
			n = n - v->block_icount + offset;
		}
		*tsc = v->tsc_base + n * v->ns_per_insn;
		return 1;
	case TSC_COUNTER:
		c = *v->counter;
		*tsc = v->tsc_base + (c ? c - 1 : 0) * v->ns_per_insn;
		return 1;
	case TSC_HOST:
		clock_gettime(CLOCK_MONOTONIC, &ts);
		*tsc = v->tsc_base + ((uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec) - v->host_start;
		return 1;
	}
	return 0;
}

uint32_t ftemu_rdtsc(void *uc, void *user)
{
	struct vcpu_count *v = user;
	uint64_t tsc;

	(void)uc;
	if (tsc_now(v, &tsc)) {
		v->tsc_native++;
	} else {
		v->tsc_host++;
		tsc = v->miss();
	}
	v->env[0] = tsc & 0xFFFFFFFFu;          /* rax */
	v->env[2] = tsc >> 32;                  /* rdx */
	return 1;                               /* done: Unicorn's own rdtsc is skipped */
}
