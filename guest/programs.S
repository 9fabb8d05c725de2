// The user programs (flat binaries linked at USER_CODE_VA), embedded in the kernel.
	.section .note.GNU-stack, "", @progbits

.macro UPROG name
	.section .rodata.uprog, "a"
	.balign 16
uprog_\name\()_start:
	.incbin "\name\().bin"
uprog_\name\()_end:
	.section .rodata.uprog_names, "a"
uprog_\name\()_name:
	.asciz "\name"
.endm

UPROG init
UPROG ping
UPROG pong
UPROG faulter
UPROG ioport
UPROG call_getpid

	.section .rodata
	.balign 8
	.globl uprog_table
uprog_table:
	.quad uprog_init_name, uprog_init_start, uprog_init_end
	.quad uprog_ping_name, uprog_ping_start, uprog_ping_end
	.quad uprog_pong_name, uprog_pong_start, uprog_pong_end
	.quad uprog_faulter_name, uprog_faulter_start, uprog_faulter_end
	.quad uprog_ioport_name, uprog_ioport_start, uprog_ioport_end
	.quad uprog_call_getpid_name, uprog_call_getpid_start, uprog_call_getpid_end
	.quad 0, 0, 0
