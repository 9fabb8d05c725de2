"""Guest code of the function graph tracer (the kernel's trace_functions_graph.c and
ftrace_64.S return_to_handler), generated at run time, on the shared shadow stack
(shadow_stack_64.py).

- ``function_graph_entry(ip, parent_ip, op, regs)`` with r8 = the trace_array (reached
  through the array's thunk; ``return_slot`` locates the return address, with or without
  regs): pushes {return address, func, calltime, trace_array} on the current task's shadow stack,
  replaces the return address with ``return_to_handler`` and writes a funcgraph_entry event.
- ``return_to_handler``: where a hijacked function returns. Pops the shadow stack, writes a
  funcgraph_exit event (func, retval, depth, calltime, rettime) and returns to the real
  caller with rax and rdx (the return value) intact.

Interrupts and NMIs are held while the code runs (trace_64's docstring).
"""
from __future__ import annotations

from emu import memlayout as L

from ...ring_buffer import RB_DROPPED, RB_NEST
from .asm import CodeBuilder
from .ring_buffer_64 import COMMIT
from .shadow_stack_64 import (ENT_CALLTIME, ENT_FUNC, ENT_RET, ENT_TR, ENTRY_HIJACK_EXIT,
                              FTRACE_RETFUNC_DEPTH, RET_SAVED_RAX, RETURN_HIJACK_EXIT, SAVE_CALLEE,
                              SS_CURR, SS_ENTRIES, SS_ENTRY, SS_GRAPH, SS_NOTRACE, SS_OVERRUN,
                              SS_PID, SS_PROF, current_shadow_stack, return_hijack_enter,
                              return_slot, shadow_page, shadow_push)
from .trace_64 import (CLK_NO_TRACE, CLOCK_COUNTER, CLOCK_LOCAL, FAST_CLOCKS, TR_CLOCK,
                       begin_event, clock_read, fast_begin, fast_gate, insns, pid_gate,
                       tracing_gate, write_fast)

TRACE_GRAPH_RET, TRACE_GRAPH_ENT = 10, 11
TR_MAX_DEPTH, TR_GRAPH_FLAGS = 0x18, 0x1C       # in struct trace_array (trace_64.TR_*)
TR_THRESH = 0x30                                # u64: tracing_thresh in clock units (0: none)
GRAPH_NO_IRQS = 1                               # nofuncgraph-irqs: hardirq context not recorded
# tracing_thresh is set: funcgraph_entry is not written and funcgraph_exit only for a call
# that lasted at least TR_THRESH (trace_graph_thresh_return); the fast paths step aside.
GRAPH_THRESH = 0x100
# The graph hashes as the guest reads them: two pointers (set_graph_function, then
# set_graph_notrace), each 0 or {u64 count; u64 ips[count]} sorted, published with one store.
CELL_GRAPH, CELL_NOTRACE = 0x00, 0x08


def ip_search(block: str, key: str, found: str, missing: str, n: int) -> str:
    """Binary search of ``key`` in the sorted ip array ``block`` points to; jumps to
    ``found`` or ``missing``. Local labels n and n+1; clobbers rdx, r9, r10, r11."""
    return f"""
        xor edx, edx
        mov r9, qword ptr [{block}]
    {n}: cmp rdx, r9
        jae {missing}
        lea r10, [rdx + r9]
        shr r10, 1
        mov r11, qword ptr [{block} + r10*8 + 8]
        cmp {key}, r11
        je {found}
        jb {n + 1}f
        lea rdx, [r10 + 1]
        jmp {n}b
    {n + 1}: mov r9, r10
        jmp {n}b"""


def graph_hash_lookup(cell: int, found: str, missing: str, empty: str, n: int) -> str:
    """Is the function in r12 in the ip array published at ``cell``? Jumps to ``empty`` when
    none is published; clobbers rax and what ip_search does."""
    return f"""
        movabs rax, {cell}
        mov rax, qword ptr [rax]
        test rax, rax
        jz {empty}""" + ip_search("rax", "r12", found, missing, n)


