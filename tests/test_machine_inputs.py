"""What the machine refuses, and how: wrong Python types are TypeError, bad values ValueError,
unmapped guest memory GuestMemoryError; in every case nothing was created or changed. And
Ctrl-C during a run or a call reaches the caller with the machine whole."""
from __future__ import annotations

import os
import random
import signal
import threading

import pytest

import emu.machine
from emu import EmuError, GuestMemoryError, Machine

RAM_TOP = 32 << 20          # the tiny guest's identity map runs past the end of RAM here


class Created(Exception):
    """Raised where a Machine would start creating things (its kernel image is read)."""


@pytest.fixture
def no_creation(monkeypatch):
    def refuse(*a, **k):
        raise Created
    monkeypatch.setattr(emu.machine, "KernelImage", refuse)


@pytest.mark.parametrize("kwargs, exc", [
    ({"cpus": 0}, ValueError), ({"cpus": 9}, ValueError), ({"cpus": "2"}, TypeError),
    ({"cpus": True}, TypeError), ({"cpus": 2.0}, TypeError),
    ({"memory_mb": 8}, ValueError), ({"memory_mb": None}, TypeError),
    ({"kernel": 5}, TypeError), ({"kernel": ""}, ValueError),
    ({"cmdline": b"console=ttyS0"}, TypeError), ({"cmdline": "a\0b"}, ValueError),
    ({"cmdline": "x" * 256}, ValueError),
    ({"quantum": 0}, ValueError), ({"quantum": -5}, ValueError), ({"quantum": 1.5}, TypeError),
    ({"quantum": 10**12}, ValueError),
    ({"nmi_period_ms": -1}, ValueError), ({"nmi_period_ms": float("nan")}, ValueError),
    ({"nmi_period_ms": float("inf")}, ValueError), ({"nmi_period_ms": 1e-9}, ValueError),
    ({"nmi_period_ms": "5"}, TypeError),
    ({"slice_seed": 1.0}, TypeError), ({"deterministic": 1}, TypeError),
])
def test_bad_machine_arguments_are_refused_before_anything_is_created(no_creation, kwargs, exc):
    with pytest.raises(exc):
        Machine(**kwargs)


def test_good_machine_arguments_get_as_far_as_reading_the_kernel(no_creation):
    with pytest.raises(Created):
        Machine(cpus=8, memory_mb=24, cmdline="x" * 255, quantum=1, nmi_period_ms=0.001,
                slice_seed=-3, deterministic=False)


def test_a_file_that_is_not_elf_is_a_value_error(tmp_path):
    bogus = tmp_path / "kernel.elf"
    bogus.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="not an ELF kernel"):
        Machine(kernel=bogus)


