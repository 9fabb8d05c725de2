"""Registering and unregistering ops: the exact plans, trampolines and ftrace_call updates."""

from __future__ import annotations

import errno

import pytest

from conftest import (
    FTRACE_CALLER, FTRACE_OPS_LIST_FUNC, FTRACE_REGS_CALLER, FTRACE_STUB, SITE, TRAMP_BASE,
    FakeArch, cb, cb2, rec_of, steps,
)
from ftrace import (
    FTRACE_OPS_FL_DELETED, FTRACE_OPS_FL_DYNAMIC, FTRACE_OPS_FL_ENABLED, FTRACE_OPS_FL_IPMODIFY,
    FTRACE_OPS_FL_RCU, FTRACE_OPS_FL_SAVE_REGS, FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED, Ftrace,
    FtraceError, FtraceOps,
)
from ftrace.flags import (
    FTRACE_FL_DISABLED, FTRACE_FL_ENABLED, FTRACE_FL_IPMODIFY, FTRACE_FL_REGS, FTRACE_FL_REGS_EN, FTRACE_FL_TOUCHED,
    FTRACE_FL_TRAMP,
    FTRACE_FL_TRAMP_EN,
)

TRAMP_A, TRAMP_B = TRAMP_BASE, TRAMP_BASE + 0x1000


def errno_of(call, *args) -> int:
    with pytest.raises(FtraceError) as e:
        call(*args)
    return e.value.errno


def test_first_ops_calls_its_private_trampoline(ft, arch):
    a = FtraceOps(cb)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.register_ftrace_function(a)
    # Everything built first, then published (list), then the code changed.
    assert arch.events == [("ops_alloc", a), ("list_add", a), ("alloc_trampoline", a),
                           ("ftrace_call", FTRACE_OPS_LIST_FUNC)]
    assert [steps(p) for p in arch.plans] == [[("schedule", "MAKE_CALL", None, TRAMP_A)]]
    assert rec_of(ft, "schedule").flags == (1 | FTRACE_FL_TRAMP | FTRACE_FL_TRAMP_EN
                                            | FTRACE_FL_ENABLED | FTRACE_FL_TOUCHED)
    assert a.flags == FTRACE_OPS_FL_ENABLED | FTRACE_OPS_FL_DYNAMIC | a.flags.ALLOC_TRAMP
    assert ft.ops_list == [a]


