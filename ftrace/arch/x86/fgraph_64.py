"""Guest code of the function graph tracer (the kernel's fgraph.c and ftrace_64.S
return_to_handler), generated at run time.

- ``function_graph_entry(ip, parent_ip, op, regs)`` with r8 = the trace_array (reached
  through the array's thunk; ``return_slot`` locates the return address, with or without
  regs): pushes {return address, func, calltime, trace_array} on the current task's shadow stack,
  replaces the return address with ``return_to_handler`` and writes a funcgraph_entry event.
- ``return_to_handler``: where a hijacked function returns. Pops the shadow stack, writes a
  funcgraph_exit event (func, retval, depth, calltime, rettime) and returns to the real
  caller with rax and rdx (the return value) intact.

Shadow stacks are per task (a page each, found through a table indexed by the task's slot
in idle_tasks[] and tasks[]); an entry belongs to a task, so context switches, interrupts
and NMIs nest correctly. Slots are reserved before they are filled and read before they
are released, so an NMI arriving in between only uses the slots above. A slot reused by a
new task (another pid) starts with an empty stack. Interrupts and NMIs are held while the
code runs (trace_64's docstring).
"""
from __future__ import annotations

from emu import memlayout as L

from ...ring_buffer import RB_DROPPED, RB_NEST
from .asm import CodeBuilder
from .ftrace_64 import MCOUNT_FRAME_SIZE
from .ptregs import PT_REGS_OFFSET
from .ring_buffer_64 import COMMIT
from .trace_64 import (CLK_NO_TRACE, CLOCK_COUNTER, CLOCK_LOCAL, FAST_CLOCKS, TR_CLOCK,
                       begin_event, clock_read, fast_begin, fast_gate, insns, pid_gate,
                       tracing_gate, write_fast)

TRACE_GRAPH_RET, TRACE_GRAPH_ENT = 10, 11
FTRACE_RETFUNC_DEPTH = 50
TR_MAX_DEPTH, TR_GRAPH_FLAGS = 0x18, 0x1C       # in struct trace_array (trace_64.TR_*)
TR_THRESH = 0x30                                # u64: tracing_thresh in clock units (0: none)
GRAPH_NO_IRQS = 1                               # nofuncgraph-irqs: hardirq context not recorded
# tracing_thresh is set: funcgraph_entry is not written and funcgraph_exit only for a call
# that lasted at least TR_THRESH (trace_graph_thresh_return); the fast paths step aside.
GRAPH_THRESH = 0x100
# A shadow stack page: owner pid, depth in use, overruns, the graph-filter state, the
# function profiler's entries among those in use, then the entries. SS_GRAPH / SS_NOTRACE:
# 1 + the index of the entry that matched set_graph_function / set_graph_notrace (0: none on
# the stack); the kernel's TRACE_GRAPH_BIT and TRACE_GRAPH_NOTRACE_BIT with the depth they
# were set at. The profiler's entries (arch/x86/profile_64.py) do not count in the depth
# function_graph records, as in the kernel, where fgraph users share one frame per call;
# while there are some, function_graph takes its general paths, which subtract them.
SS_PID, SS_CURR, SS_OVERRUN, SS_GRAPH, SS_NOTRACE, SS_PROF = 0x00, 0x08, 0x10, 0x18, 0x1C, 0x20
SS_ENTRIES, SS_ENTRY = 0x28, 0x20
# The graph hashes as the guest reads them: two pointers (set_graph_function, then
# set_graph_notrace), each 0 or {u64 count; u64 ips[count]} sorted, published with one store.
CELL_GRAPH, CELL_NOTRACE = 0x00, 0x08
ENT_RET, ENT_FUNC, ENT_CALLTIME, ENT_TR = 0x00, 0x08, 0x10, 0x18


def return_slot(out: str, regs: str, ip: str, t: str) -> str:
    """``out`` = where the traced function's return address lies (the parent_ip slot, which
    the return hijack rewrites): regs->sp when ``regs`` is not NULL (ftrace_regs_caller),
    else found through the frame pointer, as ftrace_caller passes no regs: rbp is the
    trampoline's second frame (the callback called from it) or a frame whose saved rbp is
    (called through the list or assist function), told apart by the site+5 that frame
    holds; the slot follows the trampoline's frames and the site's return address. Sets
    ``t`` to zero only if the word below the slot is that return address (site+5): check it
    before hijacking. Branch-free; clobbers ``t``."""
    sp = PT_REGS_OFFSET['sp']
    return f"""
        lea {t}, [{ip} + 5]
        mov {out}, qword ptr [rbp]
        cmp qword ptr [rbp + 8], {t}
        cmove {out}, rbp
        add {out}, {MCOUNT_FRAME_SIZE + 8}
        lea {t}, [rsp - {sp}]
        test {regs}, {regs}
        cmovnz {t}, {regs}
        mov {t}, qword ptr [{t} + {sp}]
        cmovnz {out}, {t}
        mov {t}, qword ptr [{out} - 8]
        sub {t}, {ip}
        sub {t}, 5"""


def shadow_stack_lookup(idle: tuple[int, int], tasks: tuple[int, int], table: int, out: str) -> str:
    """``out`` = the shadow stack of task rax (0 if none); clobbers rcx."""
    idle_span = (idle[1] + 63) & ~63
    return f"""
        mov rcx, rax
        movabs {out}, {idle[0]}
        sub rcx, {out}
        cmp rcx, {idle[1]}
        jb 61f
        mov rcx, rax
        movabs {out}, {tasks[0]}
        sub rcx, {out}
        cmp rcx, {tasks[1]}
        jae 62f
        add rcx, {idle_span}
    61: shr rcx, 6
        movabs {out}, {table}
        mov {out}, qword ptr [{out} + rcx*8]
        jmp 63f
    62: xor {out}, {out}
    63:"""


