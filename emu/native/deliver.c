/* ftemu's interrupt and exception delivery in C: emu/trap.py's common case without Python,
 * and the SYSCALL instruction (which Unicorn leaves to a hook) likewise.
 *
 * Unicorn never vectors through the IDT; emu/trap.py does what a 64-bit CPU does, through
 * context copies and Python page walks (about 11 us: a tenth of a busy guest's 1 ms tick).
 * This file does the same steps on the engine's live CPU state (the CPUX86State that
 * uc_context_restore memcpys into, so writing it is what a context restore of the changed
 * fields would do) and on guest RAM:
 *   read the gate (IDT limit, present bit, DPL for software interrupts), pick the stack
 *   (an IST slot, TSS.RSP0..2 on a privilege change, else the current one), align it, push
 *   [error code,] RIP, CS, RFLAGS, RSP, SS, clear TF/NT/RF/VM (and IF for an interrupt gate),
 *   load CS/SS with their hidden state and the CPL on a privilege change, and set
 *   old_exception to -1 (no exception in progress).
 * Every read happens before any write. Anything unusual (a gate out of the limit, not
 * present or of a type long mode lacks, an unmapped IDT, TSS, stack or GDT entry, a failed
 * DPL check) changes nothing and
 * returns FTEMU_SLOW: the host then runs trap.py's path, which raises the right fault and
 * escalates to #DF or a triple fault exactly as before.
 *
 * No Unicorn header: the offsets mirror emu/ucx.py's (CR3's is probed when the Python side
 * attaches) and uc_reg_read is handed in as a pointer (RFLAGS must be computed
 * from QEMU's lazy condition codes, which only the engine knows how to do).
 */
#include <stdint.h>
#include <string.h>

typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);
typedef void (*host_fn)(void);

enum { FTEMU_DELIVERED = 0, FTEMU_SLOW = 1 };

/* Offsets in CPUX86State (emu/ucx.py's CTX_* minus its CTX_HDR). */
#define ENV_REGS        0
#define ENV_RIP         128
#define ENV_EFLAGS      136
#define ENV_CC_SRC      152             /* QEMU's lazy arithmetic flags: with cc_op */
#define ENV_CC_OP       168             /* CC_OP_EFLAGS, cc_src holds them as they are */
#define ENV_DF          172             /* int32: 1 or -1 */
#define ENV_HFLAGS      176
#define ENV_SEGS        184             /* SegmentCache[6]: u32 sel, pad, u64 base, u32 limit, u32 flags */
#define ENV_TR_BASE     360
#define ENV_GDT_BASE    384
#define ENV_IDT_BASE    408
#define ENV_IDT_LIMIT   416
#define ENV_CR3         448
#define SEG_SIZE        24
#define R_CS 1
#define R_SS 2
#define REG_RCX 1
#define REG_RSP 4
#define REG_R11 11

#define PTE_P   1ull
#define PTE_PS  0x80ull
#define ADDR_MASK 0x000FFFFFFFFFF000ull
#define RFLAGS_TF (1u << 8)
#define RFLAGS_IF (1u << 9)
#define RFLAGS_DF (1u << 10)
#define RFLAGS_ARITH 0x8D5u             /* CF PF AF ZF SF OF */
#define CC_OP_EFLAGS 1
#define RFLAGS_NT (1u << 14)
#define RFLAGS_RF (1u << 16)
#define RFLAGS_VM (1u << 17)
#define GATE_INTR 0xE
/* What SYSCALL loads into CS and SS whatever the GDT holds (VCpu._on_syscall's): flat 64-bit
 * code and flat data, DPL 0, present, accessed, limit FFFFF pages. */
#define SYSCALL_CS_FLAGS 0x00AF9B00u
#define SYSCALL_SS_FLAGS 0x00CF9300u
#define DESC_DPL_SHIFT 13

