"""Host-side page walker: guest virtual -> physical through the guest's own 4-level tables.

Unicorn's mem_read/mem_write take physical addresses and its vmem helpers check rights at the
current CPL, so the host walks the tables itself, reading RAM directly. Translations of the
kernel half are cached per CR3 (they do not change after boot); user addresses are walked
every time.
"""
from __future__ import annotations

import struct

PTE_P, PTE_W, PTE_U, PTE_PS = 1, 2, 4, 0x80
ADDR_MASK = 0x000FFFFFFFFFF000
KERNEL_HALF = 0xFFFF800000000000
_u64 = struct.Struct("<Q").unpack_from


class PageFault(Exception):
    """The address has no present mapping."""

    def __init__(self, va: int) -> None:
        super().__init__(f"no mapping for 0x{va:x}")
        self.va = va


class PageWalker:
    """Translate virtual addresses over a RAM buffer (anything indexable as bytes)."""

    def __init__(self, ram: memoryview) -> None:
        self.ram = ram
        self.size = len(ram)
        self._cache: dict[tuple[int, int], int] = {}
        # page -> pa of the kernel-half pages seen (kernel_pa); hot paths may .get() it first
        self.kernel_pages: dict[int, int] = {}

    def flush(self) -> None:
        """Forget cached translations (after a restore or a page-table change)."""
        self._cache.clear()
        self.kernel_pages.clear()

    def translate(self, cr3: int, va: int) -> int:
        """Physical address of ``va``; raises PageFault if it is not mapped."""
        page = va & ~0xFFF
        key = (cr3, page)
        pa = self._cache.get(key)
        if pa is None:
            pa = self._walk(cr3 & ADDR_MASK, page)
            if va >= KERNEL_HALF:
                self._cache[key] = pa
        return pa | (va & 0xFFF)

    def _walk(self, table: int, va: int) -> int:
        if (va >> 47) not in (0, 0x1FFFF):      # not canonical (or not a 64-bit address)
            raise PageFault(va)
        for shift in (39, 30, 21, 12):
            off = table + ((va >> shift) & 511) * 8
            if off + 8 > self.size:
                raise PageFault(va)
            e = _u64(self.ram, off)[0]
            if not e & PTE_P:
                raise PageFault(va)
            if shift in (30, 21) and e & PTE_PS:
                return (e & ADDR_MASK & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1) & ~0xFFF)
            table = e & ADDR_MASK
        return table

    def kernel_pa(self, va: int, cr3_fn) -> int:
        """Physical address of a kernel-half ``va``: its mapping is the same under every
        address space after boot, so it is cached by page alone and ``cr3_fn()`` (a register
        read) is called only on a miss."""
        page = va & ~0xFFF
        pa = self.kernel_pages.get(page)
        if pa is None:
            pa = self._walk(cr3_fn() & ADDR_MASK, page)
            if pa + 0x1000 > self.size:
                raise PageFault(va)
            self.kernel_pages[page] = pa
        return pa | (va & 0xFFF)

    def read(self, cr3: int, va: int, n: int) -> bytes:
        """Read ``n`` bytes of guest virtual memory, page by page."""
        out = bytearray()
        while n:
            chunk = min(n, 0x1000 - (va & 0xFFF))
            pa = self.translate(cr3, va)
            if pa + chunk > self.size:
                raise PageFault(va)
            out += self.ram[pa:pa + chunk]
            va += chunk
            n -= chunk
        return bytes(out)

    def write(self, cr3: int, va: int, data: bytes) -> None:
        """Write guest virtual memory; if any page is unmapped, nothing is written."""
        n = len(data)
        if (va & 0xFFF) + n <= 0x1000:                       # the common case: one page
            pa = self.translate(cr3, va)
            if pa + n > self.size:
                raise PageFault(va)
            self.ram[pa:pa + n] = data
            return
        pieces, pos = [], 0                                  # every page first: all or nothing
        while pos < n:
            chunk = min(n - pos, 0x1000 - (va & 0xFFF))
            pa = self.translate(cr3, va)
            if pa + chunk > self.size:
                raise PageFault(va)
            pieces.append((pa, pos, chunk))
            va += chunk
            pos += chunk
        for pa, pos, chunk in pieces:
            self.ram[pa:pa + chunk] = data[pos:pos + chunk]
