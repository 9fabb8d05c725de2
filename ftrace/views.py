"""Kernel-visible text of generic ftrace, each produced here only: the tracefs listings
(available_filter_functions[_addrs], enabled_functions, touched_functions), %pS symbols and
the ftrace_bug() report."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ftrace.flags import (
    FTRACE_FL_CALL_OPS, FTRACE_FL_DIRECT, FTRACE_FL_ENABLED, FTRACE_FL_IPMODIFY,
    FTRACE_FL_MODIFIED, FTRACE_FL_REGS, FTRACE_FL_TOUCHED, FTRACE_FL_TRAMP_EN, FtraceOpsFlags,
)
from ftrace.ops import FtraceFuncT, FtraceOps, ftrace_ops_get_func
from ftrace.records import FTRACE_MCOUNT_MAX_OFFSET, DynFtrace
from ftrace.update import FtraceBugType, ftrace_find_tramp_ops_any, ftrace_get_addr_curr

if TYPE_CHECKING:
    from ftrace.arch_api import FtraceCallTarget
    from ftrace.core import Ftrace

FTRACE_INVALID_FUNCTION = "__ftrace_invalid_address__"

BUG_TYPE_TEXT = {
    FtraceBugType.FTRACE_BUG_INIT: "Initializing ftrace call sites",
    FtraceBugType.FTRACE_BUG_NOP: "Setting ftrace call site to NOP",
    FtraceBugType.FTRACE_BUG_CALL: "Setting ftrace call site to call ftrace function",
    FtraceBugType.FTRACE_BUG_UPDATE:
        "Updating ftrace call site to call a different ftrace function",
}


def sprint_symbol(ft: Ftrace, addr: int) -> str:
    """%pS: `name+0xoff/0xsize`, a private trampoline as
    `ftrace_trampoline+0xoff/0xsize [__builtin__ftrace]`, `0x<addr>` if unknown."""
    for ops in ft.ops_list:
        if ops.trampoline and ops.trampoline <= addr < ops.trampoline + ops.trampoline_size:
            return (f"ftrace_trampoline+{addr - ops.trampoline:#x}/{ops.trampoline_size:#x}"
                    " [__builtin__ftrace]")
    sym = ft.arch.lookup(addr)
    if sym is None:
        return f"{addr:#x}"
    return f"{sym[0]}+{sym[1]:#x}/{sym[2]:#x}"


def sprint_func(ft: Ftrace, func: FtraceFuncT) -> str:
    """%pS of a callback: a guest function by symbol, a Python callable by __qualname__ (one
    without it, such as a functools.partial or a callable object, by its type's: never a
    host address, so the text is the same on every run)."""
    if isinstance(func, int):
        return sprint_symbol(ft, func)
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else f"<{type(func).__qualname__} object>"


def _call_target_func(ft: Ftrace, target: FtraceCallTarget) -> FtraceFuncT:
    if isinstance(target, FtraceOps):
        return ftrace_ops_get_func(target, ft.arch.ftrace_ops_assist_func)
    return target


def print_rec(ft: Ftrace, ip: int) -> tuple[str, bool]:
    """%ps of a record (`name [module]` for a module's), or
    `__ftrace_invalid_address___<offset>` (then False)."""
    sym = ft.arch.lookup(ip)
    if sym is None or sym[1] > FTRACE_MCOUNT_MAX_OFFSET:
        return f"{FTRACE_INVALID_FUNCTION}_{sym[1] if sym else 0}", False
    module = ft.records.owner.get(ip)
    return (f"{sym[0]} [{module}]" if module else sym[0]), True


def available_filter_functions(ft: Ftrace) -> str:
    """One traceable function per line, in record order; line n is filter index n."""
    if ft.ftrace_disabled:
        return ""
    return "".join(print_rec(ft, rec.ip)[0] + "\n" for rec in ft.records)


def available_filter_functions_addrs(ft: Ftrace) -> str:
    """`<site address in hex> <name>` per record."""
    if ft.ftrace_disabled:
        return ""
    return "".join(f"{rec.ip:x} {print_rec(ft, rec.ip)[0]}\n" for rec in ft.records)


def enabled_functions(ft: Ftrace) -> str:
    """Every site that calls something now (FTRACE_FL_ENABLED), in t_show's format."""
    return _rec_listing(ft, FTRACE_FL_ENABLED)


def touched_functions(ft: Ftrace) -> str:
    """Every site ever enabled (FTRACE_FL_TOUCHED), same format as enabled_functions."""
    return _rec_listing(ft, FTRACE_FL_TOUCHED)


def _rec_listing(ft: Ftrace, flag: int) -> str:
    if ft.ftrace_disabled:
        return ""
    return "".join(_enabled_line(ft, rec) + "\n" for rec in ft.records if rec.flags & flag)


def _enabled_line(ft: Ftrace, rec: DynFtrace) -> str:
    name, valid = print_rec(ft, rec.ip)
    if not valid:
        return name
    f = rec.flags
    line = (f"{name} ({rec.count})"
            f"{' R' if f & FTRACE_FL_REGS else '  '}"
            f"{' I' if f & FTRACE_FL_IPMODIFY else '  '}"
            f"{' D' if f & FTRACE_FL_DIRECT else '  '}"
            f"{' O' if f & FTRACE_FL_CALL_OPS else '  '}"
            f"{' M ' if f & FTRACE_FL_MODIFIED else '   '}")
    if not f & FTRACE_FL_TRAMP_EN:
        return line + f" ->{sprint_func(ft, _call_target_func(ft, ft.ftrace_call))}"
    tramp_ops = ftrace_find_tramp_ops_any(rec, ft.ops_list)
    if not tramp_ops:
        return line + "\ttramp: ERROR!"
    for ops in tramp_ops:
        line += f"\ttramp: {sprint_symbol(ft, ops.trampoline)} ({sprint_func(ft, ops.func)})"
        if ops.flags & FtraceOpsFlags.ALLOC_TRAMP:  # else a static trampoline: callee unknown
            line += f" ->{sprint_func(ft, _call_target_func(ft, ops))}"
    return line


def ftrace_bug_lines(ft: Ftrace, err: int, rec: DynFtrace | None, actual: bytes | None,
                     expected: bytes | None, bug_type: FtraceBugType) -> list[str]:
    """ftrace_bug()'s console lines, split where printk starts a new record."""
    ip = rec.ip if rec else 0
    where = f"[<{ip:016x}>] {sprint_symbol(ft, ip)}"
    lines = ["------------[ ftrace bug ]------------"]
    if err == errno.EINVAL:
        lines += ["ftrace failed to modify ", where,
                  " actual:   " + (_hex_bytes(actual) if actual is not None
                                   else f"[FAULT] {ip:016x}")]
        if expected is not None:
            lines.append(" expected: " + _hex_bytes(expected))
    else:
        what = {errno.EFAULT: "faulted on modifying", errno.EPERM: "faulted on writing"}
        lines += [f"ftrace {what.get(err, 'faulted on unknown error')} ", where]
    if bug_type in BUG_TYPE_TEXT:
        lines.append(BUG_TYPE_TEXT[bug_type])
    if rec is not None:
        lines.append(f"ftrace record flags: {rec.flags:x}")
        detail = (f" ({rec.count}){' R' if rec.flags & FTRACE_FL_REGS else '  '}"
                  f"{' O' if rec.flags & FTRACE_FL_CALL_OPS else '  '}")
        if rec.flags & FTRACE_FL_TRAMP_EN:
            tramp = "".join(f"\ttramp: {sprint_symbol(ft, o.trampoline)} "
                            f"({sprint_func(ft, o.func)})"
                            for o in ftrace_find_tramp_ops_any(rec, ft.ops_list))
            detail += tramp or "\ttramp: ERROR!"
        addr = ftrace_get_addr_curr(rec, ft.ops_list, ft.removed_ops, ft.arch)
        if addr is None:
            addr = ft.arch.ftrace_caller
        lines += [detail, f" expected tramp: {addr:x}"]
    return lines


def _hex_bytes(data: bytes) -> str:
    """%*phC: colon-separated lowercase hex bytes."""
    return ":".join(f"{b:02x}" for b in data)
