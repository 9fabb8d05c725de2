/* A tiny guest used by the machine's own tests: IDT, timer ticks, int3, a #PF, ring 3 and a
   syscall, then power off with the tick count. Built by the tests with gcc; no ftrace.
   Variants (-D): TRIPLE_FAULT, SPIN, BAD_OPCODE; USER_OUT / USER_IN: ring 3 does port I/O
   on USER_PORT first (a #GP powers off with code 13), allowed by USER_IOPL3 or, for port
   0xe0 only, by IO_BITMAP (a TSS I/O permission bitmap); LIDT_FIRST loads the IDT before
   filling it (NMIs count in nmi_count). */
#ifndef USER_PORT
#define USER_PORT 0xe0
#endif
#include "memlayout.h"
    .code64
    .section .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    /* GDT in Linux's layout, reload CS through a far return */
    lgdt gdt_desc(%rip)
    pushq $KERNEL_CS
    lea 1f(%rip), %rax
    pushq %rax
    lretq
1:  mov $KERNEL_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* TSS descriptor base */
    lea tss(%rip), %rax
    mov %rax, %rbx
    mov %ax, gdt+TSS_SEL+2(%rip)
    shr $16, %rax
    mov %al, gdt+TSS_SEL+4(%rip)
    mov %ah, gdt+TSS_SEL+7(%rip)
    shr $16, %rax
    mov %eax, gdt+TSS_SEL+8(%rip)
    lea kstack_top(%rip), %rax
    mov %rax, 4(%rbx)                 /* rsp0 */
    movw $104, 0x66(%rbx)                /* I/O map base: past the limit, no bitmap */
#ifdef IO_BITMAP
    movw $(104 + 32), gdt+TSS_SEL(%rip)  /* limit: the bitmap of ports 0..255 + 0xff */
    lea 104(%rbx), %rdi
    mov $33, %ecx
    mov $0xff, %al
    rep stosb
    movb $0xfe, 104 + 0xe0 / 8(%rbx)      /* port 0xe0 allowed */
#endif
    mov $TSS_SEL, %ax
    ltr %ax
    /* IDT: every vector -> generic stubs */
#ifdef LIDT_FIRST
    lidt idt_desc(%rip)
#endif
    lea idt(%rip), %rdi
    xor %ecx, %ecx
    .globl idt_fill
idt_fill:
2:  lea vec_default(%rip), %rax
    cmp $2, %ecx
    jne 21f
    lea vec_nmi(%rip), %rax
21: cmp $3, %ecx
    jne 3f
    lea vec_bp(%rip), %rax
3:  cmp $14, %ecx
    jne 4f
    lea vec_pf(%rip), %rax
4:  cmp $13, %ecx
    jne 41f
    lea vec_gp(%rip), %rax
41: cmp $LOCAL_TIMER_VECTOR, %ecx
    jne 5f
    lea vec_timer(%rip), %rax
5:  mov %ax, (%rdi)
    movw $KERNEL_CS, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
    add $16, %rdi
    inc %ecx
    cmp $256, %ecx
    jne 2b
#ifndef LIDT_FIRST
    lidt idt_desc(%rip)
#endif
    /* syscall MSRs */
    mov $0xc0000081, %ecx
    xor %eax, %eax
    mov $((USER32_CS << 16) | KERNEL_CS), %edx
    wrmsr
    mov $0xc0000082, %ecx
    lea syscall_entry(%rip), %rax
    mov %rax, %rdx
    shr $32, %rdx
    wrmsr
    mov $0xc0000084, %ecx
    mov $0x200, %eax
    xor %edx, %edx
    wrmsr
#ifdef TRIPLE_FAULT
    lidt empty_idt_desc(%rip)
    int3
#endif
#ifdef SPIN
    .globl spin
spin:
    jmp spin
#endif
#ifdef BAD_OPCODE
    ud2
#endif
    /* say hello */
    lea msg_hello(%rip), %rsi
    call puts
    /* int3 is delivered and returns after it */
    int3
    /* a page fault on an unmapped address: the handler skips the 3-byte instruction */
    mov $0x40000000, %rax
    mov (%rax), %rbx
    /* map the LAPIC (identity, 2 MiB page) with a PD at physical 0xc000 */
    mov $BOOT_PML4_PA, %rax
    movq $(0xc000 | 3), 0x1018(%rax)         /* PDPT_LO[3] -> PD for 3..4 GiB */
    mov $(0xfee00000 | 0x9b), %ebx            /* P W PWT PCD PS */
    mov %rbx, 0xc000+503*8-BOOT_PML4_PA(%rax)
    mov %cr3, %rax
    mov %rax, %cr3
    /* timer: periodic 1 ms, wait for 5 ticks in hlt */
    mov $LAPIC_PA, %rdi
    movl $(LOCAL_TIMER_VECTOR | APIC_TIMER_PERIODIC), APIC_LVT_TIMER(%rdi)
    movl $1000000, APIC_TIMER_INIT(%rdi)
    sti
