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
size of it.

The chain is walked twice: once to count its return addresses, then, with an event of
exactly that many callers reserved (``struct_size(entry, caller, nr_entries)``, as
__ftrace_trace_stack sizes it), again to store them in the event. Up to
FTRACE_KSTACK_ENTRIES are taken, as the kernel's per-CPU stack holds; a chain longer than
one event can hold is not recorded, as the kernel's reserve refuses it.
"""
from __future__ import annotations

from emu import memlayout as L

from ...ring_buffer import RB_DROPPED, RB_NEST
from ...ring_buffer_format import BUF_PAGE_SIZE, RB_MAX_SMALL_DATA
from .asm import CodeBuilder
from .ring_buffer_64 import COMMIT
from .trace_64 import begin_event, pid_gate, tracing_gate

TRACE_STACK = 4
FTRACE_KSTACK_ENTRIES = 4096 // 4   # PAGE_SIZE / FTRACE_KSTACK_NESTING
STACK_HEAD = 16                     # struct stack_entry before caller[]: trace_entry, int size
SMALL_CALLERS = (RB_MAX_SMALL_DATA - STACK_HEAD) // 8       # type_len events: up to 12
MAX_CALLERS = (BUF_PAGE_SIZE - 8 - STACK_HEAD) // 8        # ring_buffer_max_event_size: 507


def _walk(n: int, tmp: str, store: str, limit: str) -> str:
    """ecx = the return addresses of the frame chain from rbp, ``store`` run for each with
    it in rax and its index in ecx, at most ``limit`` of them. Local labels n..n+4;
    clobbers rax, rdx, r9, r10, ``tmp``."""
    return f"""
        xor ecx, ecx
        mov r10, rbp
        mov r9, rsp
    {n}: cmp r10, r9
        jbe {n + 4}f
        lea rax, [r9 + {L.KSTACK_SIZE}]
        cmp r10, rax
        jae {n + 4}f
        test r10b, 7
        jnz {n + 4}f
        mov rax, qword ptr [r10 + 8]
        test rax, rax
        jz {n + 4}f
        test ecx, ecx
        jnz {n + 2}f
        movabs rdx, {L.EXECMEM_VA}
        mov {tmp}, rax
        sub {tmp}, rdx
        cmp {tmp}, {L.EXECMEM_CODE_SIZE}
        jb {n + 3}f
    {n + 2}:{store}
        inc ecx
        cmp ecx, {limit}
        jae {n + 4}f
    {n + 3}: mov r9, r10
        mov r10, qword ptr [r10]
        jmp {n}b
    {n + 4}:"""


def emit_function_stack_trace_call(b: CodeBuilder) -> None:
    """function_stack_trace_call (see the module docstring). The frame while the event is
    written: [rsp] r11, r9 (the reserve's page and commit), flags, the caller count."""
    record_fn, clock = b.labels["function_trace_call"], b.labels["trace_clock"]
    b.label("function_stack_trace_call")
    b.emit(f"""
        push r8
        call {record_fn}
        pop r8""" + tracing_gate("r8", "99f") + pid_gate("r8", "99f")
           + _walk(10, "rsi", "", str(FTRACE_KSTACK_ENTRIES)) + f"""
        cmp ecx, {MAX_CALLERS}
        ja 99f
        push rcx
        lea esi, [rcx*8 + {STACK_HEAD}]
        lea r10d, [rcx*2 + {STACK_HEAD // 4}]
        cmp ecx, {SMALL_CALLERS}
        jbe 2f
        add esi, 4
        xor r10d, r10d
    2:  pushfq
        cli
        call {clock}""" + begin_event("r8", ("rsi", "r10"), TRACE_STACK, "98f", "97f") + f"""
        mov rsi, rax
        mov rdx, qword ptr [rsp + 8]
        cmp edx, {SMALL_CALLERS}
        jbe 3f
        lea eax, [rdx*8 + {STACK_HEAD + 4}]
        mov dword ptr [rsi], eax
        add rsi, 4
    3:  mov qword ptr [rsi], rcx
        mov dword ptr [rsi + 8], edx
        mov dword ptr [rsi + 12], 0
        push r9
        push r11""" + _walk(20, "r8", f"""
        mov qword ptr [rsi + rcx*8 + {STACK_HEAD}], rax""", "dword ptr [rsp + 24]") + f"""
        pop r11
        pop r9""" + COMMIT + f"""
    97: mov dword ptr [rdi + {RB_NEST}], 0
    96: popfq
        add rsp, 8
    99: ret
    98: inc qword ptr [rdi + {RB_DROPPED}]
        jmp 96b""")
    b.align()
