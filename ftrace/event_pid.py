"""set_event_pid and set_event_notrace_pid (trace_events.c's event pid filter): which tasks'
events a trace array records. Each list is published to the guest as {u32 count; u32 pids[]}
with one pointer store in the trace_array (TR_EVENT_PIDS / TR_EVENT_NO_PIDS), the old one
freed after a grace period; the event probes decide per event (events_64.pid_gate), as the
kernel's sched_switch / sched_wakeup pid probes and trace_event_ignore_this_pid do.

With the ``event-fork`` option, a task forked by a listed task is listed too, and an exiting
task leaves both lists (the kernel's sched_process_fork / sched_process_free probes): two code
hooks, on copy_process's point where the child has its pid (klp_copy_process) and on
task_free, present only while a list is set.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from unicorn.x86_const import UC_X86_REG_RDI

from emu import memlayout as L

from .arch.x86.events_64 import TR_EVENT_NO_PIDS, TR_EVENT_PIDS
from .pid_filter import trace_ignore_this_task
from .tracefs import PidFile

if TYPE_CHECKING:
    from emu.cpu import VCpu
    from emu.pseudofs import PseudoFS

    from .trace import TraceArray

FORK_HOOK, FREE_HOOK = "klp_copy_process", "task_free"     # (child), (task): rdi
_i32 = struct.Struct("<i")


class EventPids:
    """The two event pid lists of one trace array (``pids``: set_event_pid, ``no_pids``:
    set_event_notrace_pid), as PidFile reads and sets them."""

    def __init__(self, tr: "TraceArray") -> None:
        self.tr, self.m = tr, tr.m
        self.pids: frozenset[int] = frozenset()
        self.no_pids: frozenset[int] = frozenset()
        self._hooks: list[Any] = []

    def set_pids(self, attr: str, pids: frozenset[int]) -> None:
        """Publish a list (one pointer store; the old block through call_rcu)."""
        setattr(self, attr, pids)
        block = 0
        if pids:
            block = self.m.execmem.alloc(4 + 4 * len(pids), executable=False)
            self.tr.pages.write(block, struct.pack(f"<I{len(pids)}I", len(pids), *sorted(pids)))
        cell = self.tr.va + (TR_EVENT_PIDS if attr == "pids" else TR_EVENT_NO_PIDS)
        old = struct.unpack("<Q", self.tr.pages.read(cell, 8))[0]
        self.tr.pages.write(cell, struct.pack("<Q", block))
        rcu = self.tr.tracing.ft.x86.rcu
        rcu.call_rcu([old])
        rcu.poll()
        self._follow_forks(bool(self.pids or self.no_pids))

    def clear(self) -> None:
        for attr in ("pids", "no_pids"):
            if getattr(self, attr):
                self.set_pids(attr, frozenset())

    def state(self) -> tuple[frozenset[int], frozenset[int]]:
        return self.pids, self.no_pids

    def restore(self, st: tuple[frozenset[int], frozenset[int]]) -> None:
        """After a machine restore (the guest's pointers came back with its memory)."""
        self.pids, self.no_pids = st
        self._follow_forks(bool(self.pids or self.no_pids))

    # ---- event-fork ------------------------------------------------------------------
    def _follow_forks(self, on: bool) -> None:
        if on and not self._hooks:
            self._hooks = [self.m.add_code_hook(self.m.symbol_address(FORK_HOOK), self._forked),
                           self.m.add_code_hook(self.m.symbol_address(FREE_HOOK), self._freed)]
        elif not on:
            for h in self._hooks:
                h.remove()
            self._hooks = []

    def _pid(self, task: int) -> int:
        return _i32.unpack(self.m.read(task + L.TASK_PID, 4))[0]

    def _forked(self, cpu: "VCpu") -> None:
        """trace_filter_add_remove_task(list, parent, child) for both lists."""
        if "event-fork" not in self.tr.options:
            return
        parent = self.m.kernel.current(cpu.index)
        child = self._pid(cpu.regs.read(UC_X86_REG_RDI))
        for attr in ("pids", "no_pids"):
            pids = getattr(self, attr)
            if parent and self._pid(parent) in pids and child not in pids:
                self.m.defer(lambda a=attr: self.set_pids(a, getattr(self, a) | {child}))

    def _freed(self, cpu: "VCpu") -> None:
        """trace_filter_add_remove_task(list, NULL, task): an exiting task leaves both."""
        if "event-fork" not in self.tr.options:
            return
        pid = self._pid(cpu.regs.read(UC_X86_REG_RDI))
        for attr in ("pids", "no_pids"):
            if pid in getattr(self, attr):
                self.m.defer(lambda a=attr: self.set_pids(a, getattr(self, a) - {pid}))


class EventPidFile(PidFile):
    """set_event_pid / set_event_notrace_pid: set_ftrace_pid's grammar, an empty list reads
    as nothing (p_show lists pids only)."""

    def show(self) -> str:
        return "".join(f"{p}\n" for p in sorted(getattr(self.inst, self.attr)))


def register_event_pid_files(pids: EventPids, fs: "PseudoFS") -> None:
    fs.register("set_event_pid", EventPidFile(pids, "pids"))          # type: ignore[arg-type]
    fs.register("set_event_notrace_pid", EventPidFile(pids, "no_pids"))  # type: ignore[arg-type]