def emit_fgraph(b: CodeBuilder, idle: tuple[int, int], tasks: tuple[int, int], table: int,
                cells: int, clock_data: int) -> None:
    """function_graph_entry and return_to_handler (see the module docstring); ``idle`` and
    ``tasks`` are (address, size) of the task arrays, ``table`` the shadow-stack table,
    ``cells`` the graph hash pointers (CELL_*).

    Graph filters (ftrace_graph_addr / ftrace_graph_notrace_addr): a function listed in
    set_graph_notrace is pushed but not recorded, and nothing is pushed until it returns; when
    set_graph_function lists functions, nothing is pushed outside one of them, so depths count
    from the matched entry."""
    clock = b.labels["trace_clock"]
    b.label("ftrace_return_to_handler")
    b.emit(return_hijack_enter(idle, tasks, table) + f"""
        mov rbx, qword ptr [rax + {ENT_TR}]
        dec qword ptr [r14 + {SS_CURR}]
        mov rcx, qword ptr [r14 + {SS_CURR}]
        inc ecx
        cmp dword ptr [r14 + {SS_GRAPH}], ecx
        jne 31f
        mov dword ptr [r14 + {SS_GRAPH}], 0
    31: cmp dword ptr [r14 + {SS_NOTRACE}], ecx
        jne 32f
        mov dword ptr [r14 + {SS_NOTRACE}], 0
        jmp 80f
    32:""" + tracing_gate("rbx", "80f") + f"""
        mov r8, rbx
        call {clock}
        mov r12, rdx
        mov rcx, rdx
        sub rcx, r15
        cmp rcx, qword ptr [rbx + {TR_THRESH}]
        jb 80f""" + begin_event("rbx", 48, TRACE_GRAPH_RET, "81f", "79f") + f"""
        mov qword ptr [rax], rcx
        mov qword ptr [rax + 8], r13
        mov rcx, qword ptr [rsp + {RET_SAVED_RAX}]
        mov qword ptr [rax + 16], rcx
        mov rcx, qword ptr [r14 + {SS_CURR}]
        sub rcx, qword ptr [r14 + {SS_PROF}]
        mov dword ptr [rax + 24], ecx
        mov dword ptr [rax + 28], 0
        mov qword ptr [rax + 32], r15
        mov qword ptr [rax + 40], r12""" + COMMIT + f"""
    79: mov dword ptr [rdi + {RB_NEST}], 0
    80:""" + RETURN_HIJACK_EXIT + f"""
    81: inc qword ptr [rdi + {RB_DROPPED}]
        jmp 80b
    90: ud2""")
    b.align()
    emit_return_fast(b, idle, tasks, table, clock_data)
    handler = b.labels["return_to_handler"]
    b.label("function_graph_entry")
    b.emit(tracing_gate("r8", "99f") + return_slot("r9", "rcx", "rdi", "rax") + f"""
        test rax, rax
        jnz 99f
        test dword ptr [r8 + {TR_GRAPH_FLAGS}], {GRAPH_NO_IRQS}
        jz 1f
        test dword ptr gs:[{L.PCPU_PREEMPT_COUNT}], {L.HARDIRQ_MASK}
        jnz 99f
    1:""" + SAVE_CALLEE + f"""
        mov rbx, r8
        mov r12, rdi
        mov r13, r9
        pushfq
        cli""" + pid_gate("rbx", "98f") + current_shadow_stack(idle, tasks, table, "98f") + f"""
        cmp qword ptr [r14 + {SS_CURR}], {FTRACE_RETFUNC_DEPTH}
        jae 97f
        xor r15d, r15d
        cmp dword ptr [r14 + {SS_NOTRACE}], 0
        jne 98f
""" + graph_hash_lookup(cells + CELL_NOTRACE, "4f", "5f", "5f", 51) + f"""
    4:  mov r15d, 1
        jmp 3f
    5:  cmp dword ptr [r14 + {SS_GRAPH}], 0
        jne 6f
""" + graph_hash_lookup(cells + CELL_GRAPH, "7f", "98f", "6f", 53) + f"""
    7:  mov r15d, 2
    6:  mov rcx, qword ptr [r14 + {SS_CURR}]
        sub rcx, qword ptr [r14 + {SS_PROF}]
        mov edx, dword ptr [rbx + {TR_MAX_DEPTH}]
        test edx, edx
        jz 3f
        cmp rcx, rdx
        jae 98f
    3:  mov r8, rbx
        call {clock}
        movabs r10, {handler}
        movabs r11, {b.labels[return_handler(CLOCK_COUNTER)]}
        cmp dword ptr [rbx + {TR_CLOCK}], {CLOCK_COUNTER}
        cmove r10, r11""" + shadow_push("r10", "rbx") + f"""
        mov r13, qword ptr [r14 + {SS_CURR}]
        test r15d, r15d
        jz 8f
        cmp r15d, 1
        jne 9f
        mov dword ptr [r14 + {SS_NOTRACE}], r13d
        jmp 98f
    9:  mov dword ptr [r14 + {SS_GRAPH}], r13d
    8:  test dword ptr [rbx + {TR_GRAPH_FLAGS}], {GRAPH_THRESH}
        jnz 98f
        dec r13
        sub r13, qword ptr [r14 + {SS_PROF}]""" + begin_event("rbx", 24, TRACE_GRAPH_ENT, "96f", "95f") + f"""
        mov qword ptr [rax], rcx
        mov qword ptr [rax + 8], r12
        mov dword ptr [rax + 16], r13d
        mov dword ptr [rax + 20], 0""" + COMMIT + f"""
    95: mov dword ptr [rdi + {RB_NEST}], 0""" + ENTRY_HIJACK_EXIT + f"""
    96: inc qword ptr [rdi + {RB_DROPPED}]
        jmp 98b
    97: inc qword ptr [r14 + {SS_OVERRUN}]
        jmp 98b""")
    b.align()
    emit_entry_fast(b, idle, tasks, table, cells, clock_data)


