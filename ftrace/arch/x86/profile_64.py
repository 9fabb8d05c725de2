"""Guest code of the function profiler (the kernel's ftrace.c function_profile_call and its
fgraph pair profile_graph_entry / profile_graph_return), generated at run time.

- ``profile_graph_entry(ip, parent_ip, op, regs)`` (a SAVE_REGS ops, as function_graph's:
  regs->sp locates the return address): finds the function's record in this CPU's hash
  (allocating it from the preallocated records on its first hit), counts the hit, and
  hijacks the return: pushes {return address, func, calltime, PROF} on the task's shadow
  stack (shared with function_graph, so the two nest) and replaces the return address
  with ``profile_graph_return``.
- ``profile_graph_return``: pops the entry, adds rettime - calltime (and its square) to the
  record of this CPU, and returns to the real caller with rax and rdx intact. With the
  ``graph-time`` option off a call's time first goes to its profiled parent's ``subtime``
  and the time of the profiled children is taken off its own (``fgraph_graph_time``).

A CPU's table (``struct ftrace_profile_stat``): ST_DISABLED (the kernel's ``disabled``: an
NMI that finds an allocation in progress gets no record), the next free record, the
capacity, then a 1024-bucket hash of hlist heads keyed by ``hash_long(ip, 10)``, then the
records {next, ip, counter, time, time_squared}. A record is filled before the one store
that links it, so a reader (an NMI, or the host between two instructions) sees whole ones.
Interrupts are off while the code runs.
"""
from __future__ import annotations

from emu import memlayout as L

from .asm import CodeBuilder
from .ptregs import PT_REGS_OFFSET
from .shadow_stack_64 import (ENT_TR, ENTRY_HIJACK_EXIT, FTRACE_RETFUNC_DEPTH, RETURN_HIJACK_EXIT,
                              SAVE_CALLEE, SS_CURR, SS_ENTRIES, SS_ENTRY, SS_OVERRUN, SS_PROF,
                              current_shadow_stack, return_hijack_enter, shadow_push)
from .trace_64 import CLOCK_LOCAL, TR_CLOCK

# The profiler's global block: enabled, options, the clock of its times (at a trace_array's
# TR_CLOCK: its shadow-stack entries name this block where function_graph's name their
# array, and fgraph's sched_switch probe reads the clock of either), then one table pointer
# per CPU.
P_ENABLED, P_FLAGS, P_CLOCK, P_STATS = 0x00, 0x04, 0x0C, 0x10
P_SIZE = P_STATS + 8 * L.NCPU
assert P_CLOCK == TR_CLOCK and CLOCK_LOCAL == 0      # rdtsc: the local clock; zeroed at start
NO_GRAPH_TIME = 1
# One CPU's table.
ST_DISABLED, ST_NEXT, ST_CAP, ST_HASH = 0x00, 0x08, 0x10, 0x40
FTRACE_PROFILE_HASH_BITS = 10
ST_RECS = ST_HASH + (8 << FTRACE_PROFILE_HASH_BITS)
REC_NEXT, REC_IP, REC_COUNTER, REC_TIME, REC_TIME_SQ = 0x00, 0x08, 0x10, 0x18, 0x20
REC_SIZE = 0x28
GOLDEN_RATIO_64 = 0x61C8864680B583EB
# The subtime of shadow-stack entry i (graph-time off), in the same page past the entries.
PROF_SUBTIME = 0x800
assert SS_ENTRIES + FTRACE_RETFUNC_DEPTH * SS_ENTRY <= PROF_SUBTIME
assert PROF_SUBTIME + 8 * FTRACE_RETFUNC_DEPTH <= 4096


def hash_long(ip: int) -> int:
    """The kernel's hash_64(ip, FTRACE_PROFILE_HASH_BITS)."""
    return (ip * GOLDEN_RATIO_64 & (1 << 64) - 1) >> (64 - FTRACE_PROFILE_HASH_BITS)


def _bucket(key: str, table: str, out: str) -> str:
    """``out`` = the address of ``key``'s bucket in the table at ``table``; clobbers rax, rdx."""
    return f"""
        mov rax, {key}
        movabs rdx, {GOLDEN_RATIO_64}
        imul rax, rdx
        shr rax, {64 - FTRACE_PROFILE_HASH_BITS}
        lea {out}, [{table} + rax*8 + {ST_HASH}]"""


def _find_rec(key: str, found: str, missing: str, n: int) -> str:
    """ftrace_find_profiled_func: walk the chain from r10 to ``key``'s record (r10, then
    ``found``; ``missing`` with r10 = 0). Local label n."""
    return f"""
    {n}: test r10, r10
        jz {missing}
        cmp qword ptr [r10 + {REC_IP}], {key}
        je {found}
        mov r10, qword ptr [r10 + {REC_NEXT}]
        jmp {n}b"""


