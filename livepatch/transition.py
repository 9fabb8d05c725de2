"""The consistency model (kernel/livepatch/transition.c).

Every task has a ``patch_state`` and a ``TIF_PATCH_PENDING`` flag in its guest task struct.
A transition marks every task pending; a task switches to the target state when it passes a
safe point (return to user space, the idle loop: guest code), or when the host finds its
stack free of the functions being replaced (a sleeping task's frame-pointer chain, a halted
CPU's idle task, the task that asked for the transition). What is left is retried every
second by the guest's transition work; every 15 tries the remaining tasks get a fake signal.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from unicorn.x86_const import UC_X86_REG_RBP

from emu import memlayout as L
from emu.cpu import RUNNING, STOPPED

from .structs import KlpFunc, KlpPatch

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

    from .patch import KlpPatcher

SIGNALS_TIMEOUT = 15
MAX_STACK_ENTRIES = 100
IDLE, UNPATCHED, PATCHED = L.KLP_TRANSITION_IDLE, L.KLP_TRANSITION_UNPATCHED, L.KLP_TRANSITION_PATCHED
PENDING = 1 << L.TIF_PATCH_PENDING
SYNC_STEP, SYNC_MAX_STEPS = 64, 1000
_i32, _q = struct.Struct("<i"), struct.Struct("<Q")


def state_word(state: int) -> str:
    return "patching" if state == PATCHED else "unpatching"


@dataclass
class TaskView:
    """A task as the transition sees it."""
    addr: int
    pid: int
    comm: str
    cpu: "VCpu | None"            # the vCPU it is running on, if any


class KlpTransition:
    """The transition in progress (at most one), as klp_transition_patch & co."""

    def __init__(self, m: "Machine", patcher: "KlpPatcher", log: Callable[[str, int], None]) -> None:
        self.m = m
        self.patcher = patcher
        self.log = log
        self.patch: KlpPatch | None = None
        self.target = IDLE
        self.signals_cnt = 0
        self.requester: "VCpu | None" = None     # the vCPU whose task asked (it is current)
        self.want_signal: list[int] = []          # tasks to wake with the fake signal
        # The handler: its common case and the general code. As the kernel's handler runs
        # with preemption off, ours runs with interrupts held: a vCPU whose RIP is outside
        # it is not in the middle of it (synchronize).
        self.handler_ranges = [(s.addr, s.addr + s.size) for s in map(
            m.image.symbol, ("klp_ftrace_handler", "klp_ftrace_handler_general"))]
        for lo, hi in self.handler_ranges:
            m.hold_interrupts_in(lo, hi)
        self.last_holdouts: dict[int, str] = {}   # task -> why it has not switched (explain)

    # ---- guest state ----------------------------------------------------------------------
    def _set_target(self, state: int) -> None:
        self.target = state
        self.m.write(self.m.symbol_address("klp_target_state"), _i32.pack(state))
        self.m.write(self.m.symbol_address("klp_transition_patch"),
                     _q.pack(self.patch.addr if self.patch and state != IDLE else 0))

    def tasks(self) -> list[TaskView]:
        """Every task, with the vCPU it is current on (running, halted or parked)."""
        running = {}
        for c in self.m.cpus:
            if c.state != STOPPED:
                running[self.m.kernel.current(c.index)] = c
        out = []
        for t in self.m.kernel.tasks():
            raw = self.m.read(t, L.TASK_COMM + 16)
            pid = struct.unpack_from("<i", raw, L.TASK_PID)[0]
            comm = raw[L.TASK_COMM:L.TASK_COMM + 16].split(b"\0", 1)[0].decode("utf-8", "replace")
            out.append(TaskView(t, pid, comm, running.get(t)))
        return out

    def patch_state(self, task: int) -> int:
        return _i32.unpack(self.m.read(task + L.TASK_PATCH_STATE, 4))[0]

    def _set_patch_state(self, task: int, state: int) -> None:
        self.m.write(task + L.TASK_PATCH_STATE, _i32.pack(state))

    def _flags(self, task: int) -> int:
        return _q.unpack(self.m.read(task + L.TASK_FLAGS, 8))[0]

    def _set_pending(self, task: int, on: bool) -> None:
        f = self._flags(task)
        self.m.write(task + L.TASK_FLAGS, _q.pack(f | PENDING if on else f & ~PENDING))

    def update_patch_state(self, task: int) -> None:
        """klp_update_patch_state: test-and-clear PENDING, take the target state."""
        if self._flags(task) & PENDING:
            self._set_pending(task, False)
            self._set_patch_state(task, self.target)

    # ---- the steps ------------------------------------------------------------------------
    def init(self, patch: KlpPatch, state: int) -> None:
        """klp_init_transition: every task starts at the opposite state; funcs in transition."""
        self.patch = patch
        self._set_target(state)
        self.log(f"livepatch: '{patch.name}': initializing {state_word(state)} transition", 7)
        initial = UNPATCHED if state == PATCHED else PATCHED
        for t in self.tasks():
            self._set_patch_state(t.addr, initial)
        for f in patch.funcs():
            f.set_transition(self.m, True)

    def start(self) -> None:
        """klp_start_transition: mark every task not yet at the target."""
        assert self.patch is not None
        self.log(f"livepatch: '{self.patch.name}': starting {state_word(self.target)} transition", 5)
        for t in self.tasks():
            if self.patch_state(t.addr) != self.target:
                self._set_pending(t.addr, True)
        self.signals_cnt = 0

    def synchronize(self) -> None:
        """klp_synchronize_transition: until no vCPU is inside klp_ftrace_handler (run with
        interrupts held; it calls out only to preempt_schedule, after its last read of the
        func stack), step the ones that are, as the kernel's schedule_on_each_cpu waits for
        every CPU to pass a schedule point."""
        for _ in range(SYNC_MAX_STEPS):
            inside = [c for c in self.m.cpus if c.state == RUNNING
                      and any(lo <= c.rip() < hi for lo, hi in self.handler_ranges)]
            if not inside:
                return
            for c in inside:
                c.run_slice(c.now(), SYNC_STEP)
        raise RuntimeError("livepatch: a vCPU never left klp_ftrace_handler")

    def _stack(self, t: TaskView) -> list[int] | None:
        """Return addresses of a task that is not running, innermost first; None if the
        frame-pointer chain leaves the task's stack (unreliable)."""
        cpu = t.cpu or self.m.cpus[0]
        kstack = _q.unpack(self.m.read(t.addr + L.TASK_KSTACK, 8))[0]
        if t.cpu is not None:                   # halted idle task, or the requester
            rip, rbp = t.cpu.rip(), t.cpu.regs.read(UC_X86_REG_RBP)
            entries = [rip]
        else:
            sp = _q.unpack(self.m.read(t.addr + L.TASK_THREAD_SP, 8))[0]
            bp, ret = struct.unpack("<QQ", self.m.read(sp + 40, 16))   # inactive_task_frame
            rbp, entries = bp, [ret]
        if rbp and not kstack <= rbp < kstack + L.KSTACK_SIZE and not self._on_idle_stack(rbp):
            return None
        entries += self.m.return_addresses(cpu, rbp, MAX_STACK_ENTRIES)
        return entries

    def _on_idle_stack(self, addr: int) -> bool:
        return self.m.image.has_symbol("idle_stacks") and (
            0 <= addr - self.m.symbol_address("idle_stacks") < L.NCPU * L.KSTACK_SIZE)

    def _check_stack(self, t: TaskView) -> tuple[int, str]:
        """klp_check_stack: 0, or the reason it cannot switch and the function named."""
        entries = self._stack(t)
        if entries is None:
            return -22, ""
        assert self.patch is not None
        for func in self.patch.funcs():
            if self.target == UNPATCHED:
                lo, size = func.new_func, func.new_size
            else:
                prev = self.patcher.previous(func)
                lo, size = (prev.new_func, prev.new_size) if prev else (func.old_func, func.old_size)
            if any(lo <= a < lo + size for a in entries):
                return -98, func.old_name
        return 0, ""

    def try_switch_task(self, t: TaskView) -> bool:
        """klp_try_switch_task: switch a task whose stack is clean; log why not."""
        if self.patch_state(t.addr) == self.target:
            return True
        if t.pid == 0 and t.cpu is None:        # an offline CPU's idle task (klp: at once)
            self.update_patch_state(t.addr)
            return True
        if t.cpu is not None and t.cpu.state == RUNNING and t.cpu is not self.requester:
            ret, name = -16, ""                 # running elsewhere; halted CPUs are checked
        else:
            ret, name = self._check_stack(t)
        who = f"klp_try_switch_task: {t.comm}:{t.pid}"
        if ret == 0:
            self._set_pending(t.addr, False)
            self._set_patch_state(t.addr, self.target)
            self.last_holdouts.pop(t.addr, None)
            return True
        why = {-16: "is running", -22: "has an unreliable stack",
               -98: f"is sleeping on function {name}"}[ret]
        self.last_holdouts[t.addr] = why
        self.log(f"livepatch: {who} {why}", 7)
        return False

    def try_complete(self) -> bool | None:
        """klp_try_complete_transition: True when done (completed), False if tasks remain
        (the caller arms the retry), None when there is no transition."""
        if self.patch is None:
            return None
        complete = True
        self.last_holdouts = {}
        for t in self.tasks():
            if not self.try_switch_task(t):
                complete = False
        if not complete:
            if self.signals_cnt and self.signals_cnt % SIGNALS_TIMEOUT == 0:
                self.send_signals()
            self.signals_cnt += 1
            return False
        self.complete()
        return True

    def send_signals(self) -> None:
        """klp_send_signals: wake the tasks still pending (kthreads and sleeping user tasks
        alike: the guest has no signals, a wake-up from an interruptible sleep stands in)."""
        self.log("livepatch: signaling remaining tasks", 5)
        self.want_signal = [t.addr for t in self.tasks() if self._flags(t.addr) & PENDING and t.pid]

    def complete(self) -> None:
        """klp_complete_transition, up to the post callbacks (core.py finishes it)."""
        patch = self.patch
        assert patch is not None
        self.log(f"livepatch: '{patch.name}': completing {state_word(self.target)} transition", 7)

    def all_idle(self) -> None:
        """klp_complete_transition: every task IDLE (before the post callbacks)."""
        for t in self.tasks():
            self._set_pending(t.addr, False)
            self._set_patch_state(t.addr, IDLE)

    def finish(self) -> None:
        """The tail of klp_complete_transition: no transition any more."""
        self.patch = None
        self._set_target(IDLE)

    def reverse(self) -> None:
        """klp_reverse_transition: flip the target, clear every PENDING, start again."""
        assert self.patch is not None
        frm = "patching to unpatching" if self.target == PATCHED else "unpatching to patching"
        self.log(f"livepatch: '{self.patch.name}': reversing transition from {frm}", 7)
        self.patch.enabled = not self.patch.enabled
        self.patch.write_flags(self.m)
        self._set_target(UNPATCHED if self.target == PATCHED else PATCHED)
        for t in self.tasks():
            self._set_pending(t.addr, False)
        self.synchronize()
        self.start()

    def force(self) -> None:
        """klp_force_transition: every task takes the target state now (the consistency
        guarantee is gone: the patches being removed are marked forced)."""
        self.log("livepatch: forcing remaining tasks to the patched state", 4)
        for t in self.tasks():
            self.update_patch_state(t.addr)

    def snapshot_state(self) -> tuple:
        return self.patch, self.target, self.signals_cnt

    def restore_state(self, st: tuple) -> None:
        self.patch, self.target, self.signals_cnt = st
