// System call stubs for user programs, and _start (placed first at USER_CODE_VA).
#include "../memlayout.h"

	.section .note.GNU-stack, "", @progbits

	.section .text.start, "ax"
	.globl _start
_start:
	xorl %ebp, %ebp
	call main
	movl %eax, %edi
	call exit
1:	jmp 1b

	.text
.macro SYSCALL_STUB name, nr
	.globl \name
	.type \name, @function
\name:
	movl $\nr, %eax
	movq %rcx, %r10
	syscall
	ret
.endm

SYSCALL_STUB write, SYS_write
SYSCALL_STUB sched_yield, SYS_sched_yield
SYSCALL_STUB nanosleep, SYS_nanosleep
SYSCALL_STUB getpid, SYS_getpid
SYSCALL_STUB exit, SYS_exit
SYSCALL_STUB cmdline, SYS_cmdline
SYSCALL_STUB cpu_down, SYS_cpu_down
SYSCALL_STUB cpu_up, SYS_cpu_up
SYSCALL_STUB sem_up, SYS_sem_up
SYSCALL_STUB sem_down, SYS_sem_down
SYSCALL_STUB spawn, SYS_spawn
