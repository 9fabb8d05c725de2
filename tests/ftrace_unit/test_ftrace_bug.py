"""A site that does not hold the expected bytes: the kernel's report, then ftrace is dead."""

from __future__ import annotations

import errno

import pytest

from conftest import (
    FENTRY, FTRACE_CALLER, FTRACE_OPS_LIST_FUNC, FTRACE_STUB, SITE, SITES, FakeArch, cb, cb2,
    encode, rec_of,
)
from ftrace import Ftrace, FtraceError, FtraceOps


def test_mismatch_on_make_call_reports_and_kills(ft, arch, log):
    arch.text[SITE["schedule"]] = FTRACE_CALLER  # someone else patched it
    a = FtraceOps(cb)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(a)
    assert e.value.errno == errno.ENODEV
    assert log == [
        "------------[ ftrace bug ]------------",
        "ftrace failed to modify ",
        "[<ffffffff81000000>] schedule+0x0/0x40",
        " actual:   " + ":".join(f"{b:02x}" for b in encode(SITE["schedule"], FTRACE_CALLER)),
        " expected: 0f:1f:44:00:00",
        "Setting ftrace call site to call ftrace function",
        "ftrace record flags: 10000001",
        " (1)    ",
        " expected tramp: ffffffff81001000",
    ]
    assert arch.plans == []  # verify-first: nothing was written
    calls = [e for e in arch.events if e[0] == "ftrace_call"]
    assert calls[-2:] == [("ftrace_call", FTRACE_OPS_LIST_FUNC), ("ftrace_call", FTRACE_STUB)]
    assert ft.ftrace_disabled and ft.ftrace_enabled == 0 and ft.ops_list == []
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(FtraceOps(cb2))
    assert e.value.errno == errno.ENODEV


def test_mismatch_on_modify_lists_the_trampolines(ft, arch, log):
    a, b = FtraceOps(cb), FtraceOps(cb2)
    ft.ftrace_set_filter(a, "schedule", reset=True)
    ft.register_ftrace_function(a)
    arch.text[SITE["schedule"]] = None
    with pytest.raises(FtraceError):
        ft.register_ftrace_function(b)
    tramp = "ftrace_trampoline+0x0/0xa5 [__builtin__ftrace]"
    assert log[1:] == [
        "ftrace failed to modify ",
        "[<ffffffff81000000>] schedule+0x0/0x40",
        " actual:   0f:1f:44:00:00",
        " expected: " + ":".join(f"{b:02x}" for b in encode(SITE["schedule"], a.trampoline)),
        "Updating ftrace call site to call a different ftrace function",
        "ftrace record flags: 88100002",
        f" (2)    \ttramp: {tramp} (cb2)\ttramp: {tramp} (cb)",
        " expected tramp: ffffffffa0000000",
    ]


def test_other_errors_print_their_own_line(ft, log):
    ft.ftrace_bug(errno.EFAULT, rec_of(ft, "mutex_lock"))
    ft.ftrace_bug(errno.EPERM, None)
    ft.ftrace_bug(errno.ENOMEM, None)
    assert log == [
        "------------[ ftrace bug ]------------",
        "ftrace faulted on modifying ",
        "[<ffffffff81000140>] mutex_lock+0x0/0x40",
        "ftrace record flags: 0",
        " (0)    ",
        " expected tramp: ffffffff81001000",
        "------------[ ftrace bug ]------------",
        "ftrace faulted on writing ",
        "[<0000000000000000>] 0x0",
        "------------[ ftrace bug ]------------",
        "ftrace faulted on unknown error ",
        "[<0000000000000000>] 0x0",
    ]
    assert ft.ftrace_disabled


def test_boot_conversion_mismatch(log):
    arch = FakeArch()
    arch.text[SITE["mutex_lock"]] = None
    ft = Ftrace(arch, SITES, log=log.append)
    ft.ftrace_init()
    assert log == [
        "------------[ ftrace bug ]------------",
        "ftrace failed to modify ",
        "[<ffffffff81000140>] mutex_lock+0x0/0x40",
        " actual:   0f:1f:44:00:00",
        " expected: " + ":".join(f"{b:02x}" for b in encode(SITE["mutex_lock"], FENTRY)),
        "Initializing ftrace call sites",
        "ftrace record flags: 0",
        " (0)    ",
        " expected tramp: ffffffff81001000",
        "ftrace: allocating 11 entries in 1 pages",
        "ftrace: allocated 1 pages with 1 groups",
    ]
    assert arch.text[SITE["mutex_unlock"]] == FENTRY  # conversion stopped
    assert ft.ftrace_disabled


def test_boot_log(log):
    ft = Ftrace(FakeArch(), SITES, log=log.append)
    ft.ftrace_init()
    assert log == ["ftrace: allocating 11 entries in 1 pages",
                   "ftrace: allocated 1 pages with 1 groups"]
    assert ft.ftrace_enabled == 1 and not ft.ftrace_disabled