def emit_profiler(b: CodeBuilder, prof: int, idle: tuple[int, int], tasks: tuple[int, int],
                  table: int) -> None:
    """profile_graph_entry and profile_graph_return (see the module docstring); ``prof`` is
    the global block, the rest locate the shadow stacks (shadow_stack_64). r8 holds ``prof``
    in both."""
    b.label("profile_graph_return")
    b.emit(return_hijack_enter(idle, tasks, table) + f"""
        mov r12, qword ptr [r14 + rbx*8 + {PROF_SUBTIME}]
        dec qword ptr [r14 + {SS_PROF}]
        dec qword ptr [r14 + {SS_CURR}]
        movabs r8, {prof}
        cmp dword ptr [r8 + {P_ENABLED}], 0
        je 80f
        test r15, r15
        jz 80f
        rdtsc
        shl rdx, 32
        or rax, rdx
        sub rax, r15
        test dword ptr [r8 + {P_FLAGS}], {NO_GRAPH_TIME}
        jz 6f
        mov rcx, rbx
    2:  test rcx, rcx
        jz 4f
        dec rcx
        mov rdx, rcx
        shl rdx, 5
        cmp qword ptr [r14 + rdx + {SS_ENTRIES + ENT_TR}], r8
        jne 2b
        add qword ptr [r14 + rcx*8 + {PROF_SUBTIME}], rax
    4:  cmp r12, rax
        jae 5f
        sub rax, r12
        jmp 6f
    5:  xor eax, eax
    6:  mov r15, rax
        mov ecx, dword ptr gs:[{L.PCPU_CPU}]
        mov rbx, qword ptr [r8 + rcx*8 + {P_STATS}]
        test rbx, rbx
        jz 80f""" + _bucket("r13", "rbx", "r10") + f"""
        mov r10, qword ptr [r10]""" + _find_rec("r13", "8f", "80f", 7) + f"""
    8:  add qword ptr [r10 + {REC_TIME}], r15
        imul r15, r15
        add qword ptr [r10 + {REC_TIME_SQ}], r15
    80:""" + RETURN_HIJACK_EXIT + """
    90: ud2""")
    b.align()
    handler = b.labels["profile_graph_return"]
    b.label("profile_graph_entry")
    b.emit(f"""
        test rcx, rcx
        jz 99f
        movabs r8, {prof}
        cmp dword ptr [r8 + {P_ENABLED}], 0
        je 99f""" + SAVE_CALLEE + f"""
        pushfq
        cli
        mov r12, rdi
        mov r13, qword ptr [rcx + {PT_REGS_OFFSET['sp']}]
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        mov rbx, qword ptr [r8 + rax*8 + {P_STATS}]
        test rbx, rbx
        jz 98f""" + _bucket("r12", "rbx", "r9") + f"""
        mov r10, qword ptr [r9]""" + _find_rec("r12", "5f", "2f", 1) + f"""
    2:  inc dword ptr [rbx + {ST_DISABLED}]
        cmp dword ptr [rbx + {ST_DISABLED}], 1
        jne 4f
        mov r10, qword ptr [r9]""" + _find_rec("r12", "4f", "6f", 3) + f"""
    6:  mov rcx, qword ptr [rbx + {ST_NEXT}]
        cmp rcx, qword ptr [rbx + {ST_CAP}]
        jae 4f
        lea rax, [rcx + 1]
        mov qword ptr [rbx + {ST_NEXT}], rax
        imul rcx, rcx, {REC_SIZE}
        lea r10, [rbx + rcx + {ST_RECS}]
        mov qword ptr [r10 + {REC_IP}], r12
        mov rax, qword ptr [r9]
        mov qword ptr [r10 + {REC_NEXT}], rax
        mov qword ptr [r9], r10
    4:  dec dword ptr [rbx + {ST_DISABLED}]
        test r10, r10
        jz 98f
    5:  inc qword ptr [r10 + {REC_COUNTER}]""" + current_shadow_stack(idle, tasks, table, "98f") + f"""
        cmp qword ptr [r14 + {SS_CURR}], {FTRACE_RETFUNC_DEPTH}
        jae 97f
        rdtsc
        shl rdx, 32
        or rdx, rax""" + shadow_push(handler, "r8", f"""
        inc qword ptr [r14 + {SS_PROF}]
        mov qword ptr [r14 + rcx*8 + {PROF_SUBTIME}], 0""") + ENTRY_HIJACK_EXIT + f"""
    97: inc qword ptr [r14 + {SS_OVERRUN}]
        jmp 98b""")
    b.align()
