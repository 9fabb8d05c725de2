"""A fuzz test of the public ftrace API: random callbacks, flags, patterns, ips and reset or
remove choices, thrown at FtraceOps and at every filter and registration call. Only the
documented exceptions come out (TypeError for wrong types, FtraceError with the kernel's
errno for bad values), and a refused call changes nothing, guest memory included."""
from __future__ import annotations

import errno
import random
import zlib

from emu import memlayout as L
from ftrace import FtraceError, FtraceOps, FtraceOpsFlags

DOCUMENTED_ERRNOS = {errno.EINVAL, errno.ENOENT, errno.EBUSY, errno.ENODEV, errno.ENOMEM}
PATTERN_ALPHABET = "sched_ulekmirq*?[]!:0123456789x\0\\ é"


def cb(ip, parent_ip, op, regs):
    """A Python callback."""


def random_func(rng, m):
    return rng.choice([
        cb, lambda *a: None, rng.randrange(1 << 64), rng.randrange(-5, 5), 1 << 64, "cb",
        None, 1.5, m.symbol_address("__fentry__"), True,   # native: only returns
    ])


def random_flags(rng):
    return rng.choice([
        0, rng.randrange(1 << 20), 1 << rng.randrange(70), -1, "4", None,
        int(rng.choice(list(FtraceOpsFlags))),
    ])


def random_pattern(rng, names):
    return rng.choice([
        rng.choice(names),
        "".join(rng.choice(PATTERN_ALPHABET) for _ in range(rng.randrange(12))),
        rng.choice(names) + "\0" + rng.choice(names), f"{rng.randrange(300)}",
        f"!{rng.choice(names)}", f"{rng.choice(names)}:mod:x", None, 42, b"schedule",
    ])


def random_ip(rng, ft, sites):
    return rng.choice([
        rng.choice(sites), rng.choice(sites) + rng.randrange(1, 8), rng.randrange(1 << 64),
        -rng.choice(sites), 1 << 64, str(rng.choice(sites)), rng.choice(sites) - 1,
    ])


def fingerprint(m, live):
    ft = m.ftrace
    top = max(va + n for va, n in m.execmem.used.items()) - L.EXECMEM_VA   # the area in use
    area = m.ram[L.EXECMEM_PA:L.EXECMEM_PA + top]
    return (zlib.crc32(area), tuple(r.flags for r in ft.records), dict(m.execmem.used),
            [(o.flags, o.filter_hash, o.notrace_hash, o.trampoline) for o in live],
            list(ft.ops_list), ft.ftrace_enabled)


def test_random_calls_raise_only_documented_errors_and_change_nothing_when_refused(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    rng = random.Random(6)
    names = ft.available_filter_functions.splitlines()
    sites = [r.ip for r in ft.records]
    pool = [FtraceOps(cb) for _ in range(4)]
    outcomes = {"ok": 0, "TypeError": 0, "FtraceError": 0}
    for case in range(3000):
        what = rng.random()
        ops = rng.choice(pool)
        if what < 0.15:
            args = (random_func(rng, m), random_flags(rng))
            call = lambda: pool.__setitem__(rng.randrange(len(pool)), FtraceOps(*args))  # noqa: E731
        elif what < 0.45:
            setter = rng.choice([ft.ftrace_set_filter, ft.ftrace_set_notrace])
            pattern, reset = random_pattern(rng, names), rng.random() < 0.5
            call = lambda: setter(ops, pattern, reset)      # noqa: E731
        elif what < 0.75:
            ip, remove, reset = random_ip(rng, ft, sites), rng.random() < 0.3, rng.random() < 0.3
            call = lambda: ft.ftrace_set_filter_ip(ops, ip, remove, reset)   # noqa: E731
        elif what < 0.85:
            call = lambda: ft.register_ftrace_function(ops)   # noqa: E731
        elif what < 0.95:
            call = lambda: ft.unregister_ftrace_function(ops)  # noqa: E731
        else:
            target = rng.choice(pool)
            target.func = random_func(rng, m)
            call = lambda: ft.register_ftrace_function(target)   # noqa: E731
        before = fingerprint(m, pool)
        try:
            call()
            outcomes["ok"] += 1
        except TypeError:
            outcomes["TypeError"] += 1
            assert fingerprint(m, pool) == before, case
        except FtraceError as e:
            outcomes["FtraceError"] += 1
            assert e.errno in DOCUMENTED_ERRNOS, (case, e)
            assert fingerprint(m, pool) == before, (case, e)
        if case % 300 == 0:
            m.run(ms=0.5)
    for ops in list(ft.ops_list):
        ops.func = ops.saved_func
        ft.unregister_ftrace_function(ops)
    assert min(outcomes.values()) > 100, outcomes          # every path was exercised
    assert not ft.ftrace_disabled and "panic" not in m.console
