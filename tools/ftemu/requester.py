"""The host processes that use the mount, as a guest task (guest/requester.c): before the
mount serves an open, it names the guest's ``requester`` thread after the opening process,
asks CPU 0's tick to wake it (``requester_kick``, as hotplugd's requests: no guest call
interrupts whatever a vCPU was doing) and lets the guest run until it has slept again. On
Linux the process opening a tracing file is itself scheduled (``cat trace`` shows cat's
sched_switch, and a ``schedule:traceon`` command fires in the shell's own schedule()); here
that task stands in for it, so scripts that expect their own activity in the trace (the
kernel's func_traceonoff_triggers.tc) find it right away, not only when the guest happens to
switch tasks between two commands."""
from __future__ import annotations

import struct
from pathlib import Path

from emu import BudgetExceeded, Machine
from emu import memlayout as L

# Guest time a request may wait for its task to run and sleep: under `ftemu mount` virtual
# time follows the wall clock, and on a loaded host 20 ms often passed before it ran.
SETTLE_MS = 500
NOT_RUN = -1             # the mark left in the task's ticks until it is switched in


class Requester:
    """The guest task standing in for the host processes that open files."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self._task_ptr = m.symbol_address("requester_task")
        self._kick = m.symbol_address("requester_kick")
        self._request()                 # the first kick makes the task

    def _request(self) -> None:
        task = self._task()
        if task:            # switching the task in zeroes its ticks: -1 says it has not run yet
            self.m.write(task + L.TASK_TICKS, struct.pack("<i", NOT_RUN))
        self.m.write(self._kick, struct.pack("<i", 1))
        try:
            self.m.run_until(self._served, SETTLE_MS)
        except BudgetExceeded:
            pass                 # a busy guest: the request goes on, the task runs later

    def _task(self) -> int:
        return self.m.read_u64(self._task_ptr)

    def _served(self) -> bool:
        """The tick took the kick and the task has run and sleeps again. That it ran is
        the mark in its ticks gone: a slice can end between the tick clearing the kick and
        waking the task, where "kick clear, task asleep" would be true before it ran; and
        off its CPU is on_cpu clear (finish_task_switch), after its sched_switch out."""
        kernel, task = self.m.kernel, self._task()
        return (not struct.unpack("<i", self.m.read(self._kick, 4))[0] and task != 0
                and struct.unpack("<i", self.m.read(task + L.TASK_TICKS, 4))[0] != NOT_RUN
                and not kernel.on_rq(task)
                and not struct.unpack("<i", self.m.read(task + L.TASK_ON_CPU, 4))[0])

    def run_for(self, host_pid: int) -> None:
        """The process ``host_pid`` makes a request: its comm on the task, kick, let it run."""
        try:
            comm = Path(f"/proc/{host_pid}/comm").read_bytes().strip()[:15]
        except OSError:
            comm = b"requester"
        task = self._task()
        if task:
            self.m.write(task + L.TASK_COMM, comm.ljust(16, b"\0"))
        self._request()
