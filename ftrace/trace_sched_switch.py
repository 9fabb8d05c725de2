"""Saved command lines and thread-group ids (kernel/trace/trace_sched_switch.c): the pid ->
comm map that ``trace`` names tasks by (``saved_cmdlines``, ``saved_cmdlines_size``) and the
pid -> tgid map of the ``record-tgid`` option (``saved_tgids``).

The kernel saves a task's comm and tgid at sched_switch; the host saves those of every live
guest task whenever a file that prints them is opened (the tasks a reader can meet are those
alive now or saved before). The guest's tasks are single-threaded processes and kernel
threads, so a task's tgid is its pid.
"""
from __future__ import annotations

import errno

from .errors import FtraceError
from .func_probe import kstrtoul

PID_MAX_DEFAULT = 0x8000
TASK_COMM_LEN = 16
SAVED_CMDLINES_DEFAULT = 128
PAGE_SIZE = 4096
# sizeof(struct saved_cmdlines_buffer) on x86-64: map_pid_to_cmdline[PID_MAX_DEFAULT + 1]
# (u32), padding to the map_cmdline_to_pid pointer, cmdline_num, cmdline_idx; then per
# slot a comm and a u32 pid.
SAVEDCMD_HEADER = ((PID_MAX_DEFAULT + 1) * 4 + 7 & ~7) + 8 + 4 + 4
SAVEDCMD_ELEMENT = TASK_COMM_LEN + 4


def cmdline_slots(val: int) -> int:
    """allocate_cmdlines_buffer: the buffer is whole pages (alloc_pages of get_order), and
    every slot that fits is used, so ``val`` rounds up: 128 (the default) gives 6552."""
    size = PAGE_SIZE
    while size < SAVEDCMD_HEADER + val * SAVEDCMD_ELEMENT:
        size <<= 1
    return (size - SAVEDCMD_HEADER) // SAVEDCMD_ELEMENT


class SavedCmdlines:
    """``savedcmd``: slots filled round-robin (the first save takes slot 1), a pid found
    through its low bits (``pid & (PID_MAX_DEFAULT - 1)``) and checked against the slot's
    owner, so a slot reused by another pid forgets the old one."""

    def __init__(self, val: int = SAVED_CMDLINES_DEFAULT) -> None:
        self.num = cmdline_slots(val)
        self.idx = 0
        self.pid_to_slot: dict[int, int] = {}
        self.slot_pid: dict[int, int] = {}      # filled slots only (a copy stays small)
        self.slot_comm: dict[int, str] = {}

    def save(self, pid: int, comm: str) -> None:
        """trace_save_cmdline (the idle task is never saved)."""
        if not pid:
            return
        tpid = pid & (PID_MAX_DEFAULT - 1)
        slot = self.pid_to_slot.get(tpid)
        if slot is None:
            slot = self.pid_to_slot[tpid] = self.idx = (self.idx + 1) % self.num
        self.slot_pid[slot] = pid
        self.slot_comm[slot] = comm[:TASK_COMM_LEN - 1]

    def find(self, pid: int) -> str | None:
        """__trace_find_cmdline: the comm saved for ``pid`` (None: ``<...>``)."""
        if pid == 0:
            return "<idle>"
        slot = self.pid_to_slot.get(pid & (PID_MAX_DEFAULT - 1))
        if slot is None or self.slot_pid.get(slot) != pid:
            return None
        return self.slot_comm[slot]

    def text(self) -> str:
        """saved_cmdlines: ``<pid> <comm>`` per filled slot, in slot order."""
        return "".join(f"{self.slot_pid[slot]} {self.find(self.slot_pid[slot]) or '<...>'}\n"
                       for slot in sorted(self.slot_pid))


def resize_saved_cmdlines(text: str) -> SavedCmdlines:
    """tracing_saved_cmdlines_size_write: a decimal count in 1..PID_MAX_DEFAULT (else
    EINVAL); the new buffer starts empty, as the kernel frees the old one."""
    val = kstrtoul(text, base=10)
    if not 1 <= val <= PID_MAX_DEFAULT:
        raise FtraceError(errno.EINVAL, f"saved_cmdlines_size must be 1..{PID_MAX_DEFAULT}")
    return SavedCmdlines(val)


class SavedTgids:
    """``tgid_map``: allocated the first time an array turns ``record-tgid`` on, filled
    while one has it on, kept afterwards."""

    def __init__(self) -> None:
        self.allocated = False
        self.map: dict[int, int] = {}

    def save(self, pid: int, tgid: int) -> None:
        """trace_save_tgid (the idle task is never saved)."""
        if pid and self.allocated and pid <= PID_MAX_DEFAULT:
            self.map[pid] = tgid

    def find(self, pid: int) -> int:
        """trace_find_tgid: 0 if unknown (``trace`` prints ``(-------)``)."""
        return self.map.get(pid, 0)

    def text(self) -> str:
        """saved_tgids: ``<pid> <tgid>`` for every pid with a tgid, by pid."""
        return "".join(f"{pid} {tgid}\n" for pid, tgid in sorted(self.map.items()) if tgid)
