"""Function pid filtering (ftrace.c's set_ftrace_pid side): per trace array and CPU, whether the
task running there is one the function tracers ignore (``ftrace_ignore_pid``), recomputed
when a task switches in (ftrace_filter_pid_sched_switch_probe, a hook on the guest's
finish_task_switch installed only while a pid list is set) and when a list changes.

The tracers read ``FtraceInstance.ignore_pid`` (and are told "ignore_pid" when a CPU's value
changes) so their guest callback can return early on an ignored CPU, as ftrace_pid_func does.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from emu import memlayout as L

if TYPE_CHECKING:
    from emu.cpu import VCpu

    from .instance import FtraceInstance

SWITCH_HOOK = "finish_task_switch"      # runs on the new task right after switch_to
_i32 = struct.Struct("<i")


def trace_ignore_this_task(pids: frozenset[int], no_pids: frozenset[int], pid: int) -> bool:
    """trace.c: ignored if listed in no_pids, or if pids is set and does not list it."""
    return (bool(pids) and pid not in pids) or pid in no_pids


class PidFilter:
    """The ignore flags of one trace array, kept up to date with its pid lists."""

    def __init__(self, inst: "FtraceInstance") -> None:
        self.inst = inst
        self.m = inst.ft.machine
        self._hook: Any = None

    def task_pid(self, cpu: int) -> int | None:
        """The pid of the task running on ``cpu`` (None before it has one)."""
        task = self.m.kernel.current(cpu)
        return _i32.unpack(self.m.read(task + L.TASK_PID, 4))[0] if task else None

    def update(self) -> None:
        """The lists changed: (un)install the switch hook, recompute every CPU."""
        inst = self.inst
        active = bool(inst.pids or inst.no_pids)
        if active and self._hook is None and self.m.image.has_symbol(SWITCH_HOOK):
            self._hook = self.m.add_code_hook(self.m.symbol_address(SWITCH_HOOK), self._switched)
        elif not active and self._hook is not None:
            self._hook.remove()
            self._hook = None
        for cpu in range(len(self.m.cpus)):
            self._set(cpu, active and self._ignored(cpu))

    def _ignored(self, cpu: int) -> bool:
        pid = self.task_pid(cpu)
        return pid is not None and trace_ignore_this_task(self.inst.pids, self.inst.no_pids, pid)

    def _switched(self, cpu: "VCpu") -> None:
        self._set(cpu.index, self._ignored(cpu.index))

    def _set(self, cpu: int, ignore: bool) -> None:
        if self.inst.ignore_pid[cpu] != ignore:
            self.inst.ignore_pid[cpu] = ignore
            self.inst.changed("ignore_pid")

    def release(self) -> None:
        """The trace array goes away: no hook left behind."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
