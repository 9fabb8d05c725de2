// Faults on demand, for the host's crash-report tests (called through Machine.call):
// each one dies the way a buggy kernel function would, in a frame of its own (noipa:
// gcc may neither inline them nor move their loads into the caller).
#include "types.h"
#include "defs.h"
#include "x86.h"

__attribute__((noipa)) int crash_divide(int a, int b)
{
	return a / b;                           // b = 0: #DE
}

static __attribute__((noipa)) u64 crash_load(u64 *p)
{
	return *p + 1;                          // an unmapped p: #PF here, in the callee
}

__attribute__((noipa)) u64 crash_fault_in_callee(u64 addr)
{
	return crash_load((u64 *)addr) * 2;
}

__attribute__((noipa)) void crash_invalid_op(void)
{
	__asm__ volatile("ud2");
}

// An empty IDT, then #UD: #GP, #DF and the triple fault follow.
__attribute__((noipa)) void crash_triple_fault(void)
{
	lidt(NULL, 1);                          // limit 0: no gate at all
	__asm__ volatile("ud2");
}
