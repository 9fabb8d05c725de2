"""available_filter_functions, enabled_functions and touched_functions, byte for byte."""

from __future__ import annotations

from conftest import GUEST_CB, cb, cb2
from ftrace import (
    FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_SAVE_REGS, FtraceOps,
)
from ftrace.records import ftrace_pages_and_groups
from ftrace.views import (
    available_filter_functions, available_filter_functions_addrs, enabled_functions,
    touched_functions,
)

TRAMP = "ftrace_trampoline+0x0/0xa5 [__builtin__ftrace]"
REGS_TRAMP = "ftrace_trampoline+0x0/0x10d [__builtin__ftrace]"


def test_available_filter_functions_lists_every_record_in_address_order(ft):
    assert available_filter_functions(ft) == (
        "schedule\npreempt_schedule\nschedule_timeout\n_raw_spin_lock\n_raw_spin_unlock\n"
        "mutex_lock\nmutex_unlock\nsys_read\nSyS_write\nsched_clock\n"
        "__ftrace_invalid_address___16\n")
    addrs = available_filter_functions_addrs(ft).splitlines()
    assert addrs[0] == "ffffffff81000000 schedule"
    assert addrs[9] == "ffffffff81000244 sched_clock"


def test_enabled_functions_single_ops_trampolines(ft):
    a = FtraceOps(cb)
    ft.ftrace_set_filter(a, "*schedule", reset=True)
    ft.register_ftrace_function(a)
    g = FtraceOps(GUEST_CB, FTRACE_OPS_FL_RECURSION)
    ft.ftrace_set_filter(g, "sys_read", reset=True)
    ft.register_ftrace_function(g)
    lp = FtraceOps(cb2, FTRACE_OPS_FL_IPMODIFY | FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(lp, "mutex_lock", reset=True)
    ft.register_ftrace_function(lp)
    assert enabled_functions(ft) == (
        f"schedule (1)           \ttramp: {TRAMP} (cb) ->cb\n"
        f"preempt_schedule (1)           \ttramp: {TRAMP} (cb) ->cb\n"
        f"mutex_lock (1) R I     M \ttramp: {REGS_TRAMP} (cb2) ->cb2\n"
        f"sys_read (1)           \ttramp: {TRAMP} (my_guest_cb+0x0/0x30)"
        " ->ftrace_ops_assist_func+0x0/0x80\n")


def test_enabled_functions_shared_site_and_touched(ft):
    a, b = FtraceOps(cb), FtraceOps(cb2, FTRACE_OPS_FL_SAVE_REGS)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.ftrace_set_filter(b, "schedule", reset=True)
    ft.register_ftrace_function(a)
    ft.register_ftrace_function(b)
    assert enabled_functions(ft) == "schedule (2) R          ->ftrace_ops_list_func+0x0/0x150\n"
    ft.unregister_ftrace_function(b)
    ft.unregister_ftrace_function(a)
    assert enabled_functions(ft) == ""
    assert touched_functions(ft) == "schedule (0)            ->ftrace_stub+0x0/0x10\n"


def test_listings_are_empty_once_ftrace_is_dead(ft):
    ft.register_ftrace_function(FtraceOps(cb))
    ft.ftrace_kill()
    assert available_filter_functions(ft) == enabled_functions(ft) == ""


def test_boot_page_accounting():
    assert ftrace_pages_and_groups(45372) == (178, 4)
    assert ftrace_pages_and_groups(256) == (1, 1)
    assert ftrace_pages_and_groups(257) == (2, 1)
