"""Crash reports a kernel engineer can read: where the fault happened (not where the panic
ended), a backtrace that crosses exception and interrupt entries as the kernel's unwinder
does, every other CPU in one line, and the guest's own ``[<address>]`` (%pS) tokens
symbolised on the console."""
from __future__ import annotations

import functools
import re
import struct
from typing import TYPE_CHECKING

from guest import SOURCE_DIR

from unicorn.x86_const import UC_X86_REG_RBP

from .errors import EmuError, GuestPanic
from .memlayout import parse_header
from .paging import PageFault

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

PT = parse_header((SOURCE_DIR / "traps.h").read_text())       # struct pt_regs offsets
# Entry stubs (guest/entry.S) by name: the kernel's stack markers for what they entered.
ENTRY_MARKERS = {"asm_exc_divide_error": "#DE", "asm_exc_int3": "#BP", "asm_exc_invalid_op": "#UD",
                 "asm_exc_general_protection": "#GP", "asm_exc_page_fault": "#PF",
                 "asm_exc_double_fault": "#DF", "asm_exc_nmi": "NMI"}
PANIC_PATH = frozenset({"poweroff", "panic", "dump_stack"})
CALL_RETURN = "machine_call_return"   # Machine.call's return stub: the host called from there
_PS_TOKEN = re.compile(r"\[<([0-9a-f]{16})>\]")
_u64 = struct.Struct("<Q")


def entry_marker(name: str) -> str | None:
    """``#PF``, ``NMI``, ``IRQ`` ... for an entry stub's symbol, None for other functions."""
    if name in ENTRY_MARKERS:
        return ENTRY_MARKERS[name]
    if name.startswith("asm_exc_unknown_"):
        return "#" + name.rsplit("_", 1)[1]
    if name.startswith("asm_sysvec_"):
        return "IRQ"
    return None


class Unwind:
    """The frame-pointer walk from (rip, rbp) on ``cpu``, across entries: ``frames`` as %pS
    strings (a ``<#PF>``-style marker line before each interrupted context), ``addrs`` the
    matching addresses (None for markers), ``fault_ip`` the interrupted RIP of the innermost
    exception entry crossed (not an interrupt or NMI), ``interrupted`` (marker, rip) of the
    innermost entry crossed of any kind."""

    def __init__(self, m: "Machine", cpu: "VCpu", rip: int, rbp: int, limit: int = 48,
                 rsp: int | None = None) -> None:
        self.frames: list[str] = []
        self.addrs: list[int | None] = []
        self.fault_ip: int | None = None
        self.interrupted: tuple[str, int] | None = None
        self.ended = False                  # reached Machine.call's stub: the host called
        self._m, self._cr3, self._limit = m, cpu.cr3(), limit
        self._context(rip, rbp, cpu.stack_pointer() if rsp is None else rsp)

    def _context(self, ip: int, rbp: int, rsp: int) -> None:
        """Walk one context (the CPU's, or one an entry interrupted) from its ip."""
        m, read = self._m, self._m.walker.read
        if len(self.frames) >= self._limit:
            return
        self._add(m.lookup(ip), ip)
        pushed = _pushed_before_frame(m, ip)
        if pushed is not None:          # no frame of its own yet: its return address is on
            slot = rsp + 8 * pushed     # the stack above what it pushed; rbp is its caller's
            if self._return_address(slot, slot + 8):
                return
        while not self.ended and len(self.frames) < self._limit and rbp and not rbp & 7:
            try:
                nxt = _u64.unpack(read(self._cr3, rbp, 8))[0]
            except PageFault:
                return
            if self._return_address(rbp + 8, rbp + 16) or nxt <= rbp:
                return
            rbp = nxt

    def _return_address(self, slot: int, regs_at: int) -> bool:
        """Add the return address at ``slot``; if it returns into an entry stub, cross into
        the context its pt_regs (at ``regs_at``) saved. True when the walk is over."""
        m, read = self._m, self._m.walker.read
        try:
            ret = _u64.unpack(read(self._cr3, slot, 8))[0]
        except PageFault:
            return True
        if ret == 0:
            return True
        self._add(m.lookup(ret), ret)
        sym = m.image.containing(ret)
        marker = entry_marker(sym.name) if sym is not None else None
        if self.ended or marker is None:
            return self.ended
        try:
            regs = read(self._cr3, regs_at, PT["PT_SIZE"])
        except PageFault:
            return True
        ip, cs, sp, bp = (_u64.unpack_from(regs, PT[f])[0] for f in ("PT_IP", "PT_CS", "PT_SP", "PT_BP"))
        self.interrupted = self.interrupted or (marker, ip)
        if marker.startswith("#") and self.fault_ip is None:
            self.fault_ip = ip
        if cs & 3:
            self._add(f"<{marker}> user 0x{ip:x}", None)
            return True
        self._add(f"<{marker}>", None)
        self._context(ip, bp, sp)
        return True

    def _add(self, text: str, addr: int | None) -> None:
        self.frames.append(text)
        self.addrs.append(addr)
        self.ended = self.ended or text.startswith(CALL_RETURN + "+")

    def panic_caller(self, m: "Machine") -> int | None:
        """The address panic() was called from: the first frame past the panic path."""
        for addr in self.addrs:
            sym = m.image.containing(addr) if addr is not None else None
            if sym is not None and sym.name not in PANIC_PATH:
                return addr
        return None


