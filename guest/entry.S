// Kernel entry points: boot CPU, secondary CPUs, exceptions, interrupts, NMI, syscall.
//
// Register contract: every entry builds a struct pt_regs (traps.h) on the kernel stack,
// swaps GS when it came from user mode (CS & 3), calls ct_user_exit() so RCU watches,
// and hands %rdi = regs (and %rsi = error code / syscall nr / vector) to a C function.
// Interrupts stay off in the stubs; C code decides when to enable them.
#include "memlayout.h"
#include "traps.h"

#define MSR_GS_BASE 0xc0000101
#define ENOSYS 38

	.section .note.GNU-stack, "", @progbits
	.text

.macro PUSH_REGS
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %rcx
	pushq %rax
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %rbx
	pushq %rbp
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
.endm

.macro POP_REGS
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbp
	popq %rbx
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rax
	popq %rcx
	popq %rdx
	popq %rsi
	popq %rdi
.endm

// From user mode: switch to the kernel GS, end the frame-pointer chain, let RCU watch.
.macro ENTER_FROM_USER_IF_NEEDED
	testb $3, PT_CS(%rsp)
	jz 1f
	swapgs
	xorl %ebp, %ebp
	call ct_user_exit
1:
.endm

.macro FUNC name
	.globl \name
	.type \name, @function
\name:
.endm

// ---- boot CPU ---------------------------------------------------------------
// The loader enters here: 64-bit, CPL0, IF=0, loader page tables, RDI = BOOT_PARAMS_PA.
FUNC _start
	cli
	leaq idle_stacks+KSTACK_SIZE(%rip), %rsp
	xorl %ebp, %ebp
	movq %rdi, %r12
	xorl %edi, %edi
	movl $1, %esi
	call percpu_early_init          // GS base -> percpu[0], current = swapper/0
	movq %r12, %rdi
	call main
1:	hlt
	jmp 1b

// ---- secondary CPUs -----------------------------------------------------------
// Started by INIT + STARTUP: RSP = its idle stack top, CR3 = kernel_pml4, RDI = APIC id.
// First our GDT, TSS, GS base and IDT (prepared by cpu_up), so that an NMI can be
// taken as early as possible: until the lidt, one would be fatal.
FUNC secondary_startup_64
	cli
	movl %edi, %r12d
	lgdt ap_gdt_descr(%rip)
	movl $TSS_SEL, %eax
	ltr %ax
	movl %r12d, %eax
	imulq $PCPU_SIZE, %rax
	leaq percpu(%rip), %rdx
	addq %rdx, %rax
	movq %rax, %rdx
	shrq $32, %rdx
	movl $MSR_GS_BASE, %ecx
	wrmsr
	lidt idt_descr(%rip)
	xorl %ebp, %ebp
	call secondary_percpu_early     // GS base, current = swapper/N, RCU not watching
	movl %r12d, %edi
	call start_secondary
	ud2

// ---- ftrace site target: a plain return until the host patches sites -------------
FUNC __fentry__
	ret

// sti; hlt: the interrupt that ends the hlt returns right after it.
FUNC arch_safe_halt
	sti
	hlt
	ret

// An offline CPU parks here until INIT + STARTUP.
FUNC play_dead
	cli
1:	hlt
	jmp 1b

// ---- exceptions ---------------------------------------------------------------------
.macro IDTENTRY name, cfunc, has_err
FUNC \name
	.if \has_err == 0
	pushq $-1
	.endif
	PUSH_REGS
	cld
	ENTER_FROM_USER_IF_NEEDED
	movq %rsp, %rdi
	movq PT_ORIG_AX(%rsp), %rsi
	call \cfunc
	jmp ret_from_intr
.endm

IDTENTRY asm_exc_divide_error,        do_divide_error,        0
IDTENTRY asm_exc_int3,                do_int3,                0
IDTENTRY asm_exc_invalid_op,          do_invalid_op,          0
IDTENTRY asm_exc_general_protection,  do_general_protection,  1
IDTENTRY asm_exc_page_fault,          do_page_fault,          1

// Vectors without a handler of their own: do_unknown_exception(regs, vector) panics.
.macro UNKNOWN_EXC v, has_err
FUNC asm_exc_unknown_\v
	.if \has_err == 0
	pushq $-1
	.endif
	PUSH_REGS
	cld
	ENTER_FROM_USER_IF_NEEDED
	movq %rsp, %rdi
	movl $\v, %esi
	call do_unknown_exception
	jmp ret_from_intr
.endm
.irp v, 1, 4, 5, 7, 9, 15, 16, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 31
UNKNOWN_EXC \v, 0
.endr
.irp v, 10, 11, 12, 17, 21, 29, 30
UNKNOWN_EXC \v, 1
.endr

// Paranoid entry (NMI, #DF): may interrupt kernel code that has not swapped GS yet,
// so look at the GS base itself (kernel bases are negative). %ebx = 1 if we swapped.
.macro PARANOID_ENTRY
	PUSH_REGS
	cld
	movl $MSR_GS_BASE, %ecx
	rdmsr
	xorl %ebx, %ebx
	testl %edx, %edx
	js 1f
	swapgs
	movl $1, %ebx