/* The layout is mirrored by emu/trap.py (_TrapCpu): keep them in step. */
struct trap_cpu {
	uint8_t *env;           /* the engine's CPUX86State */
	uint8_t *ram;           /* guest physical memory */
	uint64_t ram_size;
	int64_t old_exc;        /* offset of env->old_exception */
	void *uc;
	uc_reg_read_fn reg_read;
	int64_t eflags_reg;     /* UC_X86_REG_EFLAGS */
	uint64_t boot_gdt_pa;   /* the loader's GDT, addressed physically (as trap.py does) */
	uint64_t errcode_vectors;       /* bit v: vector v pushes an error code */
	uint64_t delivered;     /* vectors delivered here */
	uint64_t slow;          /* left to the host */
	/* SYSCALL: the MSRs as the host first read them (msr_valid), the host's own path for
	 * everything else (the first syscall, an unreadable instruction), and hooks_off: the
	 * rest of a refused in/out's block is running, whose hooks are ignored (_io_fault). */
	uint64_t star, lstar, fmask;
	uint32_t msr_valid;
	uint32_t hooks_off;
	host_fn syscall_host;
	uint64_t syscalls;      /* done here */
};

#define U64(p) (*(uint64_t *)(p))
#define U32(p) (*(uint32_t *)(p))

/* Physical address of `va` under the 4-level tables at `cr3`, or -1 (trap.py's PageWalker:
 * canonical address, present bits, 1 GiB and 2 MiB pages, tables inside RAM). */
static int64_t translate(const struct trap_cpu *t, uint64_t cr3, uint64_t va)
{
	uint64_t table = cr3 & ADDR_MASK, e = 0;
	uint64_t top = va >> 47;

	if (top != 0 && top != 0x1FFFF)
		return -1;
	for (int shift = 39; shift >= 12; shift -= 9) {
		uint64_t off = table + ((va >> shift) & 511) * 8;
		if (off + 8 > t->ram_size)
			return -1;
		e = U64(t->ram + off);
		if (!(e & PTE_P))
			return -1;
		if ((shift == 30 || shift == 21) && (e & PTE_PS)) {
			uint64_t mask = (1ull << shift) - 1;
			return (int64_t)((e & ADDR_MASK & ~mask) | (va & mask));
		}
		table = e & ADDR_MASK;
	}
	return (int64_t)(table | (va & 0xFFF));
}

/* Where each byte of [va, va + n) lives (n <= 64, at most two pages); 0 if any is unmapped
 * or outside RAM. */
struct span { uint8_t *p[2]; uint32_t first; };

static int map_span(const struct trap_cpu *t, uint64_t cr3, uint64_t va, uint32_t n, struct span *s)
{
	uint32_t in_page = 0x1000 - (uint32_t)(va & 0xFFF);
	int64_t pa = translate(t, cr3, va);

	s->first = n < in_page ? n : in_page;
	if (pa < 0 || (uint64_t)pa + s->first > t->ram_size)
		return 0;
	s->p[0] = t->ram + pa;
	s->p[1] = NULL;
	if (s->first < n) {
		pa = translate(t, cr3, va + s->first);
		if (pa < 0 || (uint64_t)pa + (n - s->first) > t->ram_size)
			return 0;
		s->p[1] = t->ram + pa;
	}
	return 1;
}

static void span_copy_out(const struct span *s, void *dst, uint32_t n)
{
	memcpy(dst, s->p[0], s->first);
	if (n > s->first)
		memcpy((uint8_t *)dst + s->first, s->p[1], n - s->first);
}

static void span_copy_in(const struct span *s, const void *src, uint32_t n)
{
	memcpy(s->p[0], src, s->first);
	if (n > s->first)
		memcpy(s->p[1], (const uint8_t *)src + s->first, n - s->first);
}

static int read_virt(const struct trap_cpu *t, uint64_t cr3, uint64_t va, void *dst, uint32_t n)
{
	struct span s;

	if (!map_span(t, cr3, va, n, &s))
		return 0;
	span_copy_out(&s, dst, n);
	return 1;
}