def test_shared_sites_go_through_the_callers_and_back(ft, arch):
    a, b = FtraceOps(cb), FtraceOps(cb2, FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.ftrace_set_filter(b, "*schedule", reset=True)
    ft.register_ftrace_function(a)
    ft.register_ftrace_function(b)
    assert ft.ops_list == [b, a]  # newest first
    assert steps(arch.plans[-1]) == [
        ("schedule", "MODIFY_CALL", TRAMP_A, FTRACE_REGS_CALLER),
        ("preempt_schedule", "MAKE_CALL", None, TRAMP_B),
    ]
    assert rec_of(ft, "schedule").flags == (2 | FTRACE_FL_REGS | FTRACE_FL_REGS_EN
                                            | FTRACE_FL_ENABLED | FTRACE_FL_TOUCHED)
    arch.events.clear()
    ft.unregister_ftrace_function(b)
    assert steps(arch.plans[-1]) == [
        ("schedule", "MODIFY_CALL", FTRACE_REGS_CALLER, TRAMP_A),
        ("preempt_schedule", "MAKE_NOP", TRAMP_B, None),
    ]
    # Unlinked first, even though the sites are what keeps b reachable until the plan.
    assert arch.events == [("list_del", b), ("synchronize_rcu_tasks",), ("free_trampoline", b)]
    arch.events.clear()
    ft.unregister_ftrace_function(a)
    assert steps(arch.plans[-1]) == [("schedule", "MAKE_NOP", TRAMP_A, None)]
    assert arch.events == [("list_del", a), ("ftrace_call", FTRACE_OPS_LIST_FUNC),
                           ("ftrace_call", FTRACE_STUB), ("synchronize_rcu_tasks",),
                           ("free_trampoline", a)]
    assert [rec.flags for rec in ft.records if rec.flags & ~FTRACE_FL_DISABLED] == [
        FTRACE_FL_TOUCHED] * 2
    assert a.flags & FTRACE_OPS_FL_ENABLED == 0 and ft.ops_list == []


def test_second_ops_without_regs_moves_site_to_ftrace_caller(ft, arch):
    a, b = FtraceOps(cb), FtraceOps(cb2)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.register_ftrace_function(a)
    ft.register_ftrace_function(b)  # no filter: every valid site
    plan = steps(arch.plans[-1])
    assert plan[0] == ("schedule", "MODIFY_CALL", TRAMP_A, FTRACE_CALLER)
    assert ("preempt_schedule", "MAKE_CALL", None, TRAMP_B) in plan
    assert "weak_dead" not in [s[0] for s in plan] and len(plan) == 10


def test_core_data_ops_is_called_directly_by_ftrace_caller(ft, arch):
    a = FtraceOps(cb)
    arch.core_data.add(id(a))
    ft.register_ftrace_function(a)
    assert arch.events[-2:] == [("ftrace_call", FTRACE_OPS_LIST_FUNC), ("ftrace_call", a)]
    assert not a.flags & FTRACE_OPS_FL_DYNAMIC and ft.ftrace_call is a
    arch.events.clear()
    ft.unregister_ftrace_function(a)
    # Seed: unregister always waits; a core-data ops keeps its trampoline.
    assert arch.events[-1] == ("synchronize_rcu_tasks",) and a.trampoline == TRAMP_A
    ft.register_ftrace_function(a)
    assert ("update_trampoline", a) in arch.events


def test_rcu_ops_alone_still_uses_the_list_function(ft, arch):
    a = FtraceOps(cb, FTRACE_OPS_FL_RCU)
    arch.core_data.add(id(a))
    ft.register_ftrace_function(a)
    assert ft.ftrace_trace_function == FTRACE_OPS_LIST_FUNC


def test_register_twice_is_ebusy_and_changes_nothing(ft, arch):
    a = FtraceOps(cb)
    ft.register_ftrace_function(a)
    flags, plans = a.flags, len(arch.plans)
    assert errno_of(ft.register_ftrace_function, a) == errno.EBUSY
    assert (a.flags, len(arch.plans), ft.ops_list) == (flags, plans, [a])


def test_unregister_unknown_is_ebusy(ft):
    assert errno_of(ft.unregister_ftrace_function, FtraceOps(cb)) == errno.EBUSY


def test_deleted_ops_is_einval(ft):
    ops = FtraceOps(cb)
    ops.flags |= FTRACE_OPS_FL_DELETED
    assert errno_of(ft.register_ftrace_function, ops) == errno.EINVAL


def test_save_regs_without_regs_support(log):
    arch = FakeArch(supports_regs=False)
    ft = Ftrace(arch, list(SITE.values()), log=log.append)
    ft.ftrace_init()
    a = FtraceOps(cb, FTRACE_OPS_FL_SAVE_REGS)
    assert errno_of(ft.register_ftrace_function, a) == errno.EINVAL
    assert a.flags == FTRACE_OPS_FL_SAVE_REGS and ft.ops_list == []
    b = FtraceOps(cb, FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED)
    ft.ftrace_set_filter(b, "schedule", reset=True)
    ft.register_ftrace_function(b)  # registers, regs dropped (the callback gets None)
    assert not b.flags & FTRACE_OPS_FL_SAVE_REGS
    assert not rec_of(ft, "schedule").flags & FTRACE_FL_REGS


def test_save_regs_if_supported_alone_gets_regs_where_supported(ft):
    a, b = FtraceOps(cb, FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED), FtraceOps(cb2)
    ft.register_ftrace_function(a)
    ft.register_ftrace_function(b)
    assert a.flags & FTRACE_OPS_FL_SAVE_REGS
    assert ft.arch.text[SITE["schedule"]] == FTRACE_REGS_CALLER


def test_ipmodify_without_save_regs_registers_as_livepatch_does(ft):
    # The kernel with DYNAMIC_FTRACE_WITH_ARGS (x86-64) does not check "IPMODIFY requires
    # SAVE_REGS" (the seed document says it does): livepatch's ops is DYNAMIC | IPMODIFY |
    # PERMANENT and sets the ip through ftrace_caller's ftrace_regs. So no REGS on the record.
    a = FtraceOps(cb, FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter_ip(a, SITE["schedule"], remove=False, reset=False)
    ft.register_ftrace_function(a)
    rec = rec_of(ft, "schedule")
    assert rec.flags & FTRACE_FL_IPMODIFY and not rec.flags & FTRACE_FL_REGS
    assert ft.ops_list == [a] and ft.arch.text[SITE["schedule"]] == a.trampoline
    b = FtraceOps(cb2)                                  # shared: ftrace_caller, not regs
    ft.ftrace_set_filter_ip(b, SITE["schedule"], remove=False, reset=False)
    ft.register_ftrace_function(b)
    assert ft.arch.text[SITE["schedule"]] == FTRACE_CALLER
    ft.unregister_ftrace_function(b)
    ft.unregister_ftrace_function(a)
    assert not rec.flags & FTRACE_FL_IPMODIFY


def test_module_hooks_take_ftrace_lock(ft, arch):
    """ftrace_module_init and ftrace_release_mod run under ftrace_lock, as the kernel's: from
    inside a callback they would deadlock, so they are EDEADLK there and change nothing."""
    sites = len(ft.records)
    arch.callback_depth = 1
    assert errno_of(ft.ftrace_module_init, "mod", [0xFFFFFFFFC0000000]) == errno.EDEADLK
    assert errno_of(ft.ftrace_release_mod, "mod") == errno.EDEADLK
    arch.callback_depth = 0
    assert len(ft.records) == sites