def return_handler(clock: int) -> str:
    """The label of the return handler for a fast clock's entries."""
    return "return_to_handler" + ("" if clock == CLOCK_LOCAL else "_" + FAST_CLOCKS[clock])


def emit_return_fast(b: CodeBuilder, idle: tuple[int, int], tasks: tuple[int, int],
                     table: int, clock_data: int) -> None:
    """return_to_handler (local clock) and return_to_handler_counter, the handler a fast
    entry with that clock hijacks returns to: the plain case (no graph filter state and no
    profiler entries on the task's shadow stack, the entry's trace array recording on this
    CPU with that clock and no tracing_thresh, its buffer free), tested before one branch,
    pops the entry and writes funcgraph_exit in three translation blocks; anything else
    unwinds its frame and takes ftrace_return_to_handler. The entry is released only after the event is written
    (an NMI meanwhile pushes above it). Until the branch every read must be valid: without
    an entry, the trace array read is one that records nothing (CLK_NO_TRACE)."""
    general = b.labels["ftrace_return_to_handler"]
    for clock_id, name in FAST_CLOCKS.items():
        write, tail = write_fast(48, TRACE_GRAPH_RET, f"""
        mov rcx, qword ptr [r10 + {ENT_FUNC}]
        mov qword ptr [rax + 8], rcx
        mov rcx, qword ptr [rsp + 16]
        mov qword ptr [rax + 16], rcx
        mov rcx, r10
        sub rcx, rsi
        sub rcx, {SS_ENTRIES}
        shr rcx, 5
        mov dword ptr [rax + 24], ecx
        mov dword ptr [rax + 28], 0
        mov rcx, qword ptr [r10 + {ENT_CALLTIME}]
        mov qword ptr [rax + 32], rcx
        mov qword ptr [rax + 40], rdx""", clock_id)
        take = f"""
        mov rdi, r9
        mov rax, qword ptr [r10 + {ENT_RET}]
        mov qword ptr [rsp + 24], rax
        mov dword ptr [rdi + {RB_NEST}], 1"""
        # Frame: [rsp] flags, rdx, rax (the return value), then the real return address.
        b.label(return_handler(clock_id))
        b.emit(f"""
        sub rsp, 8
        push rax
        push rdx
        pushfq
        xor edi, edi
        mov rax, qword ptr gs:[{L.PCPU_CURRENT}]""" + shadow_page(idle, tasks, table, "rdi") + f"""
        mov rcx, qword ptr [r10 + {SS_CURR}]
        cmp rcx, 1
        sbb rdx, rdx
        or rdx, qword ptr [r10 + {SS_GRAPH}]
        or rdx, qword ptr [r10 + {SS_PROF}]
        shl rcx, 5
        mov rsi, r10
        lea r10, [r10 + rcx + {SS_ENTRIES - SS_ENTRY}]
        mov r8, qword ptr [r10 + {ENT_TR}]
        or rdi, rdx
        movabs rax, {clock_data + CLK_NO_TRACE}
        cmovnz r8, rax""" + fast_gate("r8", "", f"""
        mov eax, dword ptr [r8 + {TR_GRAPH_FLAGS}]
        and eax, {GRAPH_THRESH}
        or eax, dword ptr [r8 + {TR_CLOCK}]
        xor eax, {clock_id}
        or rcx, rax
        or rcx, rdi""", branch=False) + """
        jnz 79f""" + take + clock_read(clock_id, clock_data, insns(take)) + write + f"""
        dec qword ptr [rsi + {SS_CURR}]
        add rsp, 8
        pop rdx
        pop rax
        ret
    79: add rsp, 8
        pop rdx
        pop rax
        add rsp, 8
        jmp {general}""" + tail)
        b.align()


