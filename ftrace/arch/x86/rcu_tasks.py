"""The rcu_tasks flavour ftrace needs (kernel/rcu/tasks.h): a grace period ends once no task
can still be inside ftrace code, and call_rcu_tasks frees memory after one.

Holdouts are the tasks running on a CPU that may be inside ftrace code (a trampoline, a stub,
the list or assist function, or a callback they called) and the runnable tasks waiting for a
CPU (they may have been preempted inside); blocked tasks slept voluntarily, which a callback
never does. A holdout is released when it blocks, or is seen running outside; after a text or
pointer change it can only come back through what is published now.

``synchronize`` runs the machine until a grace period ends. ``call_rcu`` queues blocks for
freeing after one; the queue is polled cheaply (no guest instruction runs) at the end of every
ftrace API call, and drained with ``synchronize`` when it grows past ``PRESSURE_BYTES``.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from emu import BudgetExceeded, CallbackError, EmuError, memlayout as L
from emu.cpu import RUNNING, STOPPED
from unicorn.x86_const import UC_X86_REG_RBP

from .insn import MCOUNT_INSN_SIZE

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

PRESSURE_BYTES = 64 * 1024


class RcuTasks:
    """Grace periods over the machine's tasks, and the call_rcu queue of execmem blocks."""

    def __init__(self, machine: "Machine", in_code: Callable[[int], bool],
                 sites: Callable[[], set[int]], free: Callable[[int], None],
                 log: Callable[[str], None]) -> None:
        self.machine = machine
        self._in_code, self._sites, self._free_block, self.log = in_code, sites, free, log
        self.queue: list[tuple[int, int]] = []     # (block, grace periods completed before it may go)
        self.queued_bytes = 0
        self.completed = 0                        # grace periods completed so far
        self._holdouts: set[int] | None = None    # the grace period in progress, if any
        self._quiet: tuple[int, int] | None = None   # _progress() when none was inside

    # ---- grace periods ---------------------------------------------------------------------
    def _running(self) -> dict[int, "VCpu"]:
        kernel = self.machine.kernel
        return {kernel.current(c.index): c for c in self.machine.cpus if c.state != STOPPED}

    def _progress(self) -> tuple[int, int]:
        """Changes whenever a vCPU runs (Machine.call returns to where it was, so not it)."""
        return self.machine.now, sum(c.instructions for c in self.machine.cpus)

    def _start(self) -> set[int]:
        if self._quiet == self._progress():
            return set()            # no holdout last time, and no vCPU has run since
        kernel = self.machine.kernel
        sites = self._sites()
        now = self._running()
        holdouts = {t for t, c in now.items() if self._cpu_inside(c, sites)}
        holdouts |= {t for t in kernel.tasks() if t not in now and kernel.on_rq(t)}
        self._quiet = None if holdouts else self._progress()
        return holdouts

    def _release(self, holdouts: set[int]) -> bool:
        """Drop the holdouts seen outside or blocked now; True once none is left."""
        kernel, sites, now = self.machine.kernel, self._sites(), self._running()
        holdouts.difference_update([t for t in holdouts if (
            not self._cpu_inside(now[t], sites) if t in now else not kernel.on_rq(t))])
        return not holdouts

    def synchronize(self, budget_ms: float = 200) -> bool:
        """synchronize_rcu_tasks: run the machine until a grace period ends; True if it did
        within ``budget_ms`` of virtual time (else the caller must keep what it meant to free).
        Everything queued before the call is freed on success. A Python callback that raises
        meanwhile is kept for the next ``m.run``/``m.call`` (the wait goes on)."""
        m = self.machine
        if m.in_guest():
            return False    # called from a callback: the caller's own frame is inside
        queued = len(self.queue)
        holdouts = self._start()
        deadline = m.now + int(budget_ms * 1e6)
        while not self._release(holdouts):
            try:
                m.run_until(lambda: self._release(holdouts), (deadline - m.now) / 1e6)
            except CallbackError as e:
                m.defer_error(e)
            except BudgetExceeded:
                self.log(f"ftrace: tasks still inside ftrace code after {budget_ms:g} ms: "
                         "keeping the old trampolines")
                return False
        self.completed += 1
        self._holdouts = None
        self._free(self.queue[:queued])
        del self.queue[:queued]
        return True

    def state(self) -> tuple:
        return list(self.queue), self.queued_bytes, self.completed, (
            None if self._holdouts is None else set(self._holdouts))

    def set_state(self, st: tuple) -> None:
        queue, self.queued_bytes, self.completed, holdouts = st
        self.queue, self._quiet = list(queue), None
        self._holdouts = None if holdouts is None else set(holdouts)

    # ---- call_rcu ------------------------------------------------------------------------
    def call_rcu(self, blocks: list[int]) -> None:
        """Free ``blocks`` (execmem addresses) once a grace period that starts now has ended."""
        wait = self.completed + (2 if self._holdouts is not None else 1)
        for va in blocks:
            if va:
                self.queue.append((va, wait))
                self.queued_bytes += self.machine.execmem.used[va]

    def poll(self) -> None:
        """Advance the grace period without running the guest; free what it covers. Drains
        the queue with a full wait when it holds more than PRESSURE_BYTES."""
        if not self.queue or self.machine.in_guest():
            return
        if self.queued_bytes > PRESSURE_BYTES:
            self.synchronize()
            return
        if self._holdouts is None:
            self._holdouts = self._start()
        if not self._holdouts or self._release(self._holdouts):
            self.completed += 1
            self._holdouts = None
            done = [(va, w) for va, w in self.queue if w <= self.completed]
            self.queue = [(va, w) for va, w in self.queue if w > self.completed]
            self._free(done)
            if self.queue:
                self._holdouts = self._start()

    def _free(self, entries: list[tuple[int, int]]) -> None:
        for va, _ in entries:
            self.queued_bytes -= self.machine.execmem.used[va]
            self._free_block(va)

    # ---- is a task inside? -------------------------------------------------------------------
    def _cpu_inside(self, cpu: "VCpu", sites: set[int]) -> bool:
        """Might the task running on ``cpu`` return into ftrace code? Yes while it serves an
        interrupt (it may have interrupted a trampoline); else if its RIP, a return address on
        its frame-pointer chain (ftrace code, or just after a call site: a trampoline's frame),
        or a word of its innermost frame (a leaf callback's return address) says so."""
        if cpu.state != RUNNING or cpu.cpl() == 3:
            return False
        if self.machine.kernel.preempt_count(cpu.index) & (L.NMI_MASK | L.HARDIRQ_MASK | L.SOFTIRQ_OFFSET):
            return True
        rip, rsp, rbp = cpu.rip(), cpu.stack_pointer(), cpu.regs.read(UC_X86_REG_RBP)
        returns = self.machine.return_addresses(cpu, rbp)
        if any(r in sites for r in returns):
            return True
        words = [rip, *returns]
        if rsp < rbp <= rsp + 512:
            try:
                raw = self.machine.read(rsp, rbp + 16 - rsp)
                words += struct.unpack(f"<{len(raw) // 8}Q", raw)
            except EmuError:
                pass
        return any(self._in_code(w) for w in words)


def site_returns(records) -> set[int]:
    """The return addresses of every call site (a trampoline's frame on a stack)."""
    return {r.ip + MCOUNT_INSN_SIZE for r in records}
