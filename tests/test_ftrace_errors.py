"""Every errno of the kernel's API that applies here (spec Appendix A), and that a failing
call changes nothing."""
from __future__ import annotations

import errno

import pytest

from ftrace import (FTRACE_OPS_FL_DELETED, FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_SAVE_REGS,
                    FtraceError, FtraceOps)

LIVEPATCH = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY


def nop(*args):
    pass


def errno_of(fn, *args) -> int:
    with pytest.raises(FtraceError) as e:
        fn(*args)
    assert isinstance(e.value, OSError)
    return e.value.errno


def text(m):
    return {r.ip: m.read(r.ip, 5) for r in m.ftrace.records}


def test_register_errors(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(nop)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    before = (text(m), ft.enabled_functions)
    assert errno_of(ft.register_ftrace_function, ops) == errno.EBUSY          # twice
    deleted = FtraceOps(nop)
    deleted.flags |= FTRACE_OPS_FL_DELETED
    assert errno_of(ft.register_ftrace_function, deleted) == errno.EINVAL
    # an IPMODIFY ops may not trace every function (an empty filter), with or without SAVE_REGS
    assert errno_of(ft.register_ftrace_function, FtraceOps(nop, FTRACE_OPS_FL_IPMODIFY)) == errno.EINVAL
    assert errno_of(ft.register_ftrace_function, FtraceOps(nop, LIVEPATCH)) == errno.EINVAL
    assert (text(m), ft.enabled_functions) == before
    ft.unregister_ftrace_function(ops)
    assert errno_of(ft.unregister_ftrace_function, ops) == errno.EBUSY        # not registered


def test_ipmodify_is_exclusive_per_function(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    a, b = FtraceOps(nop, LIVEPATCH), FtraceOps(nop, LIVEPATCH)
    ft.ftrace_set_filter(a, "schedule", True)
    ft.register_ftrace_function(a)
    ft.ftrace_set_filter(b, "schedule", True)
    before = (text(m), ft.enabled_functions)
    assert errno_of(ft.register_ftrace_function, b) == errno.EBUSY
    assert (text(m), ft.enabled_functions) == before and not b.flags & 1
    assert errno_of(ft.ftrace_set_notrace, a, "msleep", True) == errno.EINVAL  # no notrace
    c = FtraceOps(nop, LIVEPATCH)
    ft.ftrace_set_filter(c, "msleep", True)
    ft.register_ftrace_function(c)
    assert errno_of(ft.ftrace_set_filter, c, "schedule", False) == errno.EBUSY  # filter change
    assert c.filter_hash == {ft.function_address("msleep")}
    ft.unregister_ftrace_function(c)
    ft.unregister_ftrace_function(a)


def test_filter_errors_change_nothing(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(nop)
    ft.ftrace_set_filter(ops, "schedule", True)
    assert errno_of(ft.ftrace_set_filter, ops, "no_such_function", True) == errno.EINVAL
    assert errno_of(ft.ftrace_set_filter, ops, "sched*:mod:ext4", False) == errno.EINVAL
    assert errno_of(ft.ftrace_set_filter, ops, "schedule:traceoff", False) == errno.EINVAL
    assert errno_of(ft.ftrace_set_filter, ops, "99999", False) == errno.EINVAL   # index past the end
    assert errno_of(ft.ftrace_set_filter_ip, ops, m.symbol_address("schedule") + 8, False, False) == errno.EINVAL
    assert errno_of(ft.ftrace_set_filter_ip, ops, ft.function_address("msleep"), True, False) == errno.ENOENT
    assert ops.filter_hash == {ft.function_address("schedule")}


def test_glob_grammar_and_index_on_the_real_kernel(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    names = ft.available_filter_functions.splitlines()

    def selected(pattern):
        ops = FtraceOps(nop)
        ft.ftrace_set_filter(ops, pattern, True)
        return sorted(m.image.containing(ip).name for ip in ops.filter_hash)
    assert selected("*schedule") == sorted(n for n in names if n.endswith("schedule"))
    assert selected("schedule*") == sorted(n for n in names if n.startswith("schedule"))
    assert selected("*sched*") == sorted(n for n in names if "sched" in n)
    assert selected("spin_*_irq*") == sorted(n for n in names if n.startswith("spin_") and "_irq" in n[5:])
    assert selected("sch?dule") == ["schedule"]
    assert selected("[st]chedule") == ["schedule"]
    assert selected("3") == [names[2]]                      # an index into the list
    ops = FtraceOps(nop)
    ft.ftrace_set_filter(ops, "*schedule*", True)
    ft.ftrace_set_filter(ops, "!*_schedule*", False)        # a leading ! removes
    assert all(not n.startswith("_") or "_schedule" not in n
               for n in (m.image.containing(ip).name for ip in ops.filter_hash))


def test_dead_ftrace_answers_enodev(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ft.ftrace_kill()
    ops = FtraceOps(nop)
    assert errno_of(ft.register_ftrace_function, ops) == errno.ENODEV
    assert errno_of(ft.ftrace_set_filter, ops, "schedule", True) == errno.ENODEV
    with pytest.raises(FtraceError) as e:
        ft.ftrace_enabled = 1
    assert e.value.errno == errno.ENODEV
