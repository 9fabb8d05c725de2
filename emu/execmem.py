"""Guest memory for what the host generates (the kernel's execmem area): code and its data.

The guest maps EXECMEM_VA -> EXECMEM_PA and never allocates those frames. Its first
EXECMEM_CODE_SIZE bytes are executable (trampolines, stubs, guest-native callbacks); the rest
is mapped NX for the data that code uses (ops copies, hashes, mailboxes, counters, buffers):
Unicorn takes a slow path for every store to a page it may execute, so data kept apart from
code makes the guest's stores to it about eight times cheaper.
"""
from __future__ import annotations

from . import memlayout as L

ALIGN = 16


class _Area:
    """A first-fit allocator over one range."""

    def __init__(self, start: int, size: int, what: str) -> None:
        self.free_list: list[tuple[int, int]] = [(start, size)]
        self.what = what

    def alloc(self, size: int, align: int, used: dict[int, int]) -> int:
        for i, (start, length) in enumerate(self.free_list):
            pad = -start % align
            if length >= size + pad:
                del self.free_list[i]
                if length > size + pad:
                    self.free_list.insert(i, (start + pad + size, length - size - pad))
                if pad:
                    self.free_list.insert(i, (start, pad))
                used[start + pad] = size
                return start + pad
        raise MemoryError(f"execmem {self.what} area exhausted")

    def free(self, va: int, size: int) -> None:
        merged: list[tuple[int, int]] = []
        for start, length in sorted(self.free_list + [(va, size)]):
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free_list = merged


class ExecMem:
    """Allocator over [start, start + size): code below start + code_size, data (NX) above.
    By default the execmem area; the module area is another (``ModuleArea``)."""

    def __init__(self, start: int = L.EXECMEM_VA, size: int = L.EXECMEM_SIZE,
                 code_size: int = L.EXECMEM_CODE_SIZE) -> None:
        self.code_end = start + code_size
        self.code = _Area(start, code_size, "code")
        self.data = _Area(self.code_end, size - code_size, "data")
        self.used: dict[int, int] = {}

    def alloc(self, size: int, align: int = ALIGN, executable: bool = True) -> int:
        """Virtual address of ``size`` fresh bytes aligned to ``align``, in an executable page
        or (``executable=False``) in an NX data page; MemoryError if that part is full."""
        if not isinstance(size, int) or not isinstance(align, int) or size <= 0 or align <= 0 \
                or align & (align - 1):
            raise ValueError(f"bad execmem request: size {size!r}, align {align!r}")
        size = (size + ALIGN - 1) & ~(ALIGN - 1)
        return (self.code if executable else self.data).alloc(size, align, self.used)

    def free(self, va: int) -> None:
        """Give back a block from ``alloc``."""
        size = self.used.pop(va)
        (self.code if self.executable(va) else self.data).free(va, size)

    def executable(self, va: int) -> bool:
        """Whether ``va`` (inside the area) is in its executable part."""
        return va < self.code_end

    @staticmethod
    def to_phys(va: int) -> int:
        return va - L.EXECMEM_VA + L.EXECMEM_PA

    def state(self) -> tuple:
        return list(self.code.free_list), list(self.data.free_list), dict(self.used)

    def set_state(self, st: tuple) -> None:
        self.code.free_list, self.data.free_list = list(st[0]), list(st[1])
        self.used = dict(st[2])
