"""struct ftrace_ops: a callback, its flags and its two hashes (filter, notrace)."""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from ftrace.errors import FtraceError
from ftrace.flags import FtraceOpsFlags

# A callback is a Python callable func(ip, parent_ip, op, regs) or the address of a guest function.
FtraceFuncT = Union[Callable[[int, int, "FtraceOps", Any], None], int]

EMPTY_HASH: frozenset[int] = frozenset()
U64_MAX = (1 << 64) - 1

# What a user may set (the seed's flags, plus TRACE_ARRAY: "private is a trace_array", which
# :mod: commands require); ftrace sets and clears the others itself.
FL_USER = (FtraceOpsFlags.SAVE_REGS | FtraceOpsFlags.SAVE_REGS_IF_SUPPORTED
           | FtraceOpsFlags.RECURSION | FtraceOpsFlags.IPMODIFY | FtraceOpsFlags.RCU
           | FtraceOpsFlags.PERMANENT | FtraceOpsFlags.TRACE_ARRAY)


@dataclass(slots=True, eq=False)
class FtraceOps:
    """One ftrace user. Set `func`, optionally `flags` and `private`; ftrace owns the rest.

    Seed API (ftrace-uses.rst) rather than the kernel: the callback's fourth argument is
    `regs`, a pt_regs view when the ops gets saved registers (SAVE_REGS, or
    SAVE_REGS_IF_SUPPORTED on a machine with regs support) and None otherwise; the kernel
    passes an always non-NULL `struct ftrace_regs *` instead.
    """

    func: FtraceFuncT
    flags: FtraceOpsFlags = FtraceOpsFlags(0)
    private: Any = None
    # Call-site ips; empty = EMPTY_HASH. Replaced whole, never mutated (RCU publish).
    filter_hash: frozenset[int] = field(default=EMPTY_HASH, init=False)
    notrace_hash: frozenset[int] = field(default=EMPTY_HASH, init=False)
    # Hashes in force before the update running now (ops.old_hash), for trampoline lookups.
    old_filter_hash: frozenset[int] = field(default=EMPTY_HASH, init=False)
    old_notrace_hash: frozenset[int] = field(default=EMPTY_HASH, init=False)
    saved_func: FtraceFuncT | None = field(default=None, init=False)
    trampoline: int = field(default=0, init=False)
    trampoline_size: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_func(self.func)
        self.flags = FtraceOpsFlags(check_u64("flags", self.flags))
        if int(self.flags) & ~int(FL_USER):
            raise FtraceError(errno.EINVAL, f"flags {int(self.flags) & ~int(FL_USER):#x} are "
                              "not a user's (ftrace sets them itself, or they do not exist)")


def check_u64(what: str, value: Any) -> int:
    """``value`` as an int that fits in 64 bits; TypeError otherwise (bool is no int here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise TypeError(f"{what} must be an int in [0, 2**64), not {value!r}")
    return int(value)


def check_func(func: Any) -> None:
    """A callback is a Python callable or a guest address (an int that fits in 64 bits)."""
    if isinstance(func, int) and not isinstance(func, bool):
        check_u64("a guest callback address", func)
    elif not callable(func):
        raise TypeError(f"an ftrace callback must be callable or a guest address, "
                        f"not {type(func).__name__}")


def hash_contains_ip(ip: int, filter_hash: frozenset[int], notrace_hash: frozenset[int]) -> bool:
    """Traced iff (filter empty or ip in filter) and ip not in notrace: notrace wins."""
    return (not filter_hash or ip in filter_hash) and ip not in notrace_hash


def ops_traces_ip(ops: FtraceOps, ip: int) -> bool:
    """hash_contains_ip() on the ops' current hashes."""
    return hash_contains_ip(ip, ops.filter_hash, ops.notrace_hash)


def ops_traced_ip_old(ops: FtraceOps, ip: int) -> bool:
    """hash_contains_ip() on the ops' old hashes (valid while MODIFYING or REMOVING)."""
    return hash_contains_ip(ip, ops.old_filter_hash, ops.old_notrace_hash)


def ftrace_ops_test(ops: FtraceOps, ip: int, have_regs: bool) -> bool:
    """Should the list function call `ops` at `ip`? A SAVE_REGS ops never runs without regs."""
    if not have_regs and ops.flags & FtraceOpsFlags.SAVE_REGS:
        return False
    return ops_traces_ip(ops, ip)


def ftrace_ops_get_func(ops: FtraceOps, assist_func: int) -> FtraceFuncT:
    """What a trampoline calls for `ops`: the assist function if RECURSION or RCU, else func."""
    if ops.flags & (FtraceOpsFlags.RECURSION | FtraceOpsFlags.RCU):
        return assist_func
    return ops.func


def check_ops(ops: Any) -> FtraceOps:
    """TypeError unless ``ops`` is an FtraceOps with a valid callback and 64-bit flags."""
    if not isinstance(ops, FtraceOps):
        raise TypeError(f"expected an FtraceOps, not {type(ops).__name__}")
    check_func(ops.func)
    check_u64("ops.flags", int(ops.flags) if isinstance(ops.flags, enum.IntFlag) else ops.flags)
    return ops


def check_pattern(buf: Any) -> str | None:
    """A filter pattern is a str (or None: no pattern). The in-kernel API takes a C string,
    so a NUL ends it: "schedule\0junk" is "schedule", whatever comes after."""
    if buf is None:
        return None
    if not isinstance(buf, str):
        raise TypeError(f"a filter pattern must be a str, not {type(buf).__name__}")
    return buf.partition("\0")[0]
