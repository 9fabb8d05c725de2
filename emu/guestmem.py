"""Machine's access to guest memory (a mixin of ``Machine``): virtual reads and writes
through the kernel's page tables, the translated code a host write must drop, the physical
address of kernel text, and the GDT descriptor words the vCPUs' saved contexts need.
The host walks the guest's page tables itself (emu/paging.py).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_CR3

from . import checks, ucx
from . import memlayout as L
from .cpu import STOPPED
from .errors import EmuError, GuestMemoryError
from .execmem import ExecMem
from .paging import PageFault, PageWalker

if TYPE_CHECKING:
    from .cpu import VCpu


class GuestMemory:
    """Machine's memory half; the machine sets ``ram``, ``walker`` and ``cpus``."""

    ram: memoryview
    walker: PageWalker
    cpus: list[VCpu]

    def kernel_cr3(self) -> int:
        """A CR3 that maps the kernel: a started CPU's, else the loader's."""
        for c in self.cpus:
            if c.state != STOPPED:
                return c.regs.read(UC_X86_REG_CR3)
        return L.BOOT_PML4_PA

    def read(self, addr: int, n: int) -> bytes:
        """Read guest virtual memory (kernel mappings); unmapped: GuestMemoryError."""
        checks.guest_range(addr, n)
        try:
            return self.walker.read(self.kernel_cr3(), addr, n)
        except PageFault as e:
            raise GuestMemoryError(f"read of unmapped guest address 0x{e.va:x}") from None

    def write(self, addr: int, data: bytes) -> None:
        """Write guest virtual memory and drop any translated code of that range. The whole
        range is checked first: if any of it is unmapped (GuestMemoryError) nothing is written."""
        data = checks.data_bytes(data)
        checks.guest_range(addr, len(data))
        if not data:
            return
        try:
            self.walker.write(self.kernel_cr3(), addr, data)
        except PageFault as e:
            raise GuestMemoryError(f"write to unmapped guest address 0x{e.va:x}") from None
        self.invalidate_code(addr, len(data))

    def invalidate_code(self, addr: int, n: int) -> None:
        """Make every vCPU retranslate code in [addr, addr+n) (host writes are not seen)."""
        self.invalidate_code_ranges([(addr, n)])

    def invalidate_code_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """invalidate_code for several ``(addr, n)`` ranges at once. Unicorn translates only
        a range's start and drops the physical range from there, so each range must be
        contiguous physically as well; a vCPU that must forget everything instead does so
        once."""
        for c in self.cpus:
            if c.state == STOPPED or c.cpl() == 3:
                c.flush_tb()              # remove_cache is ignored for kernel pages at CPL3
            else:
                for addr, n in ranges:
                    c.remove_cache(addr, addr + n)

    def text_pa(self, va: int) -> int:
        """Physical address of kernel text or execmem at ``va`` (execmem is mapped by contract,
        so it resolves even before the guest has built its page tables)."""
        if L.EXECMEM_VA <= va < L.EXECMEM_VA + L.EXECMEM_SIZE:
            return ExecMem.to_phys(va)
        try:
            return self.walker.kernel_pa(va, self.kernel_cr3)
        except PageFault:
            raise EmuError(f"no mapping for kernel text at 0x{va:x}") from None

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def descriptor_flags(self, cpu: VCpu, buf, sel: int) -> int:
        """The hidden 'flags' word (descriptor high dword) for selector ``sel`` of the
        current GDT, read from it each time as a CPU does (the guest may edit it in place;
        native/deliver.c reads it afresh too)."""
        gdt = struct.unpack_from("<Q", buf, ucx.CTX_GDT_BASE)[0]
        if gdt == L.BOOT_GDT_PA:
            raw = bytes(self.ram[gdt + (sel & ~7):gdt + (sel & ~7) + 8])
        else:
            raw = self.walker.read(cpu.cr3(), gdt + (sel & ~7), 8)
        return struct.unpack("<II", raw)[1]