def emit_entry_fast(b: CodeBuilder, idle: tuple[int, int], tasks: tuple[int, int], table: int,
                    cells: int, clock_data: int) -> None:
    """function_graph_entry_<clock> for each clock in FAST_CLOCKS, where the trace array's
    graph thunk points while that clock is selected: the plain case (no graph filter, no
    max_graph_depth, funcgraph-irqs, a task of its own on a shadow stack with room and no
    profiler entries, the array recording with its buffer free) pushes the shadow entry, hijacks the return and
    writes funcgraph_entry in a few translation blocks; anything else goes to
    function_graph_entry before anything is written."""
    general = b.labels["function_graph_entry"]
    plain = f"""
        mov eax, dword ptr [r8 + {TR_MAX_DEPTH}]
        or eax, dword ptr [r8 + {TR_GRAPH_FLAGS}]
        or rcx, rax
        movabs rax, {cells}
        or rcx, qword ptr [rax + {CELL_GRAPH}]
        or rcx, qword ptr [rax + {CELL_NOTRACE}]"""
    for clock_id, name in FAST_CLOCKS.items():
        write, tail = write_fast(24, TRACE_GRAPH_ENT, """
        mov qword ptr [rax + 8], rsi
        mov dword ptr [rax + 16], r10d
        mov dword ptr [rax + 20], 0""", clock_id)
        handler = b.labels[return_handler(clock_id)]
        b.label(f"function_graph_entry_{name}")
        # rsi (parent_ip, which function_graph_entry does not read either) gathers refusals.
        b.emit("""
        mov r11, rcx""" + fast_gate("r8", "", plain, branch=False) + f"""
        mov rsi, rcx
        mov rax, qword ptr gs:[{L.PCPU_CURRENT}]""" + shadow_page(idle, tasks, table, "rsi") + f"""
        mov ecx, dword ptr [rax + {L.TASK_PID}]
        xor rcx, qword ptr [r10 + {SS_PID}]
        cmp qword ptr [r10 + {SS_CURR}], {FTRACE_RETFUNC_DEPTH}
        cmc
        sbb rax, rax
        or rcx, rax
        or rcx, qword ptr [r10 + {SS_GRAPH}]
        or rcx, qword ptr [r10 + {SS_PROF}]
        or rsi, rcx""" + return_slot("rdx", "r11", "rdi", "rax") + f"""
        or rsi, rax
        jnz 79f""" + fast_begin("""
        mov rsi, rdi
        mov rdi, r9
        mov r9, rdx""", clock_id, clock_data) + f"""
        mov rcx, qword ptr [r10 + {SS_CURR}]
        lea rax, [rcx + 1]
        mov qword ptr [r10 + {SS_CURR}], rax
        shl rcx, 5
        lea r11, [r10 + rcx + {SS_ENTRIES}]
        shr rcx, 5
        mov r10, rcx
        mov rax, qword ptr [r9]
        mov qword ptr [r11 + {ENT_RET}], rax
        mov qword ptr [r11 + {ENT_FUNC}], rsi
        mov qword ptr [r11 + {ENT_CALLTIME}], rdx
        mov qword ptr [r11 + {ENT_TR}], r8
        movabs rax, {handler}
        mov qword ptr [r9], rax""" + write + f"""
        add rsp, 8
        ret
    79: mov rcx, r11
        jmp {general}""" + tail)
        b.align()
