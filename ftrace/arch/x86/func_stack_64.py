"""Guest code of the function tracer's ``func_stack_trace`` option (trace_functions.c's
function_stack_trace_call): after the function's own event, a TRACE_STACK event with the
call chain, so the option costs no host work per call either.

``function_stack_trace_call(ip, parent_ip, op, fregs)`` with r8 = the trace_array (reached
through its own thunk, as function_trace_call): records the TRACE_FN event through
function_trace_call, then walks the frame-pointer chain from the rbp it was called with (the
ftrace trampoline's frames, whose return addresses lead into the traced function and its
callers). Leading return addresses inside ftrace's own code (execmem's executable part) are
skipped, as stack_trace_save's skip count does, so the first entry is the traced function.
A frame is followed only while it lies above the previous one and within a kernel stack's
size of it. At most STACK_ENTRIES callers fit the event (the inline reserve takes payloads up
to 112 bytes; the kernel keeps up to 64): deeper chains are cut there.
"""
from __future__ import annotations

from emu import memlayout as L

from ...ring_buffer import RB_DROPPED, RB_NEST
from .asm import CodeBuilder
from .trace_64 import COMMIT, begin_event, pid_gate, tracing_gate

TRACE_STACK = 4
STACK_ENTRIES = 12
PAYLOAD = 16 + 8 * STACK_ENTRIES     # trace_entry, int size (+pad), caller[]


def emit_function_stack_trace_call(b: CodeBuilder) -> None:
    """function_stack_trace_call (see the module docstring)."""
    record_fn, clock = b.labels["function_trace_call"], b.labels["trace_clock"]
    area = 8 * STACK_ENTRIES
    zero = "".join(f"\n        mov qword ptr [rsp + {8 * i}], 0" for i in range(STACK_ENTRIES))
    copy = "".join(f"""
        mov rdx, qword ptr [rsp + {8 + 8 * i}]
        mov qword ptr [rax + {16 + 8 * i}], rdx""" for i in range(STACK_ENTRIES))
    b.label("function_stack_trace_call")
    b.emit(f"""
        push r8
        call {record_fn}
        pop r8""" + tracing_gate("r8", "99f") + pid_gate("r8", "99f") + f"""
        sub rsp, {area}""" + zero + f"""
        xor ecx, ecx
        mov r10, rbp
        lea r9, [rsp + {area}]
    1:  cmp r10, r9
        jbe 5f
        lea rax, [r9 + {L.KSTACK_SIZE}]
        cmp r10, rax
        jae 5f
        test r10b, 7
        jnz 5f
        mov rax, qword ptr [r10 + 8]
        test rax, rax
        jz 5f
        test ecx, ecx
        jnz 3f
        movabs rdx, {L.EXECMEM_VA}
        mov rsi, rax
        sub rsi, rdx
        cmp rsi, {L.EXECMEM_CODE_SIZE}
        jb 4f
    3:  mov qword ptr [rsp + rcx*8], rax
        inc ecx
        cmp ecx, {STACK_ENTRIES}
        je 5f
    4:  mov r9, r10
        mov r10, qword ptr [r10]
        jmp 1b
    5:  mov r10d, ecx
        pushfq
        cli
        call {clock}""" + begin_event("r8", PAYLOAD, TRACE_STACK, "98f", "97f") + f"""
        mov qword ptr [rax], rcx
        mov dword ptr [rax + 8], r10d
        mov dword ptr [rax + 12], 0""" + copy + COMMIT + f"""
    97: mov dword ptr [rdi + {RB_NEST}], 0
    96: popfq
        add rsp, {area}
    99: ret
    98: inc qword ptr [rdi + {RB_DROPPED}]
        jmp 96b""")
    b.align()
