"""Callbacks as ftrace-uses.rst describes them: arguments, contexts, RCU, regs, live patching,
guest-native callbacks, and what a raising Python callback does."""
from __future__ import annotations

import pytest

from emu import CallbackError
from ftrace import (FTRACE_OPS_FL_ENABLED, FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_RCU,
                    FTRACE_OPS_FL_SAVE_REGS, FtraceOps)
from ftrace.arch.x86.asm import assemble

F1 = "trace_selftest_dynamic_test_func"


def test_ip_is_the_site_and_parent_ip_the_return_address_in_the_caller(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    seen = []
    ops = FtraceOps(lambda ip, pip, op, regs: seen.append((ip, pip, op, regs)), private=7)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    m.run(ms=30)
    ft.unregister_ftrace_function(ops)
    assert seen
    for ip, pip, op, regs in seen:
        assert ip == m.symbol_address("schedule")
        assert op is ops and op.private == 7 and regs is None
        caller = m.image.containing(pip)
        assert caller is not None and caller.name != "schedule"
        assert m.read(pip - 5, 1) == b"\xe8"              # the return address follows a call


def test_callbacks_run_in_every_context(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    seen: dict[str, set] = {}

    def cb(ip, pip, op, regs):
        seen.setdefault(m.image.containing(ip).name, set()).add(
            (ft.current_context(), ft.rcu_is_watching()))
    ops = FtraceOps(cb)
    for name in ("timer_interrupt", "run_timer_softirq", "default_do_nmi", "default_idle",
                 "cpu_bringup_early", "cpu_teardown_late", "do_syscall_64"):
        ft.ftrace_set_filter(ops, name, False)
    ft.register_ftrace_function(ops)
    m.nmi()
    m.run(ms=150)                                       # hotplugd cycles CPU 1 meanwhile
    ft.unregister_ftrace_function(ops)
    assert seen == {
        "timer_interrupt": {("irq", True)},
        "run_timer_softirq": {("softirq", True)},
        "default_do_nmi": {("nmi", True)},
        "default_idle": {("normal", False)},             # between rcu_idle_enter/exit
        "cpu_bringup_early": {("normal", False)},        # before rcu_cpu_starting
        "cpu_teardown_late": {("normal", False)},        # after rcu_report_dead
        "do_syscall_64": {("normal", True)},
    }


def test_fl_rcu_skips_the_callback_where_rcu_is_not_watching(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    plain, rcu = [], []
    a = FtraceOps(lambda *args: plain.append(ft.rcu_is_watching()))
    b = FtraceOps(lambda *args: rcu.append(ft.rcu_is_watching()), FTRACE_OPS_FL_RCU)
    for ops in (a, b):
        ft.ftrace_set_filter(ops, "default_idle", True)
        ft.ftrace_set_filter(ops, "timer_interrupt", False)
        ft.register_ftrace_function(ops)
    m.run(ms=30)
    for ops in (a, b):
        ft.unregister_ftrace_function(ops)
    assert False in plain and True in plain
    assert rcu and set(rcu) == {True}
    assert len(rcu) == plain.count(True)


def test_save_regs_gives_pt_regs_with_the_callers_arguments(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    seen, tops = [], []     # the word at regs->sp, read while the frame is live
    ops = FtraceOps(lambda ip, pip, op, regs: (seen.append(regs), tops.append((m.read_u64(regs.sp), pip))),
                    FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    m.run(ms=10)
    ft.unregister_ftrace_function(ops)
    regs = seen[0]
    assert regs.cs == 0x10 and regs.ss == 0x18 and regs.flags & 0x2
    assert regs.ip == m.symbol_address("kstat_inc") + 5
    assert 0 <= regs.di < 10                             # kstat_inc(int i): i is a KSTAT_* index
    assert tops[0][0] == tops[0][1]                       # sp points at the return address
    assert {r.di for r in seen} >= {0, 5}                 # timer irqs and idle entries


def test_live_patching_with_ipmodify_gives_the_caller_the_new_functions_result(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    new_func = m.execmem.alloc(16)
    m.write(new_func, assemble("mov eax, 42\nret", new_func))
    assert m.call(F1) == 0

    def klp_handler(ip, parent_ip, op, regs):
        regs.ip = new_func
    ops = FtraceOps(klp_handler, FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter_ip(ops, m.symbol_address(F1), False, False)
    ft.register_ftrace_function(ops)
    assert m.call(F1) == 42
    name = klp_handler.__qualname__
    assert ft.enabled_functions == (f"{F1} (1) R I     M \ttramp: ftrace_trampoline+0x0/"
                                    f"{ops.trampoline_size:#x} [__builtin__ftrace] ({name}) ->{name}\n")
    ft.unregister_ftrace_function(ops)
    assert m.call(F1) == 0


def test_a_guest_native_callback_counts_in_guest_memory(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    counter = m.execmem.alloc(16)
    m.write(counter, bytes(16))
    func = m.execmem.alloc(64)
    # void count(ip, parent_ip, op, regs): counter[0]++, counter[1] = op->private
    m.write(func, assemble(f"mov rax, {counter}\nlock inc qword ptr [rax]\n"
                           f"mov rcx, qword ptr [rdx + 0x10]\nmov qword ptr [rax + 8], rcx\nret", func))
    ops = FtraceOps(func, private=0x1234)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    before = m.stats()["total"]
    ft.register_ftrace_function(ops)
    m.run(ms=20)
    ft.unregister_ftrace_function(ops)
    after = m.stats()["total"]
    calls = sum(after[k] - before[k] for k in after if k != "instructions")
    count, private = m.read_u64(counter), m.read_u64(counter + 8)
    assert private == 0x1234
    assert 0 < count and abs(count - calls) <= len(m.cpus)   # registration is not instantaneous


def test_a_raising_python_callback_stops_the_run_loudly_and_the_run_can_go_on(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    calls = []

    def bad(ip, pip, op, regs):
        calls.append(ip)
        raise ValueError("boom")
    ops = FtraceOps(bad)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    with pytest.raises(CallbackError) as e:
        m.run(ms=50)
    err = e.value
    assert len(calls) == 1 and err.ops is ops and err.ip == calls[0]
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "boom"
    assert err.cpu == 0 and err.backtrace
    size = m.image.symbol("schedule").size
    assert err.message == ("ftrace callback test_a_raising_python_callback_stops_the_run_loudly_"
                           "and_the_run_can_go_on.<locals>.bad raised ValueError: boom "
                           f"(traced function schedule+0x0/{size:#x})")
    assert ops.flags & FTRACE_OPS_FL_ENABLED and "schedule (1)" in ft.enabled_functions
    with pytest.raises(CallbackError):                 # still registered: it fires again
        m.run(ms=50)
    assert len(calls) == 2
    ft.unregister_ftrace_function(ops)
    syscalls = m.stats()["total"]["syscalls"]
    m.run(ms=50)
    assert m.stats()["total"]["syscalls"] > syscalls and "panic" not in m.console


def test_unregistered_means_no_more_callbacks(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    seen = []
    ops = FtraceOps(lambda *a: seen.append(1))
    ft.register_ftrace_function(ops)          # every function
    m.run(ms=5)
    ft.unregister_ftrace_function(ops)
    n = len(seen)
    m.run(ms=20)
    assert n > 0 and len(seen) == n
    assert all(m.read(r.ip, 5) == bytes.fromhex("0f1f440000") for r in ft.records)


def test_shared_sites_call_the_newest_registered_ops_first(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    order = []
    first = FtraceOps(lambda *a: order.append("first"))
    second = FtraceOps(lambda *a: order.append("second"))
    for ops in (first, second):
        ft.ftrace_set_filter(ops, F1, True)
        ft.register_ftrace_function(ops)
    m.call(F1)
    assert order == ["second", "first"]
    assert ft.enabled_functions.startswith(f"{F1} (2)            ->ftrace_ops_list_func+0x0/")
    for ops in (first, second):
        ft.unregister_ftrace_function(ops)


def test_restoring_a_snapshot_restores_ftrace_too(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    snap = m.snapshot()
    ops = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    site = ft.function_address("schedule")
    assert m.read(site, 1) == b"\xe8" and ft.enabled_functions
    m.restore(snap)
    assert m.read(site, 5) == bytes.fromhex("0f1f440000")
    assert ft.enabled_functions == "" and ft.ops_list == [] and not ops.flags & 1
    ft.register_ftrace_function(ops)                # registering again works
    ft.unregister_ftrace_function(ops)


def test_fl_rcu_alone_goes_through_the_assist_function_of_its_trampoline(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    seen = []
    ops = FtraceOps(lambda ip, *a: seen.append((m.image.containing(ip).name, ft.rcu_is_watching())),
                    FTRACE_OPS_FL_RCU)
    ft.ftrace_set_filter(ops, "default_idle", True)
    ft.ftrace_set_filter(ops, "timer_interrupt", False)
    ft.register_ftrace_function(ops)
    name = ops.saved_func.__qualname__
    assert ft.enabled_functions.splitlines()[0].endswith(f"({name}) ->ftrace_ops_assist_func+0x0/"
                                                          f"{ft.x86.symbols[ft.arch.ftrace_ops_assist_func][1]:#x}")
    m.run(ms=30)
    ft.unregister_ftrace_function(ops)
    assert {n for n, _ in seen} == {"timer_interrupt"}      # default_idle runs with RCU off
    assert all(watching for _, watching in seen)
