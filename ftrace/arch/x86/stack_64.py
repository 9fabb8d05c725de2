"""Guest code of the stack tracer (the kernel's trace_stack.c stack_trace_call and the fast
half of check_stack), generated at run time.

``stack_trace_call(ip, parent_ip, op, fregs)``: with interrupts off and this CPU's
``disable_stack_tracer`` count taken (a nested call, e.g. from an NMI, does nothing), while
RCU watches: ``this_size`` = the current task's stack top - rsp - ``tracer_frame``. Only when
that exceeds ``stack_max_size``, the stack is the task's (not an IST stack) and this is no
NMI, it takes ``stack_trace_max_lock`` and makes one ``out`` to the host
(``HCALL_STACK_PORT``) with rdi = ip, rcx = the stack pointer measured and r11 = the stack
top; the host finishes check_stack (the unwind and the search for each return address,
rare: only on a new maximum) and writes the new maximum and tracer_frame back.

The kernel finds the stack top by aligning the pointer to THREAD_SIZE; ftemu's kernel stacks
are not aligned to their size, so the top is current->kstack + KSTACK_SIZE (the same value).
"""
from __future__ import annotations

from emu import memlayout as L

from .asm import CodeBuilder

HCALL_STACK_PORT = 0xE3
# The stack tracer's block: stack_trace_max_size, tracer_frame, the lock, then one
# disable_stack_tracer count per CPU.
K_MAX_SIZE, K_TRACER_FRAME, K_LOCK, K_DISABLE = 0x00, 0x08, 0x10, 0x18
K_SIZE = K_DISABLE + 4 * L.NCPU


def emit_stack_trace_call(b: CodeBuilder, block: int) -> None:
    """stack_trace_call (see the module docstring) over the block at ``block``."""
    b.label("stack_trace_call")
    b.emit(f"""
        pushfq
        cli
        movabs r8, {block}
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        lea r10, [r8 + rax*4 + {K_DISABLE}]
        inc dword ptr [r10]
        cmp dword ptr [r10], 1
        jne 9f
        cmp dword ptr gs:[{L.PCPU_RCU_WATCHING}], 0
        je 9f
        mov r9, qword ptr gs:[{L.PCPU_CURRENT}]
        test r9, r9
        jz 9f
        mov r9, qword ptr [r9 + {L.TASK_KSTACK}]
        lea r11, [r9 + {L.KSTACK_SIZE}]
        mov rcx, rsp
        mov rdx, r11
        sub rdx, rcx
        sub rdx, qword ptr [r8 + {K_TRACER_FRAME}]
        cmp rdx, qword ptr [r8 + {K_MAX_SIZE}]
        jbe 9f
        cmp rcx, r9
        jb 9f
        cmp rcx, r11
        jae 9f
        test dword ptr gs:[{L.PCPU_PREEMPT_COUNT}], {L.NMI_MASK}
        jnz 9f
    1:  lock bts dword ptr [r8 + {K_LOCK}], 0
        jnc 2f
        pause
        jmp 1b
    2:  out {HCALL_STACK_PORT}, eax
        mov dword ptr [r8 + {K_LOCK}], 0
    9:  dec dword ptr [r10]
        popfq
        ret""")
    b.align()
