"""ftrace_set_filter / _notrace / _filter_ip: hash semantics, atomic swaps and errno."""

from __future__ import annotations

import errno

import pytest

from conftest import ADDR, SITE, TRAMP_BASE, cb, steps
from ftrace import FTRACE_OPS_FL_TRACE_ARRAY, FtraceError, FtraceOps
from ftrace.views import enabled_functions

VALID = ["schedule", "preempt_schedule", "schedule_timeout", "_raw_spin_lock",
         "_raw_spin_unlock", "mutex_lock", "mutex_unlock", "sys_read", "SyS_write",
         "sched_clock"]


def traced(ft) -> list[str]:
    return [line.split(" ")[0] for line in enabled_functions(ft).splitlines()]


@pytest.mark.parametrize("filt, notrace, expected", [
    (None, None, VALID),
    (None, "*schedule*", [n for n in VALID if "schedule" not in n]),
    ("*schedule*", None, ["schedule", "preempt_schedule", "schedule_timeout"]),
    ("*schedule*", "schedule*", ["preempt_schedule"]),
    ("schedule", "*schedule*", []),  # F within N: nothing
])
def test_notrace_wins_and_empty_means_all(ft, filt, notrace, expected):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, filt, reset=True)
    ft.ftrace_set_notrace(ops, notrace, reset=True)
    ft.register_ftrace_function(ops)
    assert traced(ft) == expected


def test_reset_with_pattern_is_one_plan_that_never_traces_all(ft, arch):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "schedule", reset=True)
    ft.register_ftrace_function(ops)
    ft.ftrace_set_filter(ops, "mutex_lock", reset=True)
    assert steps(arch.plans[-1]) == [("schedule", "MAKE_NOP", TRAMP_BASE, None),
                                     ("mutex_lock", "MAKE_CALL", None, TRAMP_BASE)]
    assert traced(ft) == ["mutex_lock"]


def test_reset_then_add_briefly_traces_everything(ft, arch):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "schedule", reset=True)
    ft.register_ftrace_function(ops)
    ft.ftrace_set_filter(ops, None, reset=True)
    assert len(arch.plans[-1]) == len(VALID) - 1
    ft.ftrace_set_filter(ops, "mutex_lock", reset=False)
    assert traced(ft) == ["mutex_lock"] and len(arch.plans) == 3


def test_null_buffer_without_reset_changes_nothing(ft, arch):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "schedule", reset=False)
    ft.ftrace_set_filter(ops, None, reset=False)
    ft.ftrace_set_notrace(ops, None, reset=False)
    assert ops.filter_hash == {SITE["schedule"]} and not ops.notrace_hash


def test_filter_ip_accepts_site_sym0_and_bytes_of_the_call(ft):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter_ip(ops, ADDR["sched_clock"], remove=False, reset=False)  # endbr+4
    ft.ftrace_set_filter_ip(ops, SITE["schedule"] + 2, remove=False, reset=False)
    ft.ftrace_set_filter_ip(ops, SITE["schedule"], remove=False, reset=False)
    assert ops.filter_hash == {SITE["sched_clock"], SITE["schedule"]}
    ft.ftrace_set_filter_ip(ops, SITE["schedule"], remove=True, reset=False)
    assert ops.filter_hash == {SITE["sched_clock"]}
    ft.ftrace_set_filter_ip(ops, SITE["mutex_lock"], remove=False, reset=True)
    assert ops.filter_hash == {SITE["mutex_lock"]}


@pytest.mark.parametrize("ip, remove, err", [
    (ADDR["sched_clock"] + 9, False, errno.EINVAL),   # past the site's 5 bytes
    (ADDR["notrace_helper"], False, errno.EINVAL),    # function without a site
    (SITE["mutex_unlock"], True, errno.ENOENT),       # remove what is not there
])
def test_filter_ip_errors_change_nothing(ft, ip, remove, err):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter_ip(ops, SITE["mutex_lock"], remove=False, reset=False)
    with pytest.raises(FtraceError) as e:
        ft.ftrace_set_filter_ips(ops, [SITE["schedule"], ip], remove=remove, reset=False)
    assert e.value.errno == err
    assert ops.filter_hash == {SITE["mutex_lock"]}


@pytest.mark.parametrize("flags, private, buf", [
    (0, None, "schedule:mod:foo"),
    (0, object(), "schedule:mod:foo"),
    (FTRACE_OPS_FL_TRACE_ARRAY, object(), "schedule:traceoff"),
    (FTRACE_OPS_FL_TRACE_ARRAY, object(), "schedule:mod:foo"),  # no modules in ftemu
    (FTRACE_OPS_FL_TRACE_ARRAY, object(), "*:mod:"),
])
def test_colon_commands_are_einval(ft, flags, private, buf):
    ops = FtraceOps(cb, flags, private)
    with pytest.raises(FtraceError) as e:
        ft.ftrace_set_filter(ops, buf, reset=True)
    assert e.value.errno == errno.EINVAL and not ops.filter_hash


def test_dead_ftrace_is_enodev_everywhere(ft):
    ops = FtraceOps(cb)
    ft.register_ftrace_function(ops)
    ft.ftrace_kill()
    calls = [
        lambda: ft.register_ftrace_function(FtraceOps(cb)),
        lambda: ft.unregister_ftrace_function(ops),
        lambda: ft.ftrace_set_filter(ops, "schedule", reset=True),
        lambda: ft.ftrace_set_notrace(ops, "schedule", reset=True),
        lambda: ft.ftrace_set_filter_ip(ops, SITE["schedule"], remove=False, reset=False),
        lambda: setattr(ft, "ftrace_enabled", 1),
    ]
    for call in calls:
        with pytest.raises(FtraceError) as e:
            call()
        assert e.value.errno == errno.ENODEV
    assert ft.ftrace_enabled == 0