1:	testb $3, PT_CS(%rsp)
	jz 2f
	xorl %ebp, %ebp
2:
.endm

FUNC asm_exc_nmi
	pushq $-1
	PARANOID_ENTRY
	movq %rsp, %rdi
	call exc_nmi
	testl %ebx, %ebx
	jz 1f
	swapgs
1:	POP_REGS
	addq $8, %rsp
	iretq

FUNC asm_exc_double_fault
	PARANOID_ENTRY
	movq %rsp, %rdi
	movq PT_ORIG_AX(%rsp), %rsi
	call do_double_fault
	ud2

// ---- interrupts: orig_ax = ~vector ---------------------------------------------------
.macro IRQENTRY name, cfunc, vector
FUNC \name
	pushq $~\vector
	PUSH_REGS
	cld
	ENTER_FROM_USER_IF_NEEDED
	movq %rsp, %rdi
	call \cfunc
	jmp ret_from_intr
.endm

IRQENTRY asm_sysvec_apic_timer_interrupt, sysvec_apic_timer_interrupt, LOCAL_TIMER_VECTOR
IRQENTRY asm_sysvec_reschedule_ipi,       sysvec_reschedule_ipi,       RESCHEDULE_VECTOR
IRQENTRY asm_sysvec_call_function,        sysvec_call_function,        CALL_FUNCTION_VECTOR
IRQENTRY asm_sysvec_spurious,             sysvec_spurious,             SPURIOUS_VECTOR

// ---- the common return path ----------------------------------------------------------
// %rsp = pt_regs. To kernel: preempt if preempt_count == 0, the interrupted code had
// interrupts on, and need_resched. To user: exit work, RCU stops watching, swapgs, iretq.
FUNC ret_from_intr
	cli
	testb $3, PT_CS(%rsp)
	jnz ret_to_user
	cmpl $0, %gs:PCPU_PREEMPT_COUNT
	jnz restore_kernel
	btq $9, PT_FLAGS(%rsp)
	jnc restore_kernel
	movq %gs:PCPU_CURRENT, %rax
	btq $TIF_NEED_RESCHED, TASK_FLAGS(%rax)
	jnc restore_kernel
	call preempt_schedule_irq
restore_kernel:
	POP_REGS
	addq $8, %rsp
	iretq

FUNC ret_to_user
	movq %rsp, %rdi
	call exit_to_user_mode_prepare
	call ct_user_enter
	POP_REGS
	addq $8, %rsp
	swapgs
	iretq

// ret_to_user_regs(regs): leave a kernel thread turned user task (exec) through regs.
FUNC ret_to_user_regs
	movq %rdi, %rsp
	cli
	jmp ret_to_user

// A new task's first switch_to returns here with %rax = prev. Kernel threads have
// %r12 = fn, %rbx = arg; user tasks have %r12 = 0 and %rsp = their pt_regs.
FUNC ret_from_fork
	movq %rax, %rdi
	call schedule_tail
	testq %r12, %r12
	jz 1f
	movq %rbx, %rdi
	call *%r12
	movl %eax, %edi
	call do_exit
	ud2
1:	cli
	jmp ret_to_user

// ---- system calls ------------------------------------------------------------------------
// syscall: RCX = user RIP, R11 = user RFLAGS, RAX = nr, args in RDI RSI RDX R10 R8 R9;
// FMASK has cleared IF. Returns with sysretq (RCX/R11 reloaded from pt_regs).
FUNC entry_SYSCALL_64
	swapgs
	movq %rsp, %gs:PCPU_USER_RSP
	movq %gs:PCPU_KSTACK_TOP, %rsp
	pushq $USER_DS                  // ss
	pushq %gs:PCPU_USER_RSP         // sp
	pushq %r11                      // flags
	pushq $USER_CS                  // cs
	pushq %rcx                      // ip
	pushq %rax                      // orig_ax = syscall number
	PUSH_REGS
	movq $-ENOSYS, PT_AX(%rsp)
	xorl %ebp, %ebp
	cld
	call ct_user_exit
	movq %rsp, %rdi
	movq PT_ORIG_AX(%rsp), %rsi
	call do_syscall_64              // stores the result in regs->ax
	cli
	movq %rsp, %rdi
	call exit_to_user_mode_prepare
	call ct_user_enter
	POP_REGS                        // %rsp -> orig_ax
	movq 8(%rsp), %rcx              // ip
	movq 24(%rsp), %r11             // flags
	movq 32(%rsp), %rsp             // sp
	swapgs
	sysretq

// ---- table of the unknown-exception stubs: (vector, stub) pairs, -1 ends ----------------
	.section .rodata
	.balign 8
	.globl exc_unknown_stubs
exc_unknown_stubs:
.irp v, 1, 4, 5, 7, 9, 10, 11, 12, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	.quad \v, asm_exc_unknown_\v
.endr
	.quad -1, 0
