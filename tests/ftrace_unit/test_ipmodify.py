"""IPMODIFY ops: one per function, never "all functions", never a notrace hash."""

from __future__ import annotations

import errno

import pytest

from conftest import SITE, cb, cb2, rec_of
from ftrace import (
    FTRACE_OPS_FL_ALLOC_TRAMP, FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_SAVE_REGS, FtraceError,
    FtraceOps,
)
from ftrace.flags import FTRACE_FL_IPMODIFY, FTRACE_FL_MODIFIED

LIVEPATCH = FTRACE_OPS_FL_IPMODIFY | FTRACE_OPS_FL_SAVE_REGS
ALLOC_TRAMP = FTRACE_OPS_FL_ALLOC_TRAMP  # the arch's bit; core restores only its own


def ipmodify_names(ft) -> list[str]:
    return [ft.arch.lookup(r.ip)[0] for r in ft.records if r.flags & FTRACE_FL_IPMODIFY]


def errno_of(call) -> int:
    with pytest.raises(FtraceError) as e:
        call()
    return e.value.errno


def test_ipmodify_claims_its_sites(ft):
    a = FtraceOps(cb, LIVEPATCH)
    ft.ftrace_set_filter_ip(a, SITE["schedule"], remove=False, reset=False)
    ft.register_ftrace_function(a)
    assert ipmodify_names(ft) == ["schedule"]
    assert rec_of(ft, "schedule").flags & FTRACE_FL_MODIFIED
    ft.unregister_ftrace_function(a)
    assert ipmodify_names(ft) == []
    assert rec_of(ft, "schedule").flags & FTRACE_FL_MODIFIED  # never cleared


def test_overlap_is_ebusy_and_rolled_back(ft, arch):
    a, b = FtraceOps(cb, LIVEPATCH), FtraceOps(cb2, LIVEPATCH)
    ft.ftrace_set_filter(a, "mutex_lock", reset=True)
    ft.register_ftrace_function(a)
    ft.ftrace_set_filter(b, "schedule", reset=True)
    ft.ftrace_set_filter(b, "mutex_*", reset=False)
    plans, events = len(arch.plans), len(arch.events)
    assert errno_of(lambda: ft.register_ftrace_function(b)) == errno.EBUSY
    assert ipmodify_names(ft) == ["mutex_lock"]  # schedule's claim was undone
    assert ft.ops_list == [a] and b.flags & ~ALLOC_TRAMP == LIVEPATCH and b.trampoline == 0
    assert len(arch.plans) == plans
    # Refused before b was published anywhere: its guest memory goes back at once.
    assert arch.events[events:] == [("ops_alloc", b), ("ops_free_unpublished", b)]
    ft.unregister_ftrace_function(a)
    ft.register_ftrace_function(b)
    assert ipmodify_names(ft) == ["schedule", "mutex_lock", "mutex_unlock"]


def test_empty_filter_is_einval(ft):
    a = FtraceOps(cb, LIVEPATCH)
    assert errno_of(lambda: ft.register_ftrace_function(a)) == errno.EINVAL
    assert ft.ops_list == [] and a.flags & ~ALLOC_TRAMP == LIVEPATCH


def test_filter_change_of_enabled_ops_is_checked(ft):
    a, b = FtraceOps(cb, LIVEPATCH), FtraceOps(cb2, LIVEPATCH)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.ftrace_set_filter(b, "mutex_lock", reset=True)
    ft.register_ftrace_function(a)
    ft.register_ftrace_function(b)
    assert errno_of(lambda: ft.ftrace_set_filter(b, "*schedule", reset=False)) == errno.EBUSY
    assert errno_of(lambda: ft.ftrace_set_filter(b, None, reset=True)) == errno.EINVAL
    assert b.filter_hash == {SITE["mutex_lock"]}
    assert ipmodify_names(ft) == ["schedule", "mutex_lock"]
    ft.ftrace_set_filter(b, "sys_read", reset=True)
    assert ipmodify_names(ft) == ["schedule", "sys_read"]


def test_notrace_on_ipmodify_ops_is_einval(ft):
    a = FtraceOps(cb, LIVEPATCH)
    assert errno_of(lambda: ft.ftrace_set_notrace(a, "schedule", reset=True)) == errno.EINVAL
    assert not a.notrace_hash