def test_addresses_outside_64_bits_never_alias_real_memory(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    start = m.symbol_address("_start")
    assert m.read(start, 4) == m.read(start, 4)
    for addr in (start + (1 << 64), start - (1 << 64), -8):
        with pytest.raises(ValueError):
            m.read(addr, 4)
        with pytest.raises(ValueError):
            m.write(addr, b"\0")
    with pytest.raises(GuestMemoryError):          # non-canonical: bits 48..63 not a copy of 47
        m.read(start & ((1 << 48) - 1), 4)
    with pytest.raises(ValueError):
        m.read(start, -1)
    with pytest.raises(ValueError):
        m.read((1 << 64) - 4, 8)                   # would wrap around
    with pytest.raises(TypeError):
        m.read(str(start), 4)
    with pytest.raises(TypeError):
        m.write(start, 4)                          # bytes(4) would be four zeros


def test_a_write_running_into_unmapped_memory_writes_nothing(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    before = m.read(RAM_TOP - 4096, 4096)
    with pytest.raises(GuestMemoryError, match="0x2000000"):
        m.write(RAM_TOP - 8, b"\xAA" * 16)
    assert m.read(RAM_TOP - 4096, 4096) == before


def test_call_refuses_bad_arguments(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    m.run(ms=1)
    start = m.symbol_address("_start")
    for kwargs, exc in [({"max_insns": 0}, ValueError), ({"max_insns": -1}, ValueError),
                        ({"max_insns": 1.0}, TypeError), ({"cpu": 1}, ValueError),
                        ({"cpu": "0"}, TypeError)]:
        with pytest.raises(exc):
            m.call(start, **kwargs)
    with pytest.raises(ValueError):
        m.call(start, 1 << 64)
    with pytest.raises(ValueError):
        m.call(start, 1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(TypeError):
        m.call(3.5)


def ctrl_c_after(seconds: float) -> threading.Timer:
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


def test_ctrl_c_stops_a_call_that_never_returns_and_puts_the_cpu_back(tiny_kernel):
    m = Machine(kernel=tiny_kernel())
    m.run(ms=1)
    spin = m.symbol_address("stack_top") - 4096     # deep in the idle boot stack
    m.write(spin, b"\xeb\xfe")                    # jmp .
    rip, now = m.cpus[0].rip(), m.now
    ctrl_c_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        m.call(spin, max_insns=10**15)
    assert m.cpus[0].rip() == rip and m.now == now and not m.cpus[0].in_slice
    m.run(ms=50)                                  # and it goes on as before
    assert m.exit_code == 42 + 5


def test_ctrl_c_stops_a_run_between_slices(booted_snapshots):
    m = booted_snapshots(2)
    ctrl_c_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        m.run(ms=600_000)
    assert not any(c.in_slice for c in m.cpus)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    now = m.now
    m.run(ms=5)
    assert m.now == now + 5_000_000


def test_restore_refuses_a_snapshot_of_another_shape(booted_snapshots, tiny_kernel):
    two = booted_snapshots(2).snapshot()
    m = booted_snapshots(1)
    now, console = m.now, m.console
    with pytest.raises(ValueError, match="2 CPUs"):
        m.restore(two)
    with pytest.raises(ValueError, match="kernel"):
        Machine(kernel=tiny_kernel()).restore(m.snapshot())
    with pytest.raises(TypeError):
        m.restore("snapshot")
    assert (m.now, m.console) == (now, console)
    m.run(ms=1)


def test_hotplug_errors_name_the_errno(booted_snapshots):
    m = booted_snapshots(2)
    with pytest.raises(EmuError, match=r"hotplug_request\(cpu 0, down\) failed: EBUSY$"):
        m.cpu_down(0)
    with pytest.raises(EmuError, match="failed: EINVAL$"):
        m.cpu_up(7)
    with pytest.raises(ValueError):
        m.cpu_down(1 << 32 | 1)                   # would alias CPU 1 in the guest's int
    with pytest.raises(TypeError):
        m.cpu_down("1")


def test_fuzz_machine_arguments_and_memory_ranges(no_creation, tiny_kernel, monkeypatch):
    rng = random.Random(11)
    values = [None, True, 0, 1, -1, 2, 8, 9, 24, 2048, 2049, 1 << 64, 0.5, 1e-9, float("nan"),
              "", "x", b"x", [], object()]
    names = ["cpus", "memory_mb", "kernel", "cmdline", "quantum", "slice_seed", "nmi_period_ms",
             "deterministic"]
    for _ in range(2000):
        kwargs = {n: rng.choice(values) for n in rng.sample(names, rng.randint(1, 3))}
        try:
            Machine(**kwargs)
        except (TypeError, ValueError, Created):
            pass
    monkeypatch.undo()
    m = Machine(kernel=tiny_kernel())
    edges = [0, 1, RAM_TOP - 3, RAM_TOP, (1 << 47) - 2, 1 << 47, (1 << 64) - 1, 1 << 64, -1,
             m.symbol_address("_start"), m.symbol_address("ticks") - 2]
    for _ in range(3000):
        addr = rng.choice(edges) + rng.randint(-9, 9)
        n = rng.choice([0, 1, 8, 4097, -1, 1 << 64])
        before = m.read(m.symbol_address("ticks"), 8)
        try:
            if rng.random() < 0.5:
                assert len(m.read(addr, n)) == n
            else:
                m.write(addr, bytes([0x5A]) * n if 0 <= n < 8192 else b"")
        except (TypeError, ValueError, GuestMemoryError):
            assert m.read(m.symbol_address("ticks"), 8) == before
