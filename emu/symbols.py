"""Naming guest code (a mixin of ``Machine``): kernel symbols by name, addresses as the
kernel's %pS prints them (the image's symbols, then the sources the host adds for code it
generates, such as ftrace's trampolines), and frame-pointer call chains.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from . import crash
from .errors import EmuError
from .paging import PageFault, PageWalker

if TYPE_CHECKING:
    from .cpu import VCpu
    from .elf import KernelImage


class Symbols:
    """Machine's symbol half; the machine sets ``image``, ``walker`` and ``symbol_sources``."""

    image: KernelImage
    walker: PageWalker
    symbol_sources: list[Callable[[int], str | None]]

    def symbol_address(self, name: str) -> int:
        """Address of a kernel symbol; EmuError if there is none."""
        try:
            return self.image.symbol(name).addr
        except KeyError:
            raise EmuError(f"no kernel symbol named {name!r}") from None

    def lookup(self, addr: int) -> str:
        """``name+0xoff/0xsize``, as the kernel's %pS prints an address (code outside the
        image is named by the symbol sources, e.g. ftrace's trampolines)."""
        if self.image.containing(addr) is None:
            for source in self.symbol_sources:
                name = source(addr)
                if name is not None:
                    return name
        return self.image.lookup(addr)

    def add_symbol_source(self, fn: Callable[[int], str | None]) -> None:
        """Let ``fn(addr)`` name addresses outside the kernel image in %pS format (code the
        host generates, as kallsyms lists ftrace trampolines); None: not its address."""
        self.symbol_sources.append(fn)

    def backtrace(self, cpu: VCpu, rip: int, rbp: int, limit: int = 48) -> list[str]:
        """Frame-pointer backtrace, innermost first, across exception and interrupt entries
        (a ``<#PF>``-style marker line before each interrupted context)."""
        return crash.Unwind(self, cpu, rip, rbp, limit).frames

    def return_addresses(self, cpu: VCpu, rbp: int, limit: int = 64) -> list[int]:
        """The return addresses of the frame-pointer chain starting at ``rbp``, innermost first."""
        out: list[int] = []
        cr3 = cpu.cr3()
        for _ in range(limit):
            if rbp == 0 or rbp & 7:
                break
            try:
                nxt, ret = struct.unpack("<QQ", self.walker.read(cr3, rbp, 16))
            except PageFault:
                break
            if ret == 0:
                break
            out.append(ret)
            if nxt <= rbp:
                break
            rbp = nxt
        return out
