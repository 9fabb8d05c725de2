// switch_to(prev, next): save callee-saved registers on prev's stack, load next's.
// Returns prev in %rax (as seen by next). A new task's saved frame returns to ret_from_fork.
#include "task.h"

	.section .note.GNU-stack, "", @progbits
	.text
	.globl switch_to
	.type switch_to, @function
switch_to:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, TASK_THREAD_SP(%rdi)
	movq TASK_THREAD_SP(%rsi), %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	movq %rdi, %rax
	ret
