"""What a Python callback may do (issue 6, "what was seen" 3 and 5): ftrace's mutating calls
are EDEADLK inside it (one ftrace_lock), Machine.defer() is the way out, run/restore/boot are
refused, m.call nests to a documented depth, and an exception stops the run loudly."""
from __future__ import annotations

import errno

import pytest

from emu import CallbackError, EmuError, Machine
from emu.machine import MAX_CALL_DEPTH
from ftrace import FtraceError, FtraceOps

F1 = "trace_selftest_dynamic_test_func"


def every_mutating_call(ft, ops):
    """Each mutating call of the API, as (name, thunk)."""
    return [
        ("register", lambda: ft.register_ftrace_function(FtraceOps(lambda *a: None))),
        ("unregister", lambda: ft.unregister_ftrace_function(ops)),
        ("set_filter", lambda: ft.ftrace_set_filter(ops, "schedule", False)),
        ("set_notrace", lambda: ft.ftrace_set_notrace(ops, "schedule", False)),
        ("set_filter_ip", lambda: ft.ftrace_set_filter_ip(
            ops, ft.function_address("schedule"), False, False)),
        ("set_filter_ips", lambda: ft.ftrace_set_filter_ips(
            ops, [ft.function_address("schedule")], False, False)),
        ("ftrace_enabled", lambda: setattr(ft, "ftrace_enabled", 0)),
    ]


def test_mutating_calls_from_a_callback_are_edeadlk_and_change_nothing(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    results: dict[str, int] = {}

    def cb(ip, pip, op, regs):
        for name, call in every_mutating_call(ft, op):
            try:
                call()
                results[name] = 0
            except FtraceError as e:
                results.setdefault(name, e.errno)
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    before = ft.enabled_functions
    m.run(ms=5)
    assert results == {name: errno.EDEADLK for name, _ in every_mutating_call(ft, ops)}
    assert ft.enabled_functions == before and ft.ftrace_enabled == 1
    ft.unregister_ftrace_function(ops)
    assert "panic" not in m.console and not ft.ftrace_disabled


def test_callbacks_firing_during_an_update_cannot_reset_it():
    # Other vCPUs run between the int3 steps, so callbacks fire mid-update; an API call
    # there used to reset the batch (unhandled int3, or "[ ftrace bug ]"). Busy kernel
    # threads (bench=4) make sure the vCPUs run traced kernel code during the updates.
    m = Machine(cpus=4, cmdline="console=ttyS0 bench=4")
    m.boot()
    ft = m.ftrace
    refused = []

    def cb(ip, pip, op, regs):
        try:
            ft.ftrace_set_filter(op, "schedule", False)
        except FtraceError as e:
            refused.append(e.errno)
    ops = FtraceOps(cb)
    ft.register_ftrace_function(ops)            # every function, callbacks from the start
    for name in ("kstat_inc", "schedule", "timer_interrupt", "*lock*"):
        other = FtraceOps(lambda *a: None)
        ft.ftrace_set_filter(other, name, True)
        ft.register_ftrace_function(other)
        ft.unregister_ftrace_function(other)
    ft.unregister_ftrace_function(ops)
    m.run(ms=5)
    assert refused and set(refused) == {errno.EDEADLK}
    assert not ft.ftrace_disabled and "panic" not in m.console
    assert all(m.read(r.ip, 5) == bytes.fromhex("0f1f440000") for r in ft.records)


def test_defer_runs_outside_callbacks_in_order_and_is_part_of_snapshots(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    log: list[str] = []

    def cb(ip, pip, op, regs):
        if not op.private:
            op.private = 1
            m.defer(lambda: log.append(f"first in_guest={m.in_guest()}"))
            m.defer(lambda: log.append("second"))
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    hold = []
    m.defer(lambda: hold.append("pending at snapshot"))
    snap = m.snapshot()
    m.run(ms=2)
    assert log == ["first in_guest=False", "second"] and hold == ["pending at snapshot"]
    m.restore(snap)
    m.run(ms=2)
    assert hold == ["pending at snapshot"] * 2       # restored with the snapshot
    ft.unregister_ftrace_function(ops)
    with pytest.raises(TypeError):
        m.defer("not callable")


@pytest.mark.parametrize("what", ["run", "restore", "boot", "snapshot", "run_until"])
def test_run_restore_boot_from_a_callback_are_refused(booted_snapshots, what):
    m = booted_snapshots(1)
    ft = m.ftrace
    snap = m.snapshot()
    calls = {"run": lambda: m.run(ms=1), "restore": lambda: m.restore(snap),
             "boot": lambda: m.boot(), "snapshot": lambda: m.snapshot(),
             "run_until": lambda: m.run_until(lambda: True, 1)}
    errors = []

    def cb(ip, pip, op, regs):
        if not errors:
            try:
                calls[what]()
            except EmuError as e:
                errors.append(str(e))
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    m.run(ms=5)
    ft.unregister_ftrace_function(ops)
    assert errors == [f"Machine.{what}() cannot be called from a callback (a vCPU is in the "
                      "middle of an instruction); use Machine.defer()"]
    m.run(ms=5)
    assert "panic" not in m.console


def test_a_callback_reentering_its_function_through_call_stops_at_the_nesting_limit(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    depth = []

    def cb(ip, pip, op, regs):
        depth.append(1)
        m.call(F1)
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, F1, True)
    ft.register_ftrace_function(ops)
    with pytest.raises(CallbackError) as e:
        m.call(F1)
    assert len(depth) == MAX_CALL_DEPTH
    assert isinstance(e.value.__cause__, EmuError)
    assert str(e.value.__cause__) == f"Machine.call nested deeper than {MAX_CALL_DEPTH} calls"
    ft.unregister_ftrace_function(ops)
    assert m.call(F1) is not None                     # the machine goes on


def test_a_callback_error_during_an_update_comes_out_of_the_next_run():
    m = Machine(cpus=2, cmdline="console=ttyS0 bench=2")   # busy vCPUs run between the steps
    m.boot()
    ft = m.ftrace
    calls = []

    def bad(ip, pip, op, regs):
        calls.append(ip)
        if len(calls) == 1:
            raise RuntimeError("inside the int3 window")
    ops = FtraceOps(bad)                           # every function
    ft.register_ftrace_function(ops)               # other vCPUs call it between the steps
    other = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(other, "kstat_inc", True)
    ft.register_ftrace_function(other)             # the updates complete regardless
    assert calls and "kstat_inc (2)" in ft.enabled_functions
    with pytest.raises(CallbackError) as e:
        m.run(ms=5)
    assert str(e.value.__cause__) == "inside the int3 window"
    assert e.value.ops is ops and e.value.ip == calls[0]
    m.run(ms=5)
    for o in (ops, other):
        ft.unregister_ftrace_function(o)
    assert not ft.ftrace_disabled and "panic" not in m.console
