"""Booting the real guest kernel: every context ftrace cares about really happens."""
from __future__ import annotations

import pytest
from unicorn.x86_const import UC_X86_REG_CR2

from emu import BudgetExceeded, GuestPanic, Machine

CONTEXT_COUNTERS = ("timer_interrupts", "softirqs", "syscalls", "context_switches", "idle_entries")


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_boot_runs_every_context(cpus):
    m = Machine(cpus=cpus, nmi_period_ms=10)
    m.boot()
    m.run(ms=200)
    lines = m.console.splitlines()
    assert f"smp: Brought up {cpus} CPUs" in lines
    assert "ALL TESTS PASSED" in lines and "init: up" in lines
    st = m.stats()
    for cpu in st["cpus"]:
        assert cpu["timer_interrupts"] > 0 and cpu["idle_entries"] > 0 and cpu["nmis"] > 0
    for key in CONTEXT_COUNTERS:
        assert st["total"][key] > 0, key
    if cpus > 1:                       # hotplugd takes the last CPU down and up again
        assert st["cpus"][-1]["cpu_offline"] > 0
        assert st["cpus"][-1]["cpu_online"] > 1


def test_user_page_fault_kills_the_task_and_the_kernel_goes_on():
    m = Machine(cpus=1)
    m.boot()
    m.run(ms=100)
    assert "pid 8 (faulter): page fault at 0xdead000 ip 0x400567, killed" in m.console
    assert m.stats()["total"]["page_faults"] >= 1
    before = m.stats()["total"]["syscalls"]
    m.run(ms=100)
    assert m.stats()["total"]["syscalls"] > before


def test_a_host_write_to_kernel_data_leaves_the_page_fault_state_alone():
    """Dropping translations of a data page (m.write) once made Unicorn take a page fault
    of its own there: CR2 changed and the guest's next user page fault became a #DF."""
    m = Machine(cpus=1)
    m.boot()
    cpu = m.cpus[0]
    m.run_until(lambda: cpu.cpl() == 0 and cpu.state == "running", 100)
    cr2 = cpu.regs.read(UC_X86_REG_CR2)
    data = m.symbol_address("jiffies")
    m.write(data, m.read(data, 8))
    assert cpu.regs.read(UC_X86_REG_CR2) == cr2
    m.run(ms=100)
    assert "pid 8 (faulter): page fault at 0xdead000 ip 0x400567, killed" in m.console


def test_two_runs_of_the_same_machine_are_identical():
    runs = []
    for _ in range(2):
        m = Machine(cpus=2)
        m.boot()
        m.run(ms=150)
        runs.append((m.console, m.stats()))
    assert runs[0] == runs[1]


def test_snapshot_restore_gives_the_same_continuation(booted_snapshots):
    m = booted_snapshots(2)
    snap = m.snapshot()
    m.run(ms=80)
    first = (m.console, m.stats())
    m.restore(snap)
    m.run(ms=80)
    assert (m.console, m.stats()) == first


def test_call_runs_a_guest_function_and_returns_rax(booted_snapshots):
    m = booted_snapshots(1)
    assert m.call("trace_selftest_dynamic_test_func") == 0
    assert m.call("trace_selftest_dynamic_test_func2") == 0


def test_host_hotplug_and_nmi_on_demand(booted_snapshots):
    m = booted_snapshots(2)
    m.cpu_down(1)
    assert m.online_cpus() == [0]
    m.cpu_up(1)
    assert m.online_cpus() == [0, 1]
    nmis = m.stats()["cpus"][0]["nmis"]
    m.nmi(0)
    m.run(ms=1)
    assert m.stats()["cpus"][0]["nmis"] == nmis + 1


def test_a_hung_guest_ends_with_budget_exceeded(booted_snapshots):
    m = booted_snapshots(1)
    with pytest.raises(BudgetExceeded) as e:
        m.run_until(lambda: False, budget_ms=5)
    assert e.value.cpu == 0 and "+0x" in e.value.rip


def test_a_kernel_panic_ends_the_run_with_cpu_rip_and_backtrace(booted_snapshots):
    m = booted_snapshots(1)
    target = m.symbol_address("do_syscall_64") + 5            # just after its ftrace site
    m.write(target, b"\x0f\x0b")                              # ud2: the next syscall oopses
    with pytest.raises(GuestPanic) as e:
        m.run(ms=100)
    err = e.value
    where = m.lookup(target)                                  # the ud2, not panic's poweroff
    assert err.cpu == 0 and err.rip == where and where.startswith("do_syscall_64+0x5/")
    assert err.message == f"guest panic: invalid opcode at ip {where}"
    assert err.backtrace[err.backtrace.index("<#UD>") + 1] == where
