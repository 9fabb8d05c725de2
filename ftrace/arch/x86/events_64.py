"""Guest code of the trace events: one probe per tracepoint (guest/tracepoint.h), called by
the guest's trace_<event>(a, b, c) while some trace array has the event enabled.

``probe_<event>(a, b, c)``: for each trace array in the event's list ({u64 count; u64 tr[]},
published through one pointer at ``list_ptr``), if it records on this CPU, the event is not
soft-disabled there (a byte per event at TR_EVENT_SOFT, set by the enable_event /
disable_event commands) and its set_event_pid / set_event_notrace_pid let it (pid_gate), write the event with the kernel's field layout (the ``fill`` code
of the event) and the guest's latency flags. Interrupts are off while each event is written; the nest flag protects it from NMIs.
"""
from __future__ import annotations

from emu import memlayout as L

from ...ring_buffer import RB_DROPPED, RB_NEST
from .asm import CodeBuilder
from .ring_buffer_64 import COMMIT
from .trace_64 import begin_event, pid_in_array, tracing_gate

PRIO_NORMAL = 120       # the kernel's prio of a nice-0 task (the guest has no priorities)
TR_EVENT_SOFT = 0x200   # in struct trace_array: u8 per event, EVENT_FILE_FL_SOFT_DISABLED
# set_event_pid / set_event_notrace_pid: {u32 count; u32 pids[]} or 0, one pointer store each
TR_EVENT_PIDS, TR_EVENT_NO_PIDS = 0x240, 0x248
PID_LISTED, PID_NOTRACE = 1, 2          # event_pid_bits: passes set_event_pid, is in notrace


def _set_if_listed(cell: int, empty: str, bit: int) -> str:
    """eax |= ``bit`` if the pid array at [r8 + cell] holds ecx; an absent array counts as
    ``empty`` ("listed" or "missing"). Clobbers r9, r11."""
    return f"""
        mov r9, qword ptr [r8 + {cell}]
        test r9, r9
        jz {"61f" if empty == "listed" else "62f"}
""" + pid_in_array("ecx", 60, "62f") + f"""
    61: or eax, {bit}
    62:"""


def emit_event_pid_bits(b: CodeBuilder) -> None:
    """``event_pid_bits``: r8 = trace_array, ecx = a pid; eax = PID_LISTED if set_event_pid
    is empty or lists it, | PID_NOTRACE if set_event_notrace_pid lists it. Clobbers r9, r11."""
    b.label("event_pid_bits")
    b.emit("""
        xor eax, eax""" + _set_if_listed(TR_EVENT_PIDS, "listed", PID_LISTED)
           + _set_if_listed(TR_EVENT_NO_PIDS, "missing", PID_NOTRACE) + """
        ret""")
    b.align()


def _pid_of(task: str) -> str:
    """ecx = the pid of ``task`` (a register holding a task, or "current": 0 before any)."""
    if task != "current":
        return f"""
        mov ecx, dword ptr [{task} + {L.TASK_PID}]"""
    return f"""
        mov rcx, qword ptr gs:[{L.PCPU_CURRENT}]
        test rcx, rcx
        jz 81f
        mov ecx, dword ptr [rcx + {L.TASK_PID}]
    81:"""


def pid_gate(kind: str, bits: int, skip: str) -> str:
    """Jump to ``skip`` if the pid lists of the trace_array in r8 leave this event out, as the
    kernel's sched_switch/sched_wakeup pid probes and trace_event_ignore_this_pid decide:
    ``current`` (most events) by the running task; ``switch`` (r13 prev, r14 next) only when
    both are in set_event_notrace_pid or neither passes set_event_pid; ``wakeup`` (r12 the
    woken task) only when neither the running task nor the woken one passes. Clobbers rax,
    rcx, rdx, r9, r11."""
    fast = f"""
        mov rax, qword ptr [r8 + {TR_EVENT_PIDS}]
        or rax, qword ptr [r8 + {TR_EVENT_NO_PIDS}]
        jz 80f"""
    if kind == "switch":
        return fast + _pid_of("r13") + f"""
        call {bits}
        mov edx, eax""" + _pid_of("r14") + f"""
        call {bits}
        mov ecx, eax
        and ecx, edx
        test ecx, {PID_NOTRACE}
        jnz {skip}
        or eax, edx
        test eax, {PID_LISTED}
        jz {skip}
    80:"""
    gate = fast + _pid_of("current") + f"""
        call {bits}
        cmp eax, {PID_LISTED}"""
    if kind == "wakeup":
        gate += """
        je 80f""" + _pid_of("r12") + f"""
        call {bits}
        cmp eax, {PID_LISTED}"""
    return gate + f"""
        jne {skip}
    80:"""