/* The hidden flags (descriptor high dword) of GDT selector `sel`. */
static int descriptor_flags(const struct trap_cpu *t, uint64_t cr3, uint32_t sel, uint32_t *flags)
{
	uint64_t gdt = U64(t->env + ENV_GDT_BASE), at = gdt + (sel & ~7u);
	uint32_t d[2];

	if (gdt == t->boot_gdt_pa) {
		if (at + 8 > t->ram_size)
			return 0;
		memcpy(d, t->ram + at, 8);
	} else if (!read_virt(t, cr3, at, d, 8)) {
		return 0;
	}
	*flags = d[1];
	return 1;
}

static void load_flat_segment(uint8_t *seg, uint32_t sel, uint32_t flags)
{
	U32(seg) = sel; U32(seg + 4) = 0; U64(seg + 8) = 0; U32(seg + 16) = 0xFFFFFFFF; U32(seg + 20) = flags;
}

/* Deliver `vector` (with `error` if >= 0 and the vector pushes one; `soft`: an int n, whose
 * gate DPL is checked against the CPL). FTEMU_SLOW: nothing changed, the host must do it. */
int ftemu_deliver(struct trap_cpu *t, uint32_t vector, int64_t error, uint32_t soft)
{
	uint8_t *env = t->env;
	uint64_t cr3 = U64(env + ENV_CR3), rflags = 0, new_rsp, frame[6], *regs = (uint64_t *)(env + ENV_REGS);
	uint8_t gate[16];
	uint32_t cpl = U32(env + ENV_HFLAGS) & 3, cs_flags = 0, n = 0;
	struct span stack;

	if (vector > 255 || vector * 16 + 15 > U32(env + ENV_IDT_LIMIT))
		goto slow;
	if (!read_virt(t, cr3, U64(env + ENV_IDT_BASE) + vector * 16, gate, 16))
		goto slow;
	uint8_t ist = gate[4] & 7, attr = gate[5];     /* bits 3-7 of byte 4 are reserved */
	uint32_t sel = gate[2] | (gate[3] << 8), new_cpl = sel & 3;
	uint64_t handler = gate[0] | (gate[1] << 8) | ((uint64_t)(gate[6] | (gate[7] << 8)) << 16)
			   | ((uint64_t)U32(gate + 8) << 32);
	if (!(attr & 0x80) || (attr & 0xE) != GATE_INTR || (soft && ((attr >> 5) & 3) < cpl))
		goto slow;      /* not present, not a 64-bit interrupt/trap gate, DPL < CPL */
	if (t->reg_read(t->uc, (int)t->eflags_reg, &rflags) != 0)
		goto slow;

	uint64_t tss = U64(env + ENV_TR_BASE), rsp = regs[REG_RSP];
	if (ist) {
		if (!read_virt(t, cr3, tss + 0x24 + 8 * (uint64_t)(ist - 1), &new_rsp, 8))
			goto slow;
	} else if (new_cpl != cpl) {
		if (!read_virt(t, cr3, tss + 4 + 8 * (uint64_t)new_cpl, &new_rsp, 8))
			goto slow;
	} else {
		new_rsp = rsp;
	}
	new_rsp &= ~0xFull;
	if (error >= 0 && vector < 64 && (t->errcode_vectors >> vector & 1) && !soft)
		frame[n++] = (uint64_t)error;
	frame[n++] = U64(env + ENV_RIP);
	frame[n++] = U32(env + ENV_SEGS + SEG_SIZE * R_CS);
	frame[n++] = rflags;
	frame[n++] = rsp;
	frame[n++] = U32(env + ENV_SEGS + SEG_SIZE * R_SS);
	new_rsp -= 8 * n;
	if (!map_span(t, cr3, new_rsp, 8 * n, &stack))
		goto slow;
	if (new_cpl != cpl && !descriptor_flags(t, cr3, sel, &cs_flags))
		goto slow;

	/* Everything is known: from here on nothing can fail. */
	span_copy_in(&stack, frame, 8 * n);
	regs[REG_RSP] = new_rsp;
	U64(env + ENV_RIP) = handler;
	uint64_t clear = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
			 | ((attr & 0xF) == GATE_INTR ? RFLAGS_IF : 0);
	U64(env + ENV_EFLAGS) &= ~clear;
	if (new_cpl != cpl) {
		uint8_t *cs = env + ENV_SEGS + SEG_SIZE * R_CS, *ss = env + ENV_SEGS + SEG_SIZE * R_SS;
		load_flat_segment(cs, sel, cs_flags);
		U32(ss) = 0; U32(ss + 4) = 0; U64(ss + 8) = 0; U32(ss + 16) = 0;
		U32(ss + 20) = new_cpl << DESC_DPL_SHIFT;
		U32(env + ENV_HFLAGS) = (U32(env + ENV_HFLAGS) & ~3u) | new_cpl;
	}
	*(int32_t *)(env + t->old_exc) = -1;
	t->delivered++;
	return FTEMU_DELIVERED;
slow:
	t->slow++;
	return FTEMU_SLOW;
}

