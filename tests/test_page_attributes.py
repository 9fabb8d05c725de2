"""Only code is executable: the guest maps its text, execmem's code part and module text
executable, and everything it stores to (data, stacks, the direct map, user stacks) NX.
Besides catching stray jumps, this is the guest's speed: Unicorn takes a slow path for every
store to a page it may execute."""
from __future__ import annotations

import struct

from emu import Machine
from emu import memlayout as L
from emu.paging import ADDR_MASK, PTE_P, PTE_PS

PTE_NX = 1 << 63


def executable(m: Machine, cr3: int, va: int) -> bool:
    """Whether ``va`` is mapped executable at ``cr3``: no level of its walk has NX."""
    table, nx = cr3 & ADDR_MASK, 0
    for shift in (39, 30, 21, 12):
        e = struct.unpack_from("<Q", m.ram, table + 8 * ((va >> shift) & 511))[0]
        assert e & PTE_P, f"0x{va:x} is not mapped"
        nx |= e & PTE_NX
        if shift == 12 or (shift < 39 and e & PTE_PS):
            return not nx
        table = e & ADDR_MASK
    raise AssertionError("unreachable")


def user_cr3(m: Machine) -> int:
    """The CR3 of a user task: its syscalls run on its own page tables."""
    seen: list[int] = []
    hook = m.add_code_hook(m.symbol_address("do_syscall_64"), lambda cpu: seen.append(cpu.cr3()))
    m.run_until(lambda: bool(seen), 200)
    hook.remove()
    return seen[0]


def test_only_code_is_executable(booted_snapshots):
    m = booted_snapshots(1)
    kernel = m.kernel_cr3()
    assert executable(m, kernel, m.symbol_address("bench_fib"))
    assert not executable(m, kernel, m.symbol_address("bench_iterations"))
    assert not executable(m, kernel, L.DIRECT_MAP_VA + m.walker.translate(kernel, m.symbol_address("bench_fib")))
    assert executable(m, kernel, m.execmem.alloc(16))
    assert not executable(m, kernel, m.execmem.alloc(16, executable=False))
    user = user_cr3(m)
    assert executable(m, user, L.USER_CODE_VA)
    for page in range(1, L.USER_STACK_PAGES + 1):
        assert not executable(m, user, L.USER_STACK_TOP - page * 0x1000)
