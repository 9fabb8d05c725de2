"""Guest code of fgraph's sched_switch probe (the kernel's ftrace_graph_probe_sched_switch),
generated at run time: with the ``sleep-time`` option off, the time a task spends scheduled
out is taken off the calls it is inside of, for function_graph's durations and the
profiler's times alike.

``ftrace_graph_probe_sched_switch(preempt, prev, next)``, called by the guest's
trace_sched_switch (interrupts are off in __schedule): stamps ``prev`` with the time it left
the CPU; if ``next`` was stamped, adds the time since to the calltime of every entry on
``next``'s shadow stack; then goes on to the sched_switch event's probe (which returns at
once while no trace array records the event). Only calltimes in nanoseconds move: an
entry of a trace array on the counter or uptime clock keeps its own (the kernel's fgraph
times are always the local clock's; ftemu's graph entries take their array's clock, and
the profiler's entries name its block, whose clock reads as local). The stamp lives in the
task's shadow-stack page with the pid it belongs to, so a task slot taken over by a new
task starts unstamped (the kernel zeroes ftrace_timestamp in ftrace_graph_init_task).
"""
from __future__ import annotations

from emu import memlayout as L

from .asm import CodeBuilder
from .profile_64 import PROF_SUBTIME
from .shadow_stack_64 import (ENT_CALLTIME, ENT_TR, FTRACE_RETFUNC_DEPTH, SS_CURR, SS_ENTRIES,
                              SS_ENTRY, SS_PID, shadow_stack_lookup)
from .trace_64 import CLOCK_COUNTER, CLOCK_UPTIME, TR_CLOCK

# In a shadow-stack page, past the profiler's subtimes: the time the task was last switched
# out, and the pid that stamp belongs to.
SS_TIMESTAMP, SS_TIMESTAMP_PID = 0xFF0, 0xFF8
assert PROF_SUBTIME + 8 * FTRACE_RETFUNC_DEPTH <= SS_TIMESTAMP


def emit_graph_sleep_probe(b: CodeBuilder, idle: tuple[int, int], tasks: tuple[int, int],
                           table: int, event_probe: int) -> None:
    """ftrace_graph_probe_sched_switch (see the module docstring); ``event_probe`` is the
    sched_switch event's probe, called on with the same arguments."""
    b.label("ftrace_graph_probe_sched_switch")
    b.emit(f"""
        push rdi
        push rsi
        push rdx
        push rbx
        pushfq
        cli
        rdtsc
        shl rdx, 32
        or rdx, rax
        mov rbx, rdx
        mov rax, qword ptr [rsp + 24]""" + shadow_stack_lookup(idle, tasks, table, "r8") + f"""
        test r8, r8
        jz 1f
        mov qword ptr [r8 + {SS_TIMESTAMP}], rbx
        mov rcx, qword ptr [rsp + 24]
        mov ecx, dword ptr [rcx + {L.TASK_PID}]
        mov qword ptr [r8 + {SS_TIMESTAMP_PID}], rcx
    1:  mov rax, qword ptr [rsp + 16]""" + shadow_stack_lookup(idle, tasks, table, "r8") + f"""
        test r8, r8
        jz 9f
        mov rcx, qword ptr [rsp + 16]
        mov ecx, dword ptr [rcx + {L.TASK_PID}]
        cmp qword ptr [r8 + {SS_TIMESTAMP_PID}], rcx
        jne 9f
        cmp qword ptr [r8 + {SS_PID}], rcx
        jne 9f
        mov rax, qword ptr [r8 + {SS_TIMESTAMP}]
        test rax, rax
        jz 9f
        sub rbx, rax
        mov rcx, qword ptr [r8 + {SS_CURR}]
        lea rax, [r8 + {SS_ENTRIES + ENT_CALLTIME}]
    2:  test rcx, rcx
        jz 9f
        mov rdx, qword ptr [rax + {ENT_TR - ENT_CALLTIME}]
        mov edx, dword ptr [rdx + {TR_CLOCK}]
        cmp edx, {CLOCK_COUNTER}
        je 3f
        cmp edx, {CLOCK_UPTIME}
        je 3f
        add qword ptr [rax], rbx
    3:  add rax, {SS_ENTRY}
        dec rcx
        jmp 2b
    9:  popfq
        pop rbx
        pop rdx
        pop rsi
        pop rdi
        movabs rax, {event_probe}
        jmp rax""")
    b.align()
