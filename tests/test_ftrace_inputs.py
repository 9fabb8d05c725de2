"""Every call of the ftrace API is atomic and checks its input (issue 6, "what was seen" 6, 8
and 9): TypeError for wrong types, FtraceError(EINVAL) for bad values, and nothing changed,
guest memory included."""
from __future__ import annotations

import errno
import functools

import pytest

from ftrace import (FTRACE_OPS_FL_DYNAMIC, FTRACE_OPS_FL_ENABLED, FTRACE_OPS_FL_MODIFYING,
                    FTRACE_OPS_FL_STUB, FtraceError, FtraceOps)
from ftrace.arch.x86.insn import call_insn

NOP5 = bytes.fromhex("0f1f440000")


def cb(ip, parent_ip, op, regs):
    """A Python callback."""


def state(m):
    """What a refused call must leave exactly as it was."""
    ft = m.ftrace
    return (bytes(m.ram), ft.enabled_functions, dict(m.execmem.used),
            [r.flags for r in ft.records], list(ft.ops_list), ft.ftrace_enabled)


def errno_of(call) -> int:
    with pytest.raises(FtraceError) as e:
        call()
    return e.value.errno


@pytest.mark.parametrize("args", [
    ("not callable",), (1 << 64,), (-1,), (True,), (None,),
    (cb, 1 << 64), (cb, -1), (cb, "SAVE_REGS"), (cb, 1.0),
])
def test_ops_of_the_wrong_type_are_typeerror(args):
    with pytest.raises(TypeError):
        FtraceOps(*args)


@pytest.mark.parametrize("flag", [FTRACE_OPS_FL_ENABLED, FTRACE_OPS_FL_DYNAMIC,
                                  FTRACE_OPS_FL_MODIFYING, FTRACE_OPS_FL_STUB, 1 << 40])
def test_only_user_flags_are_accepted(flag):
    assert errno_of(lambda: FtraceOps(cb, flag)) == errno.EINVAL


def test_wrong_types_reach_no_state(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    before = state(m)
    site = ft.function_address("schedule")
    calls = [
        lambda: ft.register_ftrace_function("ops"),
        lambda: ft.unregister_ftrace_function(None),
        lambda: ft.ftrace_set_filter(ops, b"schedule", False),
        lambda: ft.ftrace_set_filter(ops, 7, False),
        lambda: ft.ftrace_set_notrace(ops, ["schedule"], False),
        lambda: ft.ftrace_set_filter_ip(ops, "0x1", False, False),
        lambda: ft.ftrace_set_filter_ip(ops, 1 << 64, False, False),
        lambda: ft.ftrace_set_filter_ip(ops, -site, False, False),
        lambda: ft.ftrace_set_filter_ips(ops, [site, "x"], False, False),
        lambda: ft.ftrace_set_filter_ips(ops, site, False, False),
        lambda: setattr(ft, "ftrace_enabled", "0"),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()
        assert state(m) == before
    broken = FtraceOps(cb)
    broken.func = "no longer callable"
    with pytest.raises(TypeError):
        ft.register_ftrace_function(broken)
    broken.func, broken.flags = cb, 1 << 64
    with pytest.raises(TypeError):
        ft.register_ftrace_function(broken)
    broken.flags = FTRACE_OPS_FL_MODIFYING
    assert errno_of(lambda: ft.register_ftrace_function(broken)) == errno.EINVAL
    assert state(m) == before
    ft.unregister_ftrace_function(ops)


def test_a_nul_ends_a_pattern_as_in_the_kernels_c_strings(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    for pattern in ("schedule\0junk", "sch?dule\0junk", "schedule\0"):
        ops = FtraceOps(cb)
        ft.ftrace_set_filter(ops, pattern, True)
        assert ops.filter_hash == {ft.function_address("schedule")}


def test_an_index_must_be_a_whole_number(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(cb)
    third = ft.available_filter_functions.splitlines()[2]
    ft.ftrace_set_filter(ops, "3", True)
    assert ops.filter_hash == {ft.function_address(third)}
    for bad in ("3abc", "0x", "09", "3 "):
        assert errno_of(lambda: ft.ftrace_set_filter(ops, bad, True)) == errno.EINVAL
        assert ops.filter_hash == {ft.function_address(third)}


@pytest.mark.parametrize("where", ["user", "kernel data", "unmapped"])
def test_a_guest_callback_outside_text_and_code_area_is_einval(booted_snapshots, where):
    m = booted_snapshots(1)
    ft = m.ftrace
    addr = {"user": 0x400000, "kernel data": m.symbol_address("kstat"),
            "unmapped": 0xFFFF_8000_0000_0000}[where]
    ops = FtraceOps(addr)
    ft.ftrace_set_filter(ops, "schedule", True)
    before = state(m)
    assert errno_of(lambda: ft.register_ftrace_function(ops)) == errno.EINVAL
    assert state(m) == before and not ops.flags & FTRACE_OPS_FL_ENABLED
    m.run(ms=5)
    assert "panic" not in m.console


def test_after_ftrace_died_unregister_is_enodev_and_keeps_what_sites_call(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.ftrace_set_filter(ops, "schedule", False)
    ft.register_ftrace_function(ops)
    tramp = ops.trampoline
    sched = ft.function_address("schedule")
    m.write(sched, call_insn(sched, ft.x86.ftrace_caller))      # someone else patched it
    assert errno_of(lambda: ft.unregister_ftrace_function(ops)) == errno.ENODEV
    assert ft.ftrace_disabled and "[ ftrace bug ]" in "\n".join(ft.log_lines)
    kstat = ft.function_address("kstat_inc")
    assert m.read(kstat, 5) == call_insn(kstat, tramp)         # still called ...
    assert tramp in m.execmem.used                              # ... so never freed
    assert errno_of(lambda: ft.unregister_ftrace_function(ops)) == errno.ENODEV
    m.run(ms=10)
    assert "panic" not in m.console


def test_enabled_functions_names_callables_without_qualname_deterministically(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace

    class Counter:
        def __call__(self, ip, pip, op, regs):
            pass
    ops = [FtraceOps(functools.partial(cb)), FtraceOps(Counter())]
    for o in ops:
        ft.ftrace_set_filter(o, "schedule", True)
        ft.register_ftrace_function(o)
    listing = ft.enabled_functions
    for o in ops:
        ft.unregister_ftrace_function(o)
    assert "0x" not in listing.split("->")[0] and " at " not in listing
    one = FtraceOps(functools.partial(cb))
    ft.ftrace_set_filter(one, "schedule", True)
    ft.register_ftrace_function(one)
    assert "(<partial object>)" in ft.enabled_functions
    ft.unregister_ftrace_function(one)
