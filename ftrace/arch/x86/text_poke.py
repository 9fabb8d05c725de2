"""Changing kernel text while vCPUs run: the kernel's int3 batch protocol (text_poke_bp_batch,
now smp_text_poke_batch_finish).

1. write int3 on the first byte of every site, sync every vCPU;
2. write bytes 1..4, sync;  3. write the new first byte, sync.
Between steps the other vCPUs really run (``Machine.sync_cores``), so one can reach a site
mid-change: it then traps on the int3, and ``poke_int3_handler`` emulates the *new*
instruction (a call pushes the return address and jumps; the NOP continues after the site),
so the vCPU behaves as if the new instruction were already there.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from emu import CallbackError

from unicorn.x86_const import UC_X86_REG_RIP, UC_X86_REG_RSP

from .insn import CALL_INSN_OPCODE, INT3_INSN_OPCODE, MCOUNT_INSN_SIZE, call_target

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

INT3 = bytes([INT3_INSN_OPCODE])
BATCH_FLUSH_ALL = 32      # above this many ranges one full translation flush beats removing them
MAX_RUN = 0x10000         # sites this close share one removed range (the kernel's sites span 8 pages)


def code_runs(sites: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(va, length)`` ranges that cover every site ``(ip, physical address)``: sites join a
    range while they lie as far apart physically as virtually, within MAX_RUN, so dropping
    the range drops them whether Unicorn reads it virtually or (as it does: it translates
    the start only) physically. Removing the kernel's few text pages instead of every
    translation keeps the rest (user code, trampolines) and costs a fraction of a flush."""
    runs: list[list[int]] = []
    for ip, pa in sorted(sites):
        end = ip + MCOUNT_INSN_SIZE
        if runs and ip - runs[-1][0] == pa - runs[-1][1] and end - runs[-1][0] <= MAX_RUN:
            runs[-1][2] = end
        else:
            runs.append([ip, pa, end])
    return [(start, end - start) for start, _, end in runs]


class TextPokeHooks:
    """Public observers of the protocol: "step" hooks get (step 1-3, batch) once a step is
    written, "int3" hooks get (cpu index, ip, new insn) when a vCPU meets one of our int3s.
    A hook that raises cannot stop a half-done update: its error is kept as a CallbackError
    for the machine's next run."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.hooks: dict[str, list[Callable]] = {"step": [], "int3": []}

    def add(self, kind: str, fn: Callable) -> Callable[[], None]:
        if not callable(fn):
            raise TypeError(f"a text_poke hook must be callable, not {type(fn).__name__}")
        self.hooks[kind].append(fn)
        return lambda: self.hooks[kind].remove(fn) if fn in self.hooks[kind] else None

    def fire(self, kind: str, *args) -> None:
        for fn in list(self.hooks[kind]):
            try:
                fn(*args)
            except Exception as exc:
                err = CallbackError(f"text_poke {kind} hook {getattr(fn, '__qualname__', '?')} "
                                    f"raised {type(exc).__name__}: {exc}")
                err.__cause__ = exc
                self.machine.defer_error(err)


class TextPoker:
    """Writes guest text through the int3 protocol; installs the breakpoint handler."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.batch: dict[int, bytes] = {}
        self.int3_hits = 0
        self.hooks = TextPokeHooks(machine)
        machine.add_trap_hook(3, self.poke_int3_handler)

    def text_poke_early(self, ip: int, insn: bytes) -> None:
        """Write text directly: only while nothing can run it (boot)."""
        self.machine.write(ip, insn)

    def text_poke_bp(self, ip: int, insn: bytes) -> None:
        """smp_text_poke_single: one site through the whole protocol."""
        self.text_poke_bp_batch({ip: insn})

    def text_poke_bp_batch(self, batch: dict[int, bytes], pa: dict[int, int] | None = None) -> None:
        """Apply every ``ip -> new bytes`` of ``batch`` with the three int3 steps; ``pa`` gives
        the sites' physical addresses where the caller has resolved them already."""
        if not batch:
            return
        self.batch = dict(batch)
        sites = [(ip, pa[ip] if pa else self.machine.text_pa(ip), insn)   # 5 bytes never cross a page
                 for ip, insn in batch.items()]
        runs = code_runs([(ip, at) for ip, at, _ in sites])
        try:
            self._step(1, [(at, INT3) for _, at, _ in sites], runs, batch)
            self._step(2, [(at + 1, insn[1:]) for _, at, insn in sites], runs, batch)
            self._step(3, [(at, insn[:1]) for _, at, insn in sites if insn[0] != INT3_INSN_OPCODE],
                       runs, batch)
        finally:
            self.batch = {}

    def _step(self, step: int, writes: list[tuple[int, bytes]], runs: list[tuple[int, int]],
              batch: dict[int, bytes]) -> None:
        """Write ``writes`` (physical address, bytes), drop the translations of the sites
        (``runs``: the ranges that cover them), and let the other vCPUs run a little."""
        m = self.machine
        ram = m.ram
        for at, data in writes:
            ram[at:at + len(data)] = data
        if len(runs) > BATCH_FLUSH_ALL:
            for c in m.cpus:
                c.flush_tb()
        else:
            m.invalidate_code_ranges(runs)
        if self.hooks.hooks["step"]:
            self.hooks.fire("step", step, dict(batch))
        m.sync_cores()

    def poke_int3_handler(self, cpu: "VCpu") -> bool:
        """A vCPU hit one of our int3s: emulate the instruction being written there."""
        ip = cpu.rip() - 1
        insn = self.batch.get(ip)
        if insn is None:
            return False
        self.int3_hits += 1
        if self.hooks.hooks["int3"]:
            self.hooks.fire("int3", cpu.index, ip, insn)
        after = ip + MCOUNT_INSN_SIZE
        if insn[0] == CALL_INSN_OPCODE:
            rsp = cpu.regs.read(UC_X86_REG_RSP) - 8
            self.machine.walker.write(cpu.cr3(), rsp, struct.pack("<Q", after))
            cpu.regs.write(UC_X86_REG_RSP, rsp)
            cpu.regs.write(UC_X86_REG_RIP, call_target(ip, insn))
        else:
            cpu.regs.write(UC_X86_REG_RIP, after)
        return True
