"""GDB watchpoints (Z2/Z3/Z4) as Unicorn memory hooks: the stub's stop after an access."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

WATCH_KINDS = {2: ("watch", UC_HOOK_MEM_WRITE), 3: ("rwatch", UC_HOOK_MEM_READ),
               4: ("awatch", UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE)}


class Watchpoint:
    """A Z2/Z3/Z4 watchpoint: memory hooks on every vCPU over [addr, addr+length).

    Unicorn's memory hooks see physical addresses (paging on), so the range is translated
    page by page through ``cr3`` when inserted; the stop reply names the virtual address."""

    def __init__(self, machine: "Machine", kind: int, addr: int, length: int, cr3: int,
                 on_hit: Callable[["VCpu", str, int], None]) -> None:
        name, hook_type = WATCH_KINDS[kind]
        pieces = []                           # (physical start, length, virtual start)
        va, end = addr, addr + length
        while va < end:
            chunk = min(end - va, 0x1000 - (va & 0xFFF))
            pieces.append((machine.walker.translate(cr3, va), chunk, va))
            va += chunk
        self.handles = []
        for cpu in machine.cpus:
            for pa, n, start in pieces:
                def hit(uc, access, a, size, value, ud, cpu=cpu, pa=pa, start=start) -> None:
                    on_hit(cpu, name, start + max(a - pa, 0))
                self.handles.append((cpu, cpu.uc.hook_add(hook_type, hit, None, pa, pa + n - 1)))
            cpu.uc.ctl_flush_tb()             # translated code would not call the new hook

    def remove(self) -> None:
        for cpu, h in self.handles:
            cpu.hook_del(h)
            cpu.uc.ctl_flush_tb()
        self.handles = []
