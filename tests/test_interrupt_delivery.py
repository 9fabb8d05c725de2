"""Interrupts and exceptions reach the guest through its IDT as a 64-bit CPU delivers them.

Delivery runs in C (emu/native/deliver.c) where it can and in Python (emu/trap.py, the
reference) where C meets anything unusual. Each case here delivers one vector twice from the
same CPU state, once each way, and the CPU state and every byte of RAM must come out the
same; the counters say which path did the work. A whole run then gives the same machine
either way."""
from __future__ import annotations

import struct

import pytest

from emu import Machine
from emu import memlayout as L
from emu import trap, ucx

pytestmark = pytest.mark.skipif(not trap.native_available(), reason="native delivery unavailable")

PAGE_EDGE = L.DIRECT_MAP_VA + 0x0200010      # direct map: 0x10 above a page boundary


def edit_context(cpu, fn) -> None:
    """Change the vCPU's saved state with ``fn(buf)`` (a ucx context buffer)."""
    cpu.uc.context_update(cpu.ctx)
    fn(cpu.ctx_buf)
    cpu.uc.context_restore(cpu.ctx)


def in_user_mode(cpu) -> None:
    """As after an iretq to ring 3: user CS/SS, CPL 3, interrupts on."""
    def fn(buf):
        cpu.load_cs_ss(buf, L.USER_CS, L.USER_DS, 3)
        eflags = struct.unpack_from("<Q", buf, ucx.CTX_EFLAGS)[0]
        struct.pack_into("<Q", buf, ucx.CTX_EFLAGS, eflags | trap.RFLAGS_IF)
        struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, 0x7FFF_FFFF_E000)
    edit_context(cpu, fn)


def stack_at(rsp: int):
    def setup(cpu) -> None:
        edit_context(cpu, lambda buf: struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, rsp))
    return setup


def cpu_state(cpu) -> bytes:
    """The CPU state (a saved context without its header, which holds host pointers)."""
    return bytes(cpu.uc.context_save())[ucx.CTX_HDR:]


def differing_offsets(a: bytes, b: bytes) -> list[int]:
    return [i for i in range(len(a)) if a[i] != b[i]][:16] if a != b else []


def deliver_both_ways(m, setup, vector: int, error: int | None = None, soft: bool = False):
    """Deliver from the same state natively and in Python only; assert identical results and
    return (delivered in C, left to Python) for the native run."""
    cpu = m.cpus[0]
    native = cpu.native_trap
    snap = m.snapshot()
    results = []
    for use_native in (True, False):
        m.restore(snap)
        setup(cpu)
        cpu.native_trap = native if use_native else None
        before = native.t.delivered, native.t.slow
        try:
            trap.deliver(cpu, vector, error, soft)
        finally:
            cpu.native_trap = native
        counts = native.t.delivered - before[0], native.t.slow - before[1]
        results.append((cpu_state(cpu), bytes(m.ram), counts))
    m.restore(snap)
    (ctx_c, ram_c, counts), (ctx_py, ram_py, py_counts) = results
    assert py_counts == (0, 0)
    assert ctx_c == ctx_py
    assert ram_c == ram_py
    return counts


def frame(m, n: int) -> tuple[int, ...]:
    cpu = m.cpus[0]
    return struct.unpack(f"<{n}Q", m.walker.read(cpu.cr3(), cpu.stack_pointer(), 8 * n))


def test_timer_interrupt_in_kernel_mode(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, lambda cpu: None, L.LOCAL_TIMER_VECTOR) == (1, 0)


def test_timer_interrupt_in_user_mode_switches_to_rsp0_and_ring0(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, in_user_mode, L.LOCAL_TIMER_VECTOR) == (1, 0)
    in_user_mode(m.cpus[0])
    trap.deliver(m.cpus[0], L.LOCAL_TIMER_VECTOR)
    rip, cs, rflags, rsp, ss = frame(m, 5)
    assert (cs, rsp, ss) == (L.USER_CS, 0x7FFF_FFFF_E000, L.USER_DS)
    assert rflags & trap.RFLAGS_IF and m.cpus[0].cpl() == 0


def test_nmi_takes_its_ist_stack(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, lambda cpu: None, 2) == (1, 0)


def raised_by_the_engine(vector: int):
    """As the engine leaves an exception it raised: old_exception set (delivery clears it)."""
    def setup(cpu) -> None:
        edit_context(cpu, lambda buf: struct.pack_into("<i", buf, ucx.CAL.old_exc_offset, vector))
    return setup


def test_page_fault_pushes_its_error_code(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, raised_by_the_engine(14), 14, error=2) == (1, 0)
    rip = m.cpus[0].rip()
    trap.deliver(m.cpus[0], 14, 2)
    assert frame(m, 2) == (2, rip)


def test_frame_across_a_page_boundary(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, stack_at(PAGE_EDGE), L.LOCAL_TIMER_VECTOR) == (1, 0)


def test_software_interrupt_to_a_kernel_gate_from_ring3_is_a_gp_done_in_python(booted_snapshots):
    m = booted_snapshots(1)
    # C refuses the int (DPL 0 < CPL 3); Python raises #GP(vector*8+2), which C delivers
    assert deliver_both_ways(m, in_user_mode, L.LOCAL_TIMER_VECTOR, soft=True) == (1, 1)


def test_an_unmapped_stack_escalates_the_same_way(booted_snapshots):
    m = booted_snapshots(1)
    counts = deliver_both_ways(m, stack_at(0xFFFF_FF00_0000_0000), L.LOCAL_TIMER_VECTOR)
    assert counts[1] >= 1                  # C left the failing delivery to Python


def test_a_whole_run_is_the_same_with_python_delivery():
    # A machine of its own: the shared ones carry other tests' history in the engine (a
    # gdb session's leftovers make the next run's translation probe a user address, which
    # leaves CR2 behind), and this compares every byte of CPU state.
    m = Machine(cpus=2)
    m.boot()
    snap = m.snapshot()
    runs = []
    for use_native in (True, False):
        m.restore(snap)
        saved = [c.native_trap for c in m.cpus]
        if not use_native:
            for c in m.cpus:
                c.native_trap = None
        try:
            m.run(ms=30)
        finally:
            for c, n in zip(m.cpus, saved):
                c.native_trap = n
        runs.append((m.now, [c.instructions for c in m.cpus],
                     [cpu_state(c) for c in m.cpus], bytes(m.ram), m.console))
    m.restore(snap)
    (now, insns, cpus, ram, console), (now_py, insns_py, cpus_py, ram_py, console_py) = runs
    assert (now, insns, console) == (now_py, insns_py, console_py)
    for state, state_py in zip(cpus, cpus_py):
        assert differing_offsets(state, state_py) == []
    assert differing_offsets(ram, ram_py) == []
    assert sum(c.native_trap.t.delivered for c in m.cpus) > 0
