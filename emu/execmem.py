"""Executable guest memory for host-generated code (the kernel's execmem / module area).

The guest maps EXECMEM_VA -> EXECMEM_PA read-write-execute and never allocates those frames;
the host hands out pieces of it for trampolines, ops copies and its own small stubs.
"""
from __future__ import annotations

from . import memlayout as L

ALIGN = 16


class ExecMem:
    """A first-fit allocator over [EXECMEM_VA, EXECMEM_VA + EXECMEM_SIZE)."""

    def __init__(self) -> None:
        self.free_list: list[tuple[int, int]] = [(L.EXECMEM_VA, L.EXECMEM_SIZE)]
        self.used: dict[int, int] = {}

    def alloc(self, size: int, align: int = ALIGN) -> int:
        """Virtual address of ``size`` fresh bytes aligned to ``align``; MemoryError if full.

        Data the guest writes often belongs in pages of its own (``align=4096`` and a size
        rounded to pages): a write to a page holding translated code takes Unicorn's slow
        self-modifying-code path."""
        size = (size + ALIGN - 1) & ~(ALIGN - 1)
        for i, (start, length) in enumerate(self.free_list):
            pad = -start % align
            if length >= size + pad:
                del self.free_list[i]
                if length > size + pad:
                    self.free_list.insert(i, (start + pad + size, length - size - pad))
                if pad:
                    self.free_list.insert(i, (start, pad))
                self.used[start + pad] = size
                return start + pad
        raise MemoryError("execmem area exhausted")

    def free(self, va: int) -> None:
        """Give back a block from ``alloc``."""
        size = self.used.pop(va)
        self.free_list.append((va, size))
        self.free_list.sort()
        merged: list[tuple[int, int]] = []
        for start, length in self.free_list:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free_list = merged

    @staticmethod
    def to_phys(va: int) -> int:
        return va - L.EXECMEM_VA + L.EXECMEM_PA

    def state(self) -> tuple:
        return list(self.free_list), dict(self.used)

    def set_state(self, st: tuple) -> None:
        self.free_list, self.used = list(st[0]), dict(st[1])
