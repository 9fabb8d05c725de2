"""The machine as an emulator test suite sees it, on a tiny purpose-built guest
(tests/tinyguest/tiny.S): delivery through the guest IDT, the APIC timer and hlt idle,
ring 3 and syscall, power off, errors, determinism and snapshots."""
from __future__ import annotations

import pytest

from emu import BudgetExceeded, EmuError, GuestPanic, Machine, TripleFault


def counters(m: Machine) -> dict[str, int]:
    return {n: m.read_u64(m.symbol_address(n)) for n in ("ticks", "bp_count", "last_cr2", "last_pf_err")}


def test_full_tour_int3_pagefault_timer_ring3_syscall_and_exit(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    m.run(ms=50)
    assert m.console == "tiny: hello\nhello from ring 3\n"
    assert counters(m) == {"ticks": 5, "bp_count": 1, "last_cr2": 0x40000000, "last_pf_err": 0}
    assert m.exit_code == 42 + 5          # the syscall returned 42, plus the tick count
    # five 1 ms ticks waited in hlt: virtual time skipped ahead to just past the fifth
    assert 5_000_000 <= m.now < 6_000_000


def test_same_machine_twice_gives_the_same_run(tiny_kernel):
    runs = []
    for _ in range(2):
        m = Machine(kernel=tiny_kernel())
        m.run(ms=50)
        runs.append((m.console, m.now, m.cpus[0].instructions, counters(m)))
    assert runs[0] == runs[1]


def test_snapshot_restore_continues_identically(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    m.run(ms=2)
    snap = m.snapshot()
    m.run(ms=50)
    first = (m.console, m.now, m.exit_code, counters(m))
    m.restore(snap)
    assert m.exit_code is None and m.console == "tiny: hello\n"
    m.run(ms=50)
    assert (m.console, m.now, m.exit_code, counters(m)) == first


def test_a_snapshot_is_a_private_copy_restorable_anywhere_of_its_shape(tiny_kernel):
    def go_on(target: Machine) -> tuple:      # a host write, then guest writes
        target.write(target.symbol_address("ticks"), (1000).to_bytes(8, "little"))
        target.run(ms=50)
        return bytes(target.ram), target.console, target.now, target.exit_code

    m = Machine(kernel=tiny_kernel())
    m.run(ms=2)
    snap, at_snap = m.snapshot(), bytes(m.ram)
    first = go_on(m)
    other = Machine(kernel=tiny_kernel())
    for target in (m, other, m):
        target.restore(snap)
        assert bytes(target.ram) == at_snap
    assert go_on(m) == first
    assert bytes(other.ram) == at_snap          # the two machines share no RAM
    assert go_on(other) == first
    # a snapshot of a restored machine: the pages written since come from RAM, the rest
    # from the image it was restored from
    later, at_later = other.snapshot(), bytes(other.ram)
    assert at_later != at_snap
    other.run(ms=20)
    other.restore(later)
    assert bytes(other.ram) == at_later


def test_guest_panic_names_cpu_rip_and_backtrace(tiny_kernel):
    m = Machine(kernel=tiny_kernel("BAD_OPCODE"))
    with pytest.raises(GuestPanic) as e:
        m.run(ms=10)
    assert e.value.cpu == 0
    assert e.value.rip.startswith("vec_default+")
    assert "guest panic: unexpected vector" in str(e.value)


def test_triple_fault_is_an_error_not_a_hang(tiny_kernel):
    m = Machine(kernel=tiny_kernel("TRIPLE_FAULT"))
    with pytest.raises(TripleFault) as e:
        m.run(ms=10)
    assert e.value.cpu == 0 and "triple fault" in str(e.value)


def test_budget_exceeded_reports_where_the_guest_spins(tiny_kernel):
    m = Machine(kernel=tiny_kernel("SPIN"))
    with pytest.raises(BudgetExceeded) as e:
        m.run_until(lambda: False, budget_ms=2)
    assert e.value.rip.startswith("spin+0x0/")


def test_memory_and_symbols(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    start = m.symbol_address("_start")
    assert start == 0xffffffff81000000
    assert m.lookup(start + 3).startswith("_start+0x3/")
    m.write(m.symbol_address("ticks"), (7).to_bytes(8, "little"))
    assert m.read_u64(m.symbol_address("ticks")) == 7
    with pytest.raises(EmuError):
        m.symbol_address("no_such_symbol")
    with pytest.raises(EmuError):
        m.read(0x40000000, 8)


def test_an_exception_in_a_port_handler_stops_the_run_and_propagates(tiny_kernel):
    m = Machine(kernel=tiny_kernel())

    class Broken(Exception):
        pass

    def handler(cpu, port, value):
        raise Broken(f"port 0x{port:x} value {value}")
    m.add_port(0x3F8, handler)
    with pytest.raises(Broken, match="port 0x3f8 value 116"):   # 't' of "tiny: hello"
        m.run(ms=10)


def test_snapshots_beyond_the_descriptor_limit_are_copies_that_restore_the_same(
        tiny_kernel, monkeypatch):
    """Each snapshot keeps its RAM in a memfd; past the process's descriptor limit (EMFILE) it
    keeps a copy in memory instead, and restores byte for byte all the same, whether the RAM
    is mapped from another snapshot at that moment or not."""
    import errno
    import os

    from emu import ramimage

    m = Machine(kernel=tiny_kernel())
    m.run(ms=2)
    mapped = m.snapshot()
    m.restore(mapped)                     # RAM is now a mapping of that snapshot's memfd
    m.run(ms=1)

    def no_descriptors(*_args):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    with monkeypatch.context() as mp:
        mp.setattr(ramimage.os, "memfd_create", no_descriptors)
        copied, at_copy = m.snapshot(), bytes(m.ram)
    assert copied.ram._copy is not None
    m.run(ms=50)
    after = (bytes(m.ram), m.console, m.now, m.exit_code)
    for snap in (copied, mapped, copied):
        m.restore(snap)
    assert bytes(m.ram) == at_copy
    m.run(ms=50)
    assert (bytes(m.ram), m.console, m.now, m.exit_code) == after
    later = m.snapshot()                  # taken while the RAM holds the copy's contents
    m.run(ms=5)
    m.restore(later)
    assert bytes(m.ram) == after[0]


def test_a_restore_whose_mapping_fails_copies_the_snapshot_instead(tiny_kernel, monkeypatch):
    """Mapping a snapshot's memfd over the RAM can fail (ENOMEM at the kernel's map count
    limit), maybe after the old mapping is gone: the restore then maps fresh memory and
    copies the snapshot into it, and the machine continues exactly as from that snapshot."""
    import ctypes
    import errno

    from emu import ramimage

    m = Machine(kernel=tiny_kernel())
    m.run(ms=2)
    snap, at_snap = m.snapshot(), bytes(m.ram)
    m.run(ms=50)
    first = (bytes(m.ram), m.console, m.now, m.exit_code)
    real_mmap = ramimage._libc.mmap

    def file_mappings_fail(addr, size, prot, flags, fd, offset):
        if fd != -1:
            ctypes.set_errno(errno.ENOMEM)
            return (1 << 64) - 1                     # MAP_FAILED
        return real_mmap(addr, size, prot, flags, fd, offset)
    with monkeypatch.context() as mp:
        mp.setattr(ramimage._libc, "mmap", file_mappings_fail)
        m.restore(snap)
    assert bytes(m.ram) == at_snap
    m.run(ms=50)
    assert (bytes(m.ram), m.console, m.now, m.exit_code) == first
