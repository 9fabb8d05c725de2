"""Function pid filtering (ftrace.c's set_ftrace_pid side) and the ``function-fork`` option.

The filtering itself is guest code: the function tracers' callbacks look the current task's
pid up in the trace array's published pid arrays (``pid_gate`` in arch/x86/trace_64.py), so
nothing on the host runs per call or per context switch, and a task is filtered from its
first instruction on any CPU.

``function-fork`` (ftrace_pid_follow_fork): while it is on, a task created by a listed task
is listed too, and a freed task's pid leaves both lists, as the kernel's sched_process_fork
and sched_process_free probes do (trace_filter_add_remove_task). The guest has no such
tracepoints; an ftrace ops on the functions at those points stands in for them: FORK_HOOK
runs in the creator's context with the new task (pid set, not yet runnable), FREE_HOOK once
a dead task is off its stack. Its callback is Python: tasks come and go rarely, unlike
function calls, and a list change is published as a new array with one pointer store.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from emu import memlayout as L

from .flags import FtraceOpsFlags as FL
from .ops import FtraceOps

if TYPE_CHECKING:
    from .instance import FtraceInstance

FORK_HOOK = "klp_copy_process"   # task_alloc -> copy_process's per-task hook: (child)
FREE_HOOK = "task_free"          # finish_task_switch frees a dead task: (task)
_i32 = struct.Struct("<i")


def trace_ignore_this_task(pids: frozenset[int], no_pids: frozenset[int], pid: int) -> bool:
    """trace.c: ignored if listed in no_pids, or if pids is set and does not list it."""
    return (bool(pids) and pid not in pids) or pid in no_pids


class PidFilter:
    """The function-fork follower of one trace array's pid lists."""

    def __init__(self, inst: "FtraceInstance") -> None:
        self.inst = inst
        self.ft = inst.ft
        self.ops: FtraceOps | None = None

    @property
    def following(self) -> bool:
        return self.ops is not None and bool(self.ops.flags & FL.ENABLED)

    def follow_fork(self, on: bool) -> None:
        """The function-fork option changed (also after a machine snapshot was restored:
        whether the ops is registered is part of ftrace's state)."""
        if on == self.following:
            return
        if on:
            if self.ops is None:
                ops = FtraceOps(self._task_event, FL.SAVE_REGS)
                self.ft.ftrace_set_filter(ops, FORK_HOOK, True)
                self.ft.ftrace_set_filter(ops, FREE_HOOK, False)
                self.ops = ops
            self.ft.register_ftrace_function(self.ops)
        else:
            self.ft.unregister_ftrace_function(self.ops)

    def _pid(self, task: int) -> int:
        return _i32.unpack(self.ft.machine.read(task + L.TASK_PID, 4))[0]

    def _task_event(self, ip: int, parent_ip: int, op: Any, regs: Any) -> None:
        """A task is created (the creator is current) or freed: the lists follow."""
        inst, pid = self.inst, self._pid(regs.di)
        created = self.ft.arch.lookup(ip)[0] == FORK_HOOK
        parent = self.ft.current.pid if created else None
        for attr in ("pids", "no_pids"):
            pids: frozenset[int] = getattr(inst, attr)
            if created and parent in pids and pid not in pids:
                inst.set_pids(attr, pids | {pid})
            elif not created and pid in pids:
                inst.set_pids(attr, pids - {pid})