/* The length of the SYSCALL at `rip`: any prefixes (legacy, REX), then 0F 05; 0 if
 * unreadable. Unicorn adds it to RIP after the hook (VCpu._syscall_length). */
static uint32_t syscall_length(const struct trap_cpu *t, uint64_t cr3, uint64_t rip)
{
	for (uint32_t i = 0; i < 14; i++) {
		uint8_t b;

		if (!read_virt(t, cr3, rip + i, &b, 1))
			return 0;
		if (b == 0x0F)
			return i + 2;
	}
	return 0;
}

/* The UC_HOOK_INSN(SYSCALL) callback: what VCpu._on_syscall does, on the live CPU state.
 * RCX = the next RIP, R11 = RFLAGS, RFLAGS &= ~FMASK, CS/SS from STAR[47:32] at CPL 0 with
 * the fixed flat state SYSCALL loads (the GDT is not read), RIP = LSTAR (less the
 * instruction's length, which Unicorn adds after this hook). */
void ftemu_syscall(void *uc, struct trap_cpu *t)
{
	uint8_t *env = t->env;
	uint64_t rflags = 0, *regs = (uint64_t *)(env + ENV_REGS), cr3 = U64(env + ENV_CR3);
	uint32_t ksel = (uint32_t)(t->star >> 32) & 0xFFFF, len = 0;

	(void)uc;
	if (t->hooks_off)
		return;
	if (!t->msr_valid || t->reg_read(t->uc, (int)t->eflags_reg, &rflags) != 0
	    || !(len = syscall_length(t, cr3, U64(env + ENV_RIP)))) {
		t->syscall_host();
		return;
	}
	regs[REG_RCX] = U64(env + ENV_RIP) + len;
	regs[REG_R11] = rflags;
	U64(env + ENV_EFLAGS) &= ~t->fmask;
	if (t->fmask & RFLAGS_ARITH) {
		U64(env + ENV_CC_SRC) = rflags & RFLAGS_ARITH & ~t->fmask;
		*(uint32_t *)(env + ENV_CC_OP) = CC_OP_EFLAGS;
	}
	if (t->fmask & RFLAGS_DF)
		*(int32_t *)(env + ENV_DF) = 1;
	load_flat_segment(env + ENV_SEGS + SEG_SIZE * R_CS, ksel & ~3u, SYSCALL_CS_FLAGS);
	load_flat_segment(env + ENV_SEGS + SEG_SIZE * R_SS, ksel + 8, SYSCALL_SS_FLAGS);
	U32(env + ENV_HFLAGS) &= ~3u;
	U64(env + ENV_RIP) = t->lstar - len;
	t->syscalls++;
}
