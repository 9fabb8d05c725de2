// The IDT and the exception handlers (#DE #BP #UD #GP #PF #DF and the rest).
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "mmu.h"
#include "percpu.h"
#include "task.h"
#include "traps.h"

static struct gatedesc idt[256] __aligned(16);

extern char asm_exc_divide_error[], asm_exc_int3[], asm_exc_invalid_op[];
extern char asm_exc_general_protection[], asm_exc_page_fault[], asm_exc_double_fault[];
extern char asm_exc_nmi[], asm_sysvec_apic_timer_interrupt[], asm_sysvec_reschedule_ipi[];
extern char asm_sysvec_call_function[], asm_sysvec_spurious[];
extern const u64 exc_unknown_stubs[];   // entry.S: (vector, stub) pairs, vector -1 ends

static void set_gate(int vec, void *fn, int ist, int dpl)
{
	u64 a = (u64)fn;
	struct gatedesc *g = &idt[vec];

	g->off_lo = a & 0xffff;
	g->sel = KERNEL_CS;
	g->ist = ist;
	g->type_attr = GATE_INTR | (dpl ? GATE_DPL3 : 0);
	g->off_mid = (a >> 16) & 0xffff;
	g->off_hi = a >> 32;
	g->reserved = 0;
}

// 256 interrupt gates, all DPL0 except #BP (int3 may come from user mode). Filled
// before the boot CPU loads it: an NMI taken through an empty table triple-faults.
void idt_init(void)
{
	set_gate(T_NMI, asm_exc_nmi, IST_NMI, 0);
	set_gate(T_DF, asm_exc_double_fault, IST_DF, 0);
	for (int v = 32; v < 256; v++)
		set_gate(v, asm_sysvec_spurious, 0, 0);
	for (const u64 *p = exc_unknown_stubs; p[0] != (u64)-1; p += 2)
		set_gate(p[0], (void *)p[1], 0, 0);
	set_gate(T_DE, asm_exc_divide_error, 0, 0);
	set_gate(T_BP, asm_exc_int3, 0, 1);
	set_gate(T_UD, asm_exc_invalid_op, 0, 0);
	set_gate(T_GP, asm_exc_general_protection, 0, 0);
	set_gate(T_PF, asm_exc_page_fault, 0, 0);
	set_gate(LOCAL_TIMER_VECTOR, asm_sysvec_apic_timer_interrupt, 0, 0);
	set_gate(RESCHEDULE_VECTOR, asm_sysvec_reschedule_ipi, 0, 0);
	set_gate(CALL_FUNCTION_VECTOR, asm_sysvec_call_function, 0, 0);
	set_gate(SPURIOUS_VECTOR, asm_sysvec_spurious, 0, 0);
}

struct desc_ptr idt_descr = { sizeof(idt) - 1, (u64)idt };    // secondary_startup_64

void idt_load(void)
{
	lidt(idt, sizeof(idt));
}

// A user task that faulted: say so on one line and kill it; the kernel goes on.
static void __noreturn kill_task(struct pt_regs *regs, const char *what)
{
	printk("pid %d (%s): %s ip 0x%lx, killed\n", current->pid, current->comm, what, regs->ip);
	do_exit(-1);
}

void do_divide_error(struct pt_regs *regs, long error_code)
{
	if (user_mode(regs))
		kill_task(regs, "divide error");
	panic("divide error at ip %pS", (void *)regs->ip);
}

// The host consumes the int3s it plants before the guest sees them; anything
// arriving here is unexpected.
void do_int3(struct pt_regs *regs, long error_code)
{
	if (user_mode(regs))
		kill_task(regs, "int3");
	panic("int3 at ip %pS", (void *)regs->ip);
}

void do_invalid_op(struct pt_regs *regs, long error_code)
{
	if (user_mode(regs))
		kill_task(regs, "invalid opcode");
	panic("invalid opcode at ip %pS", (void *)regs->ip);
}

void do_general_protection(struct pt_regs *regs, long error_code)
{
	if (user_mode(regs))
		kill_task(regs, "general protection fault");
	panic("general protection fault at ip %pS error 0x%lx", (void *)regs->ip, error_code);
}

void do_page_fault(struct pt_regs *regs, long error_code)
{
	u64 addr = rcr2();
	char what[48];

	kstat_inc(KSTAT_PAGE_FAULTS);
	if (user_mode(regs)) {
		snprintf(what, sizeof(what), "page fault at 0x%lx", addr);
		kill_task(regs, what);
	}
	panic("page fault at 0x%lx ip %pS error 0x%lx", addr, (void *)regs->ip, error_code);
}

void do_double_fault(struct pt_regs *regs, long error_code)
{
	panic("double fault at ip %pS sp 0x%lx", (void *)regs->ip, regs->sp);
}

void do_unknown_exception(struct pt_regs *regs, long vector)
{
	if (user_mode(regs))
		kill_task(regs, "unexpected exception");
	panic("unexpected exception %ld at ip %pS", vector, (void *)regs->ip);
}
