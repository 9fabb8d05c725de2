"""The per-task shadow stack that function-graph users share (the kernel's ret_stack in
fgraph.c, with prepare_ftrace_return's return hijack), as guest code fragments: its page
layout, finding the current task's page, pushing an entry and hijacking the return
(``return_slot`` locates the return address), and the frames an entry callback and a
hijacked return keep. Used by function_graph (fgraph_64.py), the function profiler
(profile_64.py) and the sleep-time probe (fgraph_sleep_64.py).

Shadow stacks are per task (a page each, found through a table indexed by the task's slot
in idle_tasks[] and tasks[]); an entry belongs to a task, so context switches, interrupts
and NMIs nest correctly. Slots are reserved before they are filled and read before they
are released, so an NMI arriving in between only uses the slots above. A slot reused by a
new task (another pid) starts with an empty stack.
"""
from __future__ import annotations

from emu import memlayout as L

from .ftrace_64 import MCOUNT_FRAME_SIZE
from .ptregs import PT_REGS_OFFSET

FTRACE_RETFUNC_DEPTH = 50
# A shadow stack page: owner pid, depth in use, overruns, the graph-filter state, the
# function profiler's entries among those in use, then the entries. SS_GRAPH / SS_NOTRACE:
# 1 + the index of the entry that matched set_graph_function / set_graph_notrace (0: none on
# the stack); the kernel's TRACE_GRAPH_BIT and TRACE_GRAPH_NOTRACE_BIT with the depth they
# were set at. The profiler's entries (arch/x86/profile_64.py) do not count in the depth
# function_graph records, as in the kernel, where fgraph users share one frame per call;
# while there are some, function_graph takes its general paths, which subtract them.
SS_PID, SS_CURR, SS_OVERRUN, SS_GRAPH, SS_NOTRACE, SS_PROF = 0x00, 0x08, 0x10, 0x18, 0x1C, 0x20
SS_ENTRIES, SS_ENTRY = 0x28, 0x20
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
