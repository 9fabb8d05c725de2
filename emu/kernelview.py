"""What the host reads of the guest kernel's own state, through the symbols and offsets of
guest/memlayout.h: per-CPU areas, current tasks, every task."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import memlayout as L

if TYPE_CHECKING:
    from .machine import Machine

_u32, _u64 = struct.Struct("<I"), struct.Struct("<Q")


class KernelView:
    """Reads per-CPU and task state; every read is a plain guest memory read."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        image = machine.image
        self.percpu = image.symbol("percpu").addr if image.has_symbol("percpu") else None
        self._tables: list[tuple[int, int]] = []
        self._stride = 0
        if image.has_symbol("idle_tasks") and image.has_symbol("tasks"):
            idle, tasks = image.symbol("idle_tasks"), image.symbol("tasks")
            self._stride = idle.size // L.NCPU
            self._tables = [(idle.addr, L.NCPU), (tasks.addr, tasks.size // self._stride)]

    def pcpu(self, cpu: int, field: int) -> int:
        """Address of a PCPU_* field of ``cpu``'s per-CPU area."""
        if self.percpu is None:
            raise LookupError("this kernel has no per-CPU area (symbol percpu)")
        return self.percpu + cpu * L.PCPU_SIZE + field

    def preempt_count(self, cpu: int) -> int:
        return _u32.unpack(self.m.read(self.pcpu(cpu, L.PCPU_PREEMPT_COUNT), 4))[0]

    def no_spinlock_held(self) -> bool:
        """True when no vCPU can be holding a spin lock: each one runs with preempt_count 0
        (a spin lock raises it) or is not running (halted at hlt, parked, stopped). Only
        then may the host run a guest function that takes locks on one vCPU while the
        others stand still."""
        return all(c.state != "running" or self.preempt_count(c.index) == 0 for c in self.m.cpus)

    def current(self, cpu: int) -> int:
        """The task running on ``cpu`` (0 before the CPU has one)."""
        return _u64.unpack(self.m.read(self.pcpu(cpu, L.PCPU_CURRENT), 8))[0]

    def task_name(self, task: int) -> tuple[int, str]:
        """(pid, comm) of ``task``."""
        raw = self.m.read(task, L.TASK_COMM + 16)
        comm = raw[L.TASK_COMM:].split(b"\0")[0].decode("ascii", "replace")
        return struct.unpack_from("<i", raw, L.TASK_PID)[0], comm

    def tasks(self) -> list[int]:
        """Every live task (idle tasks included)."""
        out = []
        for base, count in self._tables:
            raw = self.m.read(base, count * self._stride)
            out += [base + i * self._stride for i in range(count)
                    if _u32.unpack_from(raw, i * self._stride + L.TASK_USED)[0]]
        return out

    def on_rq(self, task: int) -> bool:
        """Runnable but not running: preempted or just woken, rather than blocked."""
        return bool(_u32.unpack(self.m.read(task + L.TASK_ON_RQ, 4))[0])