def copy_comm(task: str, offset: int) -> str:
    """task->comm (16 bytes) to the payload at ``offset``; clobbers rcx."""
    return f"""
        mov rcx, qword ptr [{task} + {L.TASK_COMM}]
        mov qword ptr [rax + {offset}], rcx
        mov rcx, qword ptr [{task} + {L.TASK_COMM + 8}]
        mov qword ptr [rax + {offset + 8}], rcx"""


def task_fields(task: str, offset: int) -> str:
    """comm[16], pid, prio of ``task`` at ``offset`` (the sched events' layout)."""
    return copy_comm(task, offset) + f"""
        mov ecx, dword ptr [{task} + {L.TASK_PID}]
        mov dword ptr [rax + {offset + 16}], ecx
        mov dword ptr [rax + {offset + 20}], {PRIO_NORMAL}"""


# The fill code of each event: arguments in r12, r13, r14, payload at rax; may use rcx, rdx.
SCHED_SWITCH_FILL = task_fields("r13", 8) + f"""
        mov rdx, 0x100
        test r12, r12
        jnz 51f
        mov edx, dword ptr [r13 + {L.TASK_STATE}]
        test edx, 0x80
        jz 50f
        mov edx, 0x10
        jmp 51f
    50: and edx, 3
    51: mov qword ptr [rax + 32], rdx""" + task_fields("r14", 40)

SCHED_WAKEUP_FILL = task_fields("r12", 8) + f"""
        mov ecx, dword ptr [r12 + {L.TASK_CPU}]
        mov dword ptr [rax + 32], ecx"""

SOFTIRQ_FILL = """
        mov dword ptr [rax + 8], r12d"""

IRQ_NAME_MAX = 16       # action->name bytes kept, NUL included (the payload has a fixed size)

# irq_handler_entry: irq, then __data_loc char[] name ((length << 16) | offset) and the name,
# zero-padded, after the fixed fields. Uses r8 (free once trace_ctx has run).
IRQ_HANDLER_ENTRY_FILL = f"""
        mov dword ptr [rax + 8], r12d
        mov qword ptr [rax + 16], 0
        mov qword ptr [rax + 24], 0
        mov rdx, qword ptr [r13 + {L.IRQACTION_NAME}]
        xor ecx, ecx
    60: movzx r8d, byte ptr [rdx + rcx]
        test r8d, r8d
        jz 61f
        mov byte ptr [rax + rcx + 16], r8b
        inc ecx
        cmp ecx, {IRQ_NAME_MAX - 1}
        jb 60b
    61: inc ecx
        shl ecx, 16
        or ecx, 16
        mov dword ptr [rax + 12], ecx"""

IRQ_HANDLER_EXIT_FILL = """
        mov dword ptr [rax + 8], r12d
        mov dword ptr [rax + 12], r14d"""


def emit_probe(b: CodeBuilder, name: str, type_id: int, length: int, fill: str,
               list_ptr: int, index: int, pids: str) -> None:
    """probe_<name> (see the module docstring); ``pids`` is its pid_gate kind."""
    clock = b.labels["trace_clock"]
    b.label(f"probe_{name}")
    b.emit(f"""
        push rbx
        push r12
        push r13
        push r14
        push r15
        mov r12, rdi
        mov r13, rsi
        mov r14, rdx
        movabs r15, {list_ptr}
        mov r15, qword ptr [r15]
        test r15, r15
        jz 9f
        mov rbx, qword ptr [r15]
    1:  test rbx, rbx
        jz 9f
        dec rbx
        mov r8, qword ptr [r15 + rbx*8 + 8]""" + tracing_gate("r8", "1b") + f"""
        cmp byte ptr [r8 + {TR_EVENT_SOFT + index}], 0
        jne 1b""" + pid_gate(pids, b.labels["event_pid_bits"], "1b") + f"""
        pushfq
        cli
        call {clock}""" + begin_event("r8", length, type_id, "98f", "97f") + """
        mov qword ptr [rax], rcx""" + fill + COMMIT + f"""
    97: mov dword ptr [rdi + {RB_NEST}], 0
        popfq
        jmp 1b
    98: inc qword ptr [rdi + {RB_DROPPED}]
        popfq
        jmp 1b
    9:  pop r15
        pop r14
        pop r13
        pop r12
        pop rbx
        ret""")
    b.align()
