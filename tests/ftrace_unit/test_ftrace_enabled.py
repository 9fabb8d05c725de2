"""kernel.ftrace_enabled: 0 NOPs every site but keeps every ops; PERMANENT blocks it."""

from __future__ import annotations

import errno

import pytest

from conftest import FTRACE_OPS_LIST_FUNC, SITE, TRAMP_BASE, cb, rec_of, steps
from ftrace import FTRACE_OPS_FL_PERMANENT, FtraceError, FtraceOps
from ftrace.flags import FTRACE_FL_ENABLED, FTRACE_FL_TRAMP


def test_disable_nops_every_site_and_keeps_ops(ft, arch):
    a = FtraceOps(cb)
    ft.ftrace_set_filter(a, "*schedule", reset=True)
    ft.register_ftrace_function(a)
    arch.events.clear()
    ft.ftrace_enabled = 0
    assert steps(arch.plans[-1]) == [("schedule", "MAKE_NOP", TRAMP_BASE, None),
                                     ("preempt_schedule", "MAKE_NOP", TRAMP_BASE, None)]
    assert arch.events == [] and ft.ops_list == [a]
    assert rec_of(ft, "schedule").count == 1 and rec_of(ft, "schedule").flags & FTRACE_FL_TRAMP
    ft.ftrace_set_filter(a, "mutex_lock", reset=False)  # counted, not patched
    assert len(arch.plans) == 2 and rec_of(ft, "mutex_lock").count == 1
    ft.ftrace_enabled = 1
    assert steps(arch.plans[-1]) == [("schedule", "MAKE_CALL", None, TRAMP_BASE),
                                     ("preempt_schedule", "MAKE_CALL", None, TRAMP_BASE),
                                     ("mutex_lock", "MAKE_CALL", None, TRAMP_BASE)]
    assert arch.events == [("publish_hashes", a), ("ftrace_call", FTRACE_OPS_LIST_FUNC)]


def test_register_while_disabled_patches_nothing(ft, arch):
    ft.ftrace_enabled = 0
    a = FtraceOps(cb)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.register_ftrace_function(a)
    assert arch.plans == [] and rec_of(ft, "schedule").count == 1
    assert not rec_of(ft, "schedule").flags & FTRACE_FL_ENABLED
    ft.unregister_ftrace_function(a)
    assert arch.plans == [] and rec_of(ft, "schedule").flags == 0


def test_permanent_ops_cannot_register_while_disabled(ft):
    ft.ftrace_enabled = 0
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(FtraceOps(cb, FTRACE_OPS_FL_PERMANENT))
    assert e.value.errno == errno.EBUSY and ft.ops_list == []


def test_permanent_ops_keeps_ftrace_enabled(ft, arch):
    a = FtraceOps(cb, FTRACE_OPS_FL_PERMANENT)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.register_ftrace_function(a)
    with pytest.raises(FtraceError) as e:
        ft.ftrace_enabled = 0
    assert e.value.errno == errno.EBUSY and ft.ftrace_enabled == 1
    assert len(arch.plans) == 1 and arch.text[SITE["schedule"]] == TRAMP_BASE
    ft.unregister_ftrace_function(a)
    ft.ftrace_enabled = 0
    assert ft.ftrace_enabled == 0


def test_writing_the_same_value_does_nothing(ft, arch):
    ft.register_ftrace_function(FtraceOps(cb))
    plans = len(arch.plans)
    ft.ftrace_enabled = 1
    assert len(arch.plans) == plans
