"""The kernel log (``dmesg``): every printk record of the guest, kept by the host.

The guest's printk hands each record to the host (KMSG_PORT: text, length, level) and writes
it to the console itself when its level is below ``console_loglevel``. Messages the host
prints on the kernel's behalf (module loading, livepatch) enter the same log in order, and
reach the console by the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RDX, UC_X86_REG_RSI

from . import memlayout as L

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

LOGLEVEL_CONT = -2
LOGLEVEL_DEFAULT = 4          # MESSAGE_LOGLEVEL_DEFAULT
LOGLEVEL_INFO, LOGLEVEL_NOTICE, LOGLEVEL_WARNING, LOGLEVEL_ERR = 6, 5, 4, 3
KMSG_MAX = 1024


@dataclass(slots=True)
class LogRecord:
    """One line of the log, its level (0 emerg .. 7 debug) and when it began (guest ns, the
    timestamp ``dmesg`` prints)."""
    level: int
    text: str
    ts_ns: int = 0


class KernelLog:
    """The log buffer: whole lines, a pending partial line per writer."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self.records: list[LogRecord] = []
        self.cleared = 0                # records dropped by clear(): the sequence number of records[0]
        self._partial: dict[int, LogRecord] = {}      # writer (cpu index, -1 host) -> open line
        machine.add_port(L.KMSG_PORT, self._on_kmsg)
        machine.snapshot_participants.append(self)

    def _on_kmsg(self, cpu: "VCpu", port: int, value: int) -> None:
        text_va, n, level = (cpu.regs.read(r) for r in (UC_X86_REG_RDI, UC_X86_REG_RSI, UC_X86_REG_RDX))
        n = min(n, KMSG_MAX)
        raw = cpu.read_virt(text_va, n, "printk record") if n else b""
        level = level - (1 << 64) if level >= 1 << 63 else level
        self.store(raw.decode("utf-8", "replace"), level, writer=cpu.index, ts_ns=cpu.now())

    def store(self, text: str, level: int, writer: int = -1, ts_ns: int | None = None) -> None:
        """Append ``text`` (may hold several lines, or continue an unfinished one)."""
        ts = self.m.now if ts_ns is None else ts_ns
        open_line = self._partial.pop(writer, None)
        if open_line is not None and level != LOGLEVEL_CONT:
            self.records.append(open_line)          # a new record ends the unfinished line
            open_line = None
        if open_line is None:
            open_line = LogRecord(LOGLEVEL_DEFAULT if level == LOGLEVEL_CONT else level, "", ts)
        parts = text.split("\n")
        for i, part in enumerate(parts):
            open_line.text += part
            if i < len(parts) - 1:
                self.records.append(open_line)
                open_line = LogRecord(open_line.level, "", ts)
        if open_line.text:
            self._partial[writer] = open_line

    def printk(self, text: str, level: int = LOGLEVEL_INFO) -> None:
        """A message of the kernel written by the host: into the log, and to the console when
        ``level < console_loglevel`` (as the guest's printk decides)."""
        line = text if text.endswith("\n") else text + "\n"
        self.store(line, level)
        if level < self.console_loglevel():
            for b in line.encode():
                self.m.serial.write(self.m.serial.base, b)

    def console_loglevel(self) -> int:
        if not self.m.image.has_symbol("console_loglevel"):
            return 7
        return int.from_bytes(self.m.read(self.m.symbol_address("console_loglevel"), 4), "little", signed=True)

    @property
    def text(self) -> str:
        """``dmesg`` without timestamps: every finished line, oldest first."""
        return "".join(r.text + "\n" for r in self.records)

    def clear(self) -> None:
        """``dmesg -C``."""
        self.cleared += len(self.records)
        self.records.clear()

    def snapshot_state(self) -> tuple:
        return list(self.records), {k: LogRecord(r.level, r.text, r.ts_ns) for k, r in self._partial.items()}

    def restore_state(self, st: tuple) -> None:
        self.records = list(st[0])
        self._partial = {k: LogRecord(r.level, r.text, r.ts_ns) for k, r in st[1].items()}
