// struct pt_regs (x86-64 Linux layout) and its offsets for the entry assembly.
#ifndef TRAPS_H
#define TRAPS_H

// Offsets into struct pt_regs, shared with entry.S
#define PT_R15      0
#define PT_R14      8
#define PT_R13      16
#define PT_R12      24
#define PT_BP       32
#define PT_BX       40
#define PT_R11      48
#define PT_R10      56
#define PT_R9       64
#define PT_R8       72
#define PT_AX       80
#define PT_CX       88
#define PT_DX       96
#define PT_SI       104
#define PT_DI       112
#define PT_ORIG_AX  120
#define PT_IP       128
#define PT_CS       136
#define PT_FLAGS    144
#define PT_SP       152
#define PT_SS       160
#define PT_SIZE     168

// Page fault error code bits
#define PF_PROT     0x1
#define PF_WRITE    0x2
#define PF_USER     0x4

#ifndef __ASSEMBLER__
#include "types.h"

struct pt_regs {
	u64 r15, r14, r13, r12, bp, bx;         // callee-saved
	u64 r11, r10, r9, r8, ax, cx, dx, si, di;
	u64 orig_ax;    // syscall number, error code, or ~vector
	u64 ip, cs, flags, sp, ss;              // the CPU's interrupt frame
};

_Static_assert(offsetof(struct pt_regs, orig_ax) == PT_ORIG_AX, "PT_ORIG_AX");
_Static_assert(offsetof(struct pt_regs, ss) == PT_SS, "PT_SS");
_Static_assert(sizeof(struct pt_regs) == PT_SIZE, "PT_SIZE");

static inline int user_mode(struct pt_regs *regs)
{
	return (regs->cs & 3) == 3;
}
#endif

#endif