6:  hlt
    cmpq $5, ticks(%rip)
    jb 6b
    cli
    movl $0, APIC_TIMER_INIT(%rdi)
    /* ring 3: user code is in the identity map; mark its page user-accessible */
    mov $BOOT_PML4_PA, %rax
    orq $4, (%rax)                       /* PML4[0] U */
    orq $4, 0x1000(%rax)                 /* PDPT_LO[0] U */
    orq $4, 0x3000(%rax)                 /* PD[0] U: user stack */
    orq $4, 0x3040(%rax)                 /* PD[8] U: the code at 16 MiB */
    mov %cr3, %rax
    mov %rax, %cr3
    pushq $USER_DS
    pushq $0x100000
#ifdef USER_IOPL3
    pushq $0x3202
#else
    pushq $0x202
#endif
    pushq $USER_CS
    lea user_code(%rip), %rax
    mov $KERNEL_VA_OFFSET, %rbx
    sub %rbx, %rax                       /* its physical (= identity) address */
    pushq %rax
    iretq

syscall_entry:                           /* rax = number: 1 = write(rsi), 60 = exit(rdi) */
    mov %rsp, user_rsp(%rip)
    lea kstack_top(%rip), %rsp
    push %rcx
    push %r11
    cmp $60, %rax
    je 7f
    call puts
    pop %r11
    pop %rcx
    mov user_rsp(%rip), %rsp
    mov $42, %eax
    sysretq
7:  mov ticks(%rip), %rax
    add %rdi, %rax
    mov %eax, %eax
    mov $EXIT_PORT, %dx
    out %eax, %dx
    hlt

puts:                                    /* rsi = NUL-terminated string */
    push %rax
    push %rdx
    mov $COM1_PORT, %dx
8:  lodsb
    test %al, %al
    jz 9f
    out %al, %dx
    jmp 8b
9:  pop %rdx
    pop %rax
    ret

vec_default:
    lea msg_bad(%rip), %rsi
    call puts
    mov $EXIT_PANIC, %eax
    mov $EXIT_PORT, %dx
    out %eax, %dx
    hlt
vec_bp:
    incq bp_count(%rip)
    iretq
vec_nmi:
    incq nmi_count(%rip)
    iretq
vec_pf:
    push %rax
    mov %cr2, %rax
    mov %rax, last_cr2(%rip)
    mov 8(%rsp), %rax                     /* error code */
    mov %rax, last_pf_err(%rip)
    pop %rax
    add $8, %rsp                          /* drop the error code */
    addq $3, (%rsp)                       /* skip mov (%rax), %rbx */
    iretq
vec_gp:                                   /* record the fault, power off with 13 */
    mov %rax, gp_rax(%rip)
    pop %rax
    mov %rax, gp_err(%rip)
    mov (%rsp), %rax
    mov %rax, gp_rip(%rip)
    mov 8(%rsp), %rax
    mov %rax, gp_cs(%rip)
    mov $13, %eax
    mov $EXIT_PORT, %dx
    out %eax, %dx
    hlt
vec_timer:
    incq ticks(%rip)
    push %rax
    mov $LAPIC_PA, %rax
    movl $0, APIC_EOI(%rax)
    pop %rax
    iretq

    .align 16
user_code:                               /* ring 3 */
#if defined(USER_OUT) || defined(USER_IN)
    mov $0x5a, %eax
    mov $USER_PORT, %dx
    .globl user_io
user_io:
#ifdef USER_IN
    in %dx, %al
#else
    out %al, %dx
#endif
    incq after_io(%rip)                  /* same block: must not run when the I/O faults */
#endif
    lea msg_user(%rip), %rsi
    mov $1, %eax
    syscall
    mov %rax, %rdi                       /* 42 */
    mov $60, %eax
    syscall
msg_user: .asciz "hello from ring 3\n"

    .section .rodata
msg_hello: .asciz "tiny: hello\n"
msg_bad:   .asciz "panic: unexpected vector\n"

    .section .data
    .align 16
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff             /* 0x08 kernel32 */
    .quad 0x00af9a000000ffff             /* 0x10 kernel code */
    .quad 0x00cf92000000ffff             /* 0x18 kernel data */
    .quad 0x00cffa000000ffff             /* 0x20 user32 */
    .quad 0x00cff2000000ffff             /* 0x28 user data */
    .quad 0x00affa000000ffff             /* 0x30 user code */
    .quad 0
    .quad 0x0000890000000067             /* 0x40 TSS (base patched) */
    .quad 0
gdt_end:
gdt_desc: .word gdt_end - gdt - 1
    .quad gdt
empty_idt_desc: .word 0
    .quad 0
idt_desc: .word 4095
    .quad idt
    .globl nmi_count, ticks, bp_count, last_cr2, last_pf_err, gp_rax, gp_err, gp_rip, gp_cs, after_io
ticks: .quad 0
nmi_count: .quad 0
gp_rax: .quad 0
after_io: .quad 0
gp_err: .quad -1
gp_rip: .quad 0
gp_cs: .quad 0
bp_count: .quad 0
last_cr2: .quad 0
last_pf_err: .quad 0
user_rsp: .quad 0
    .section .bss
    .align 4096
idt: .space 4096
tss: .space 104 + 33
    .align 16
    .space 8192
stack_top:
    .space 8192
kstack_top:
