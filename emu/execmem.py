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

    def alloc(self, size: int) -> int:
        """Virtual address of ``size`` fresh bytes; MemoryError if the area is full."""
        size = (size + ALIGN - 1) & ~(ALIGN - 1)
        for i, (start, length) in enumerate(self.free_list):
            if length >= size:
                self.free_list[i] = (start + size, length - size)
                if length == size:
                    del self.free_list[i]
                self.used[start] = size
                return start
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
