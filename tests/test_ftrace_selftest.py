"""The kernel's own start-up self-test of ftrace (kernel/trace/trace_selftest.c), scenario by
scenario, on the guest's trace_selftest_dynamic_test_func / _func2."""
from __future__ import annotations

import errno

import pytest

from emu import Machine
from ftrace import (FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_SAVE_REGS,
                    FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED, FtraceError, FtraceOps)

F1, F2 = "trace_selftest_dynamic_test_func", "trace_selftest_dynamic_test_func2"


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def __call__(self, ip, parent_ip, op, regs) -> None:
        self.n += 1


def test_dynamic_filter_traces_only_the_filtered_function(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    count = Counter()
    ops = FtraceOps(count)
    ft.ftrace_set_filter(ops, "*" + F1, True)       # a leading * as the self-test writes it
    ft.register_ftrace_function(ops)
    m.run(ms=100)
    assert count.n == 0                              # "filter did not filter"
    m.call(F1)
    m.run(ms=1)
    assert count.n == 1                              # "filter failed count"
    ft.unregister_ftrace_function(ops)


@pytest.mark.parametrize("with_global", [False, True])
def test_three_probes_a_dynamic_ops_and_a_removed_function(booted_snapshots, with_global):
    m = booted_snapshots(1)
    ft = m.ftrace
    c1, c2, c3, cdyn, cglobal = Counter(), Counter(), Counter(), Counter(), Counter()
    p1, p2, p3 = FtraceOps(c1), FtraceOps(c2), FtraceOps(c3)
    ft.ftrace_set_filter(p1, "*" + F1, True)
    ft.ftrace_set_filter(p2, "*" + F2, True)
    ft.ftrace_set_filter(p3, "*" + F1, True)
    ft.ftrace_set_filter(p3, "*" + F2, False)
    glob = FtraceOps(cglobal)
    ft.ftrace_set_filter(glob, F1, True)
    ft.ftrace_set_filter(glob, F2, False)
    order = [p1, p2, p3] + ([glob] if with_global else [])
    for ops in order:
        ft.register_ftrace_function(ops)

    def step(func, expect):
        m.call(func)
        assert (c1.n, c2.n, c3.n) == expect
        if with_global and func == F1:
            assert cglobal.n > 0
    step(F1, (1, 0, 1))
    step(F2, (1, 1, 2))
    dyn = FtraceOps(cdyn)                             # "kzalloc'd": a DYNAMIC ops, no filter
    ft.register_ftrace_function(dyn)
    step(F1, (2, 1, 3))
    assert cdyn.n > 0
    step(F2, (2, 2, 4))
    ft.ftrace_set_filter(p3, "!" + F1, False)
    step(F1, (3, 2, 4))
    step(F2, (3, 3, 5))
    ft.unregister_ftrace_function(dyn)
    for ops in order:
        ft.unregister_ftrace_function(ops)
    for c in (c1, c2, c3):
        c.n = 0
    m.call(F1)
    m.call(F1)
    assert (c1.n, c2.n, c3.n) == (0, 0, 0)


def test_recursion_with_fl_recursion_allows_one_nested_entry(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    count = Counter()

    def recurse(ip, parent_ip, op, regs):
        count(ip, parent_ip, op, regs)
        if count.n < 10:
            m.call(F1)                              # the callback calls the traced function
    ops = FtraceOps(recurse, FTRACE_OPS_FL_RECURSION)
    ft.ftrace_set_filter(ops, "*" + F1, True)
    ft.register_ftrace_function(ops)
    m.call(F1)
    ft.unregister_ftrace_function(ops)
    assert count.n in (1, 2) and count.n == 2        # the TRANSITION bit lets one through
    site = ft.function_address(F1)
    assert ft.recursed_functions.endswith(f":\t{F1}+0x0/{m.image.symbol(F1).size:#x}\n")
    assert site in {r.ip for r in ft.x86.recursion.records}


def test_recursion_safe_ops_without_fl_recursion_is_called_directly(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    count = Counter(1)

    def safe(ip, parent_ip, op, regs):
        was = count.n
        count.n += 1
        if was:
            return
        m.call(F1)
    ops = FtraceOps(safe)
    ft.ftrace_set_filter(ops, "*" + F1, True)
    ft.register_ftrace_function(ops)
    m.call(F1)
    ft.unregister_ftrace_function(ops)
    assert count.n == 2


def test_regs_with_support(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    got = []
    ops = FtraceOps(lambda ip, pip, op, regs: got.append(regs), FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(ops, "*" + F1, True)
    ft.register_ftrace_function(ops)
    m.call(F1)
    ft.unregister_ftrace_function(ops)
    assert len(got) == 1 and got[0] is not None      # "callback received NULL regs"


def test_regs_without_support():
    m = Machine(ftrace_regs=False)
    m.boot()
    ft = m.ftrace
    got = []
    ops = FtraceOps(lambda ip, pip, op, regs: got.append(regs), FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(ops, "*" + F1, True)
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(ops)
    assert e.value.errno == errno.EINVAL
    ops = FtraceOps(lambda ip, pip, op, regs: got.append(regs),
                    FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED)
    ft.ftrace_set_filter(ops, "*" + F1, True)
    ft.register_ftrace_function(ops)
    m.call(F1)
    ft.unregister_ftrace_function(ops)
    assert got == [None]
    assert ft.x86.ftrace_regs_caller == 0                # no ftrace_regs_caller at all
