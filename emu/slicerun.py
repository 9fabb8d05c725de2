"""How a vCPU runs a slice (a mixin of ``VCpu``): counting, stopping, and its clock.

Three ways to run, chosen per vCPU:
- deterministic, native block counter (``native``): a C block hook counts instructions and
  ends the run at the last block boundary within the budget (emu/blockcount.py);
- ``count=`` (no native helper, ``FTEMU_NATIVE=0``, or ``set_precise`` for a debugger):
  Unicorn counts every instruction and stops exactly;
- free-running (``kicking``): nothing counts and no block hook is installed: the slice
  timer kicks the engine (emu/kick.py), which leaves at the next block start. Instruction
  figures are then host time in instruction units, and a call's ``max_insns`` is its
  budget in that unit too.
"""
from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING

from unicorn import UcError

from . import blockcount
from . import memlayout as L
from .errors import EmuError
from .ticker import MIN_SLICE_NS

if TYPE_CHECKING:
    from .kick import Kicker
    from .machine import Machine

RFLAGS_IF = 1 << 9
STOPPED, RUNNING, HALTED, PARKED = "stopped", "running", "halted", "parked"


class SliceRunning:
    """The run loop's side of a vCPU (``VCpu`` sets the attributes used here)."""

    machine: "Machine"
    blocks: "blockcount.BlockCounter | None"
    kicker: "Kicker | None"
    precise: bool
    code_hooks: int

    @property
    def native(self) -> "blockcount.BlockCounter | None":
        """The native counter if it counts this CPU's runs now, else None (count= counts, or
        nothing counts: ``kicking``)."""
        return None if self.precise or not self.machine.deterministic else self.blocks

    @property
    def kicking(self) -> bool:
        """Free-running without counting: runs end by a kick at a block start."""
        return self.kicker is not None and not self.precise and not self.machine.deterministic

    def set_precise(self, on: bool) -> None:
        """Instruction-precise runs, for a debugger's single steps and watchpoints: count=
        instead of the native counter or kicks, which end runs only at block starts."""
        if on != self.precise:
            self.precise = on
            self.update_checks()
            self.flush_tb()               # count= only counts code translated while it is on

    @property
    def checked(self) -> bool:
        """Is code translated now with Unicorn's exit checks?"""
        return self.kicker is None or self.kicker.checked

    def update_checks(self) -> None:
        """Translate with Unicorn's exit checks (after every load, store and code hook) only
        where a stop must land inside a block: count= (precise, or no native counter) and a
        code hook's stop under the native counter (exact, before the hooked instruction,
        while any code hook is installed). Kicks need them gone; without them the native
        counter's stops, at block starts, are unchanged and the guest runs ~1.3x faster."""
        if self.kicker is None:
            return
        if self.kicking:
            on = False
        elif self.native is None:
            on = True
        else:
            on = self.code_hooks > 0
        self.kicker.checks(on)

    def now(self) -> int:
        """This CPU's virtual time in ns: exact to the instruction inside a deterministic
        slice, host-clock based in free-running mode."""
        if not self.in_slice:
            return max(self.machine.now, self.clock_ns)
        if self.machine.deterministic:
            if self.native is not None:
                return self.slice_start + self.native.retired(self.rip()) * L.NS_PER_INSN
            return self.slice_start + max(self.counter.value - 1, 0) * L.NS_PER_INSN
        return self.slice_start + time.perf_counter_ns() - self._host_start

    def _rdtsc_miss(self) -> int:
        """rdtsc's value where the C hook has no answer (it cannot raise into C)."""
        try:
            return self.now()
        except BaseException as e:  # noqa: BLE001 - re-raised by after_emu_start
            self._hook_failed(e)
            return 0

    def attach_pvclock(self) -> None:
        """Keep this vCPU's PCPU_PVCLOCK words (guest/memlayout.h) for guest code that reads
        the TSC without rdtsc: the block counter updates the first at every block start,
        ``_set_clock`` the second (the slice's start, or PVCLOCK_INVALID)."""
        percpu = self.machine.kernel.percpu
        if percpu is None:
            return
        host = (self.machine.ram_ptr + percpu - L.KERNEL_VA_OFFSET + self.index * L.PCPU_SIZE
                + L.PCPU_PVCLOCK)
        self._pvclock_start = ctypes.c_uint64.from_address(host + 8)
        self._pvclock_start.value = L.PVCLOCK_INVALID
        if self.blocks is not None:
            self.blocks.set_pvclock(host)

    def _set_clock(self) -> None:
        """Tell the C rdtsc hook how now() reads this CPU's clock in the coming run (before
        every emu_start, and when a nested call moved ``slice_start``), and the guest's
        pvclock whether the block counter keeps it (only while counting blocks exactly)."""
        bc, start = self.blocks, L.PVCLOCK_INVALID
        if bc is None:
            pass
        elif not self.in_slice:
            bc.set_clock(blockcount.TSC_PYTHON, 0)
        elif not self.machine.deterministic:
            bc.set_clock(blockcount.TSC_HOST, self.slice_start, self._host_start)
        elif self.precise:
            bc.set_clock(blockcount.TSC_COUNTER, self.slice_start, 0, ctypes.addressof(self.counter))
        else:
            bc.set_clock(blockcount.TSC_BLOCKS, self.slice_start)
            start = self.slice_start
        self._pvclock_start.value = start

    def _stop_soon(self) -> None:
        """End the run at the next block start (native counter, kicks) or right after this
        instruction (count=), without uc_emu_stop where that could replay instructions."""
        if self.kicking:
            self.kicker.kick()
        elif self.native is not None:
            # Not emu_stop: from an instruction hook Unicorn may leave the block right after
            # it with RIP still at the block start, and the resumed run would replay it.
            self.native.request_stop()
        else:
            self.uc.emu_stop()

    def _hook_failed(self, exc: BaseException) -> None:
        """A raw hook raised: stop, and re-raise once emu_start has returned."""
        if self.hook_error is None:
            self.hook_error = exc
        self._stop_soon()

    def request_stop(self) -> None:
        """End the current slice (the run loop then looks at events). From a code hook: before
        the hooked instruction (free-running: at the next block start). From an instruction
        or MMIO hook: with count=, after this instruction; with the native counter or kicks,
        at the next block start (the rest of the block still runs), and reports name the
        instruction that asked (``stop_rip``)."""
        if not self.in_slice:
            return
        self._stop_requested = True
        if self.native is not None and self._code_hook_rip is not None:
            self._stop_before = self._code_hook_rip      # exact: Unicorn stops right here
            self.uc.emu_stop()
            return
        if self.native is not None:
            # RIP is the instruction's where Unicorn syncs it (rdtsc, port I/O checks), else
            # the block's start.
            self.stop_rip = self.rip()
        self._stop_soon()

    def stop_after_instruction(self) -> None:
        """End the current slice once the instruction now executing has completed, with RIP
        past it. For memory hooks: ``emu_stop`` there leaves RIP on the access, which has
        already happened and would happen again on resume. Needs instruction counting (the
        deterministic mode): the engine's limit is lowered to what has run. Under the native
        counter or kicks (not ``set_precise``) the run ends at the next block start instead."""
        if self.in_slice:
            self._stop_requested = True
            if self.native is not None or self.kicking:
                self._stop_soon()
            else:
                self.limit.value = self.counter.value

    def run_slice(self, start_ns: int, count: int) -> int:
        """Run up to ``count`` instructions' worth of time from ``start_ns``.

        Returns the virtual ns used. Deterministic: the instructions run (the native counter
        ends slices at a block boundary at or before ``count``; count= ends exactly there), or
        the whole slice if the CPU halted. Free-running: the host-time budget, never shorter
        than the ticker's ``MIN_SLICE_NS``, ended by a kick at a block start. Without kicks,
        free-running slices are counted, sized by the host speed measured."""
        self.slice_start = start_ns
        self._stop_requested = False
        self._stop_before = self.stop_rip = None
        self.in_slice = True
        self._host_start = time.perf_counter_ns()
        det = self.machine.deterministic
        budget_ns = count * L.NS_PER_INSN if det else max(count * L.NS_PER_INSN, MIN_SLICE_NS)
        sized = not det and not self.kicking
        if sized:
            count = max(1, int(budget_ns * self._free_ips))
        try:
            ran, exhausted = self.emu_counted(self.rip(), 0, count)
        except UcError as e:
            raise self.fatal(EmuError, f"unicorn stopped: {e}") from None
        finally:
            self.in_slice = False
        self.after_emu_start()
        if sized:
            host_ns = max(time.perf_counter_ns() - self._host_start, 1)
            self._free_ips = 0.5 * self._free_ips + 0.5 * max(ran / host_ns, 1e-3)
        self.instructions += ran
        if not exhausted and not self._stop_requested:
            # Nothing asked Unicorn to stop early, so it stopped at a hlt.
            self.state = HALTED if self.rflags() & RFLAGS_IF else PARKED
        elif det and self.native is not None:
            return ran * L.NS_PER_INSN
        return budget_ns

    def run_from(self, start_ns: int, count: int) -> int:
        """run_slice over the part of [start_ns, start_ns + count instructions) this CPU has
        not run yet: a CPU already ahead of ``start_ns`` (bursts of Machine.sync_cores, calls
        from callbacks) runs only the rest, so its clock never steps back. Returns the ns
        the whole span takes, as run_slice does."""
        skip = max(0, self.clock_ns - start_ns) // L.NS_PER_INSN
        if skip < count:
            before = self.instructions
            self.run_slice(start_ns + skip * L.NS_PER_INSN, count - skip)
            self.clock_ns = self.slice_start + (self.instructions - before) * L.NS_PER_INSN
        return count * L.NS_PER_INSN

    def resume_after_call(self, in_slice: bool, slice_start: int, spent_ns: int) -> None:
        """After Machine.call: a call made inside a slice (from a callback) took time on this
        CPU's clock, so the slice resumes that much later. A call between slices runs outside
        the machine's timeline: the clock stays where the round left it."""
        self.in_slice = in_slice
        self.slice_start = slice_start + spent_ns if in_slice else slice_start
        self._set_clock()

    def emu_counted(self, begin: int, until: int, count: int) -> tuple[int, bool]:
        """emu_start from ``begin`` (to ``until``, 0: none) for at most ``count`` instructions
        (0: no limit); returns (instructions retired, whether the limit ended the run). The
        native counter ends the run at the last block boundary within ``count``; kicks after
        ``count`` instructions' worth of host time (at least MIN_SLICE_NS), and count that
        time as the instructions."""
        if self.kicking:
            return self._emu_kicked(begin, until, max(count * L.NS_PER_INSN, MIN_SLICE_NS))
        bc = self.native
        if bc is None:
            if self.blocks is not None:
                self.blocks.begin(0)      # precise: the block hook must not stop this run
            self._set_clock()
            self.uc.emu_start(begin, until, count=count)
            ran = min(self.counter.value, count)
            return ran, ran == count
        bc.begin(count)
        return self._emu_blocks(begin, until)

    def _emu_blocks(self, begin: int, until: int) -> tuple[int, bool]:
        """emu_start under the native counter (already given its budget)."""
        bc = self.blocks
        self._stop_before = None
        self._set_clock()
        self.uc.emu_start(begin, until)
        if self._stop_before is not None and self.rip() == self._stop_before:
            bc.settle(self._stop_before)          # a code hook stopped it inside a block
        return bc.v.ran, bool(bc.v.stopped) and not self._stop_requested

    def _emu_kicked(self, begin: int, until: int, budget_ns: int) -> tuple[int, bool]:
        """emu_start until the ticker's kick after ``budget_ns`` of host time (a run nested
        in a hook puts the outer run's timer back when it ends)."""
        self._set_clock()
        start = time.perf_counter_ns()
        ticker = self.machine.ticker
        outer = ticker.arm(self.kicker.kick, budget_ns)
        try:
            kicked = self.kicker.run(begin, until)
        finally:
            ticker.disarm(outer)
        return (time.perf_counter_ns() - start) // L.NS_PER_INSN, kicked and not self._stop_requested

    def save_counters(self) -> tuple:
        """The instruction counters of the current run (a nested emu_start reuses them)."""
        native = self.blocks.save() if self.blocks is not None else None
        return self.counter.value, self.limit.value, native

    def restore_counters(self, saved: tuple) -> None:
        self.counter.value, self.limit.value, native = saved
        if native is not None:
            self.blocks.restore(native)