def report(cpu: "VCpu", cls: type[EmuError], message: str) -> EmuError:
    """An error of kind ``cls`` about ``cpu``: the RIP where it faulted (for a panic, the
    interrupted RIP of the exception that led to it, or panic's caller), the backtrace
    across entries, and every other CPU in one line."""
    m = cpu.machine
    rip = cpu.rip() if cpu.stop_rip is None else cpu.stop_rip      # a hook stopped before it
    walk = Unwind(m, cpu, rip, cpu.regs.read(UC_X86_REG_RBP))
    where = rip
    if issubclass(cls, GuestPanic):
        where = walk.fault_ip or walk.panic_caller(m) or rip
    others = [cpu_line(m, c) for c in m.cpus if c is not cpu]
    return cls(message, cpu=cpu.index, rip=m.lookup(where), backtrace=walk.frames, others=others)


def _pushed_before_frame(m: "Machine", ip: int) -> int | None:
    """Words the function holding ``ip`` has pushed if it has not yet run ``mov rbp, rsp``
    (capstone over its code up to ``ip``); None once its frame is set up, or if unknown."""
    sym = m.image.containing(ip)
    if sym is None or ip - sym.addr > 4096:
        return None
    try:
        code = m.read(sym.addr, ip - sym.addr)
    except EmuError:
        return None
    pushed = 0
    for insn in _disassembler().disasm(code, sym.addr):
        if insn.mnemonic == "mov" and insn.op_str == "rbp, rsp":
            return None
        if insn.mnemonic == "push":
            pushed += 1
    return pushed


@functools.lru_cache(maxsize=1)
def _disassembler():
    import capstone
    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def cpu_line(m: "Machine", cpu: "VCpu") -> str:
    """One CPU in one line: state, RIP, task, and what an entry interrupted."""
    if cpu.state == "stopped":
        return f"CPU {cpu.index} stopped"
    rip = cpu.rip()
    walk = Unwind(m, cpu, rip, cpu.regs.read(UC_X86_REG_RBP), limit=16)
    line = f"CPU {cpu.index} {cpu.state}: {m.lookup(rip)}"
    try:
        task = m.kernel.current(cpu.index)
        if task:
            pid, comm = m.kernel.task_name(task)
            line += f" [{comm} {pid}]"
    except (LookupError, EmuError):      # a kernel without tasks, a CPU not set up yet
        pass
    if walk.interrupted is not None:
        marker, ip = walk.interrupted
        line += f" <{marker}> from {m.lookup(ip)}"
    return line


def symbolise_line(m: "Machine", line: str) -> str:
    """The guest's %pS tokens ``[<ffffffff81005285>]`` as ``name+0xoff/0xsize``."""
    if "[<" not in line:
        return line
    return _PS_TOKEN.sub(lambda t: m.lookup(int(t.group(1), 16)), line)