# The callee-saved registers a hijacking callback uses, and the end of an entry callback
# that saved them and then the flags: ``98`` restores and returns, ``99`` returns (for an
# exit before the saves).
SAVE_CALLEE = """
        push rbx
        push r12
        push r13
        push r14
        push r15"""
ENTRY_HIJACK_EXIT = """
    98: popfq
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbx
    99: ret"""
# A hijacked return's frame: [rsp] flags, r15, r14, r13, r12, rbx, rdx, rax (the return value
# kept), then the slot the real return address goes to.
RET_SLOT, RET_SAVED_RAX = 64, 56
RETURN_HIJACK_EXIT = """
        popfq
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbx
        pop rdx
        pop rax
        ret"""


def shadow_push(handler: int | str, owner: str, reserved: str = "") -> str:
    """Reserve the next entry of the shadow stack r14 (rcx = its index while ``reserved``
    runs), fill it with the return address at [r13], func r12, calltime rdx and ``owner``,
    then make the return go to ``handler`` (an address, or a register holding one).
    Clobbers rax, rcx, r9."""
    hijack = (f"""
        mov qword ptr [r13], {handler}""" if isinstance(handler, str) else f"""
        movabs r9, {handler}
        mov qword ptr [r13], r9""")
    return f"""
        mov rcx, qword ptr [r14 + {SS_CURR}]
        inc qword ptr [r14 + {SS_CURR}]""" + reserved + f"""
        shl rcx, 5
        lea rax, [r14 + rcx + {SS_ENTRIES}]
        mov r9, qword ptr [r13]
        mov qword ptr [rax + {ENT_RET}], r9
        mov qword ptr [rax + {ENT_FUNC}], r12
        mov qword ptr [rax + {ENT_CALLTIME}], rdx
        mov qword ptr [rax + {ENT_TR}], {owner}""" + hijack


def return_hijack_enter(idle: tuple[int, int], tasks: tuple[int, int], table: int) -> str:
    """The start of a return handler: the frame above, interrupts off, r14 = the task's
    shadow stack, rbx = the index of its top entry, rax = that entry, whose return address
    is put in the return slot; r13 = its func, r15 = its calltime (``90f`` without one: the
    shadow stack is gone, a bug). The caller releases the entry and ends with
    RETURN_HIJACK_EXIT."""
    return f"""
        sub rsp, 8
        push rax
        push rdx""" + SAVE_CALLEE + f"""
        pushfq
        cli
        mov rax, qword ptr gs:[{L.PCPU_CURRENT}]""" + shadow_stack_lookup(idle, tasks, table, "r14") + f"""
        test r14, r14
        jz 90f
        mov rbx, qword ptr [r14 + {SS_CURR}]
        test rbx, rbx
        jz 90f
        dec rbx
        mov rcx, rbx
        shl rcx, 5
        lea rax, [r14 + rcx + {SS_ENTRIES}]
        mov rdx, qword ptr [rax + {ENT_RET}]
        mov qword ptr [rsp + {RET_SLOT}], rdx
        mov r13, qword ptr [rax + {ENT_FUNC}]
        mov r15, qword ptr [rax + {ENT_CALLTIME}]"""


def current_shadow_stack(idle: tuple[int, int], tasks: tuple[int, int], table: int, fail: str) -> str:
    """r14 = the current task's shadow stack, emptied first if its slot changed owner (a new
    pid); jumps to ``fail`` when there is none. Clobbers rax, rcx."""
    return f"""
        mov rax, qword ptr gs:[{L.PCPU_CURRENT}]
        test rax, rax
        jz {fail}""" + shadow_stack_lookup(idle, tasks, table, "r14") + f"""
        test r14, r14
        jz {fail}
        mov ecx, dword ptr [rax + {L.TASK_PID}]
        cmp qword ptr [r14 + {SS_PID}], rcx
        je 64f
        mov qword ptr [r14 + {SS_PID}], rcx
        mov qword ptr [r14 + {SS_CURR}], 0
        mov qword ptr [r14 + {SS_GRAPH}], 0
        mov qword ptr [r14 + {SS_PROF}], 0
    64:"""


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


def shadow_page(idle: tuple[int, int], tasks: tuple[int, int], table: int, refuse: str) -> str:
    """r10 = the shadow stack page of task rax (shadow_stack_lookup without a branch), when
    rax is a task slot; if not, ``refuse`` (a register) gets all ones ORed in, r10 is slot 0's
    page and rax that page too, so reads through either stay valid until the caller's one
    branch refuses. Only once function_graph has run, when every slot has its page.
    Clobbers rcx, rdx."""
    idle_span = (idle[1] + 63) & ~63
    return f"""
        movabs rcx, {(idle_span - tasks[0]) % (1 << 64)}
        add rcx, rax
        movabs r10, {(-idle[0]) % (1 << 64)}
        add r10, rax
        cmp r10, {idle[1]}
        cmovb rcx, r10
        xor edx, edx
        cmp rcx, {idle_span + tasks[1]}
        cmovae rcx, rdx
        sbb rdx, rdx
        not rdx
        or {refuse}, rdx
        shr rcx, 6
        movabs r10, {table}
        mov r10, qword ptr [r10 + rcx*8]
        test rdx, rdx
        cmovnz rax, r10"""


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
