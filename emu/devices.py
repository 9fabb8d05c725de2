"""Port-I/O devices: the 16550 serial console and the power-off (debug exit) port."""
from __future__ import annotations

from typing import Callable

from . import memlayout as L

UART_THR, UART_LSR = 0, 5
LSR_THRE_TEMT = 0x60


class Serial16550:
    """COM1 as a guest driver sees it: transmit always ready, received data never. Each
    complete line goes through ``rewrite`` (the machine symbolises %pS tokens there)."""

    def __init__(self, base: int = L.COM1_PORT) -> None:
        self.base = base
        self.rewrite: Callable[[str], str] = lambda line: line
        self.output = bytearray()
        self.listeners: list[Callable[[bytes], None]] = []
        self._line = bytearray()
        self.lines_seen: set[str] = set()
        self.watch: set[str] = set()

    def ports(self) -> range:
        return range(self.base, self.base + 8)

    def write(self, port: int, value: int) -> None:
        if port - self.base != UART_THR:
            return
        b = value & 0xFF
        if b == 0x0A:
            line = self.rewrite(self._line.decode("utf-8", "replace"))
            self._line.clear()
            self.output += line.encode() + b"\n"
            if line in self.watch:
                self.lines_seen.add(line)
            for fn in self.listeners:
                fn(line.encode() + b"\n")
        else:
            self._line.append(b)

    def read(self, port: int) -> int:
        return LSR_THRE_TEMT if port - self.base == UART_LSR else 0

    def text(self) -> str:
        return (self.output + self._line).decode("utf-8", "replace")

    def state(self) -> tuple:
        return bytes(self.output), bytes(self._line), frozenset(self.lines_seen)

    def set_state(self, st: tuple) -> None:
        self.output = bytearray(st[0])
        self._line = bytearray(st[1])
        self.lines_seen = set(st[2])


class ExitPort:
    """``outl(EXIT_PORT, code)`` powers the machine off with ``code``."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self.on_exit = on_exit

    def write(self, port: int, value: int) -> None:
        self.on_exit(value)
