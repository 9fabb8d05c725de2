"""Deciding what to patch: record reference counting and ftrace_check_record (ftrace.c).

Pure functions over records and the ops list; nothing here touches guest text. The result of
an update is a plan of FtraceUpdate entries that the arch layer verifies and writes.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ftrace.errors import FtraceError
from ftrace.flags import (
    FTRACE_FL_DISABLED, FTRACE_FL_ENABLED, FTRACE_FL_IPMODIFY, FTRACE_FL_MODIFIED,
    FTRACE_FL_REGS, FTRACE_FL_REGS_EN,
    FTRACE_FL_TOUCHED, FTRACE_FL_TRAMP, FTRACE_FL_TRAMP_EN, FTRACE_NOCLEAR_FLAGS, FTRACE_REF_MAX,
    FtraceOpsFlags,
)
from ftrace.ops import (
    FtraceOps, ftrace_ops_test, hash_contains_ip, ops_traced_ip_old, ops_traces_ip,
)
from ftrace.records import DynFtrace, FtraceRecords

if TYPE_CHECKING:
    from ftrace.arch_api import FtraceArch


class FtraceUpdateAction(enum.IntEnum):
    """What ftrace_check_record asks for at one site."""

    FTRACE_UPDATE_IGNORE = 0
    FTRACE_UPDATE_MAKE_CALL = 1
    FTRACE_UPDATE_MODIFY_CALL = 2
    FTRACE_UPDATE_MAKE_NOP = 3


IGNORE = FtraceUpdateAction.FTRACE_UPDATE_IGNORE
MAKE_CALL = FtraceUpdateAction.FTRACE_UPDATE_MAKE_CALL
MODIFY_CALL = FtraceUpdateAction.FTRACE_UPDATE_MODIFY_CALL
MAKE_NOP = FtraceUpdateAction.FTRACE_UPDATE_MAKE_NOP


class FtraceBugType(enum.IntEnum):
    """ftrace_bug_type: the phase ftrace_bug() reports."""

    FTRACE_BUG_UNKNOWN = 0
    FTRACE_BUG_INIT = 1
    FTRACE_BUG_NOP = 2
    FTRACE_BUG_CALL = 3
    FTRACE_BUG_UPDATE = 4


BUG_TYPE_OF_ACTION = {
    MAKE_CALL: FtraceBugType.FTRACE_BUG_CALL,
    MODIFY_CALL: FtraceBugType.FTRACE_BUG_UPDATE,
    MAKE_NOP: FtraceBugType.FTRACE_BUG_NOP,
}


class FtraceUpdate(NamedTuple):
    """One step of a plan: `old` is what the site calls now, `new` what it must call;
    None means the 5-byte NOP. (A NamedTuple so the arch can unpack it as a 4-tuple.)"""

    rec: DynFtrace
    action: FtraceUpdateAction
    old: int | None
    new: int | None


def ftrace_check_record(rec: DynFtrace, enable: bool, update: bool) -> FtraceUpdateAction:
    """The kernel's state machine: compare wanted bits with _EN bits; commit them if `update`.

    TOUCHED is set on every enable, MODIFIED once IPMODIFY was ever live, and the last
    reference gone clears every bit but DISABLED, TOUCHED and MODIFIED. ftemu has no direct
    calls and no call-ops, so the DIRECT and CALL_OPS pairs never differ.
    """
    f = rec.flags
    if f & FTRACE_FL_DISABLED and not f & FTRACE_FL_ENABLED:  # skip_record()
        return IGNORE
    flag = FTRACE_FL_ENABLED if enable and f & FTRACE_REF_MAX else 0
    if flag:
        if bool(f & FTRACE_FL_REGS) != bool(f & FTRACE_FL_REGS_EN):
            flag |= FTRACE_FL_REGS
        if bool(f & FTRACE_FL_TRAMP) != bool(f & FTRACE_FL_TRAMP_EN):
            flag |= FTRACE_FL_TRAMP
    if f & FTRACE_FL_ENABLED == flag:
        return IGNORE
    if flag:
        flag ^= f & FTRACE_FL_ENABLED
        if update:
            f |= FTRACE_FL_ENABLED | FTRACE_FL_TOUCHED
            if flag & FTRACE_FL_REGS:
                f = f | FTRACE_FL_REGS_EN if f & FTRACE_FL_REGS else f & ~FTRACE_FL_REGS_EN
            if flag & FTRACE_FL_TRAMP:
                f = f | FTRACE_FL_TRAMP_EN if f & FTRACE_FL_TRAMP else f & ~FTRACE_FL_TRAMP_EN
            if f & FTRACE_FL_IPMODIFY:
                f |= FTRACE_FL_MODIFIED
            rec.flags = f
        return MAKE_CALL if flag & FTRACE_FL_ENABLED else MODIFY_CALL
    if update:
        if not f & FTRACE_REF_MAX:
            rec.flags = f & FTRACE_NOCLEAR_FLAGS
        else:
            rec.flags = f & ~(FTRACE_FL_ENABLED | FTRACE_FL_TRAMP_EN | FTRACE_FL_REGS_EN)
    return MAKE_NOP


def ftrace_test_record(rec: DynFtrace, enable: bool) -> FtraceUpdateAction:
    """What the site needs, without changing the record."""
    return ftrace_check_record(rec, enable, False)


def ftrace_update_record(rec: DynFtrace, enable: bool) -> FtraceUpdateAction:
    """Commit the _EN bits once the site has been written."""
    return ftrace_check_record(rec, enable, True)


def ftrace_hash_rec_update(records: FtraceRecords, ops: FtraceOps, inc: bool,
                           ops_list: Sequence[FtraceOps]) -> bool:
    """__ftrace_hash_rec_update: add (inc) or drop the ops' reference on each record it traces.

    REGS is set when any attached ops has SAVE_REGS; TRAMP when the record has exactly one ops
    and that ops has a trampoline. Returns True if some site now needs patching.
    """
    if not ops.flags & FtraceOpsFlags.ENABLED:
        return False
    update = False
    save_regs = bool(ops.flags & FtraceOpsFlags.SAVE_REGS)    # IntFlag arithmetic is slow:
    filter_hash, notrace_hash = ops.filter_hash, ops.notrace_hash   # once, not per record
    for rec in _candidates(records, ops):
        if rec.flags & FTRACE_FL_DISABLED and not rec.flags & FTRACE_FL_ENABLED:
            continue
        if not hash_contains_ip(rec.ip, filter_hash, notrace_hash):     # ops_traces_ip
            continue
        if inc:
            _rec_inc(rec, ops, save_regs)
        else:
            _rec_dec(rec, ops, save_regs, ops_list)
        if not update:                   # one site needing it is enough (the test changes nothing)
            update = ftrace_test_record(rec, True) != IGNORE
    return update


def _candidates(records: FtraceRecords | Sequence[DynFtrace], ops: FtraceOps):
    """The records the ops may trace, in record order: with a filter, only its sites (found
    by binary search) rather than every record."""
    if not ops.filter_hash or not isinstance(records, FtraceRecords):
        return records
    found = (records.lookup_rec(ip, ip) for ip in sorted(ops.filter_hash))
    return [rec for rec in found if rec is not None and rec.ip in ops.filter_hash]


def _rec_inc(rec: DynFtrace, ops: FtraceOps, save_regs: bool) -> None:
    f = rec.flags + 1
    if f & FTRACE_REF_MAX == 1 and ops.trampoline:
        f |= FTRACE_FL_TRAMP
    else:
        f &= ~FTRACE_FL_TRAMP  # shared sites go through ftrace_caller
    if save_regs:
        f |= FTRACE_FL_REGS
    rec.flags = f


def _rec_dec(rec: DynFtrace, ops: FtraceOps, save_regs: bool, ops_list: Sequence[FtraceOps]) -> None:
    if not rec.flags & FTRACE_REF_MAX:
        raise RuntimeError(f"ftrace: record {rec.ip:#x}: reference count underflow")
    rec.flags -= 1
    if (rec.flags & FTRACE_REF_MAX and rec.flags & FTRACE_FL_REGS and save_regs
            and not any(o.flags & FtraceOpsFlags.SAVE_REGS and ftrace_ops_test(o, rec.ip, True)
                        for o in ops_list)):
        rec.flags &= ~FTRACE_FL_REGS
    if rec.flags & FTRACE_REF_MAX == 1 and ftrace_find_tramp_ops_any_other(rec, ops, ops_list):
        rec.flags |= FTRACE_FL_TRAMP
    else:
        rec.flags &= ~FTRACE_FL_TRAMP


def check_ipmodify_filter(ops: FtraceOps, hash_: frozenset[int] | None) -> None:
    """An IPMODIFY ops may not trace all functions (None, an empty filter): EINVAL."""
    if ops.flags & FtraceOpsFlags.IPMODIFY and hash_ is None:
        raise FtraceError(errno.EINVAL, "ftrace: an IPMODIFY ops cannot trace all functions")


def hash_update_ipmodify(records: FtraceRecords, ops: FtraceOps, old: frozenset[int] | None,
                         new: frozenset[int] | None) -> None:
    """__ftrace_hash_update_ipmodify: move the IPMODIFY claim of `ops` from `old` to `new`.

    None stands for "all functions", which an IPMODIFY ops may not trace (EINVAL). A site
    already claimed by another IPMODIFY ops is EBUSY, after undoing this pass's changes.
    """
    if not ops.flags & FtraceOpsFlags.ENABLED or not ops.flags & FtraceOpsFlags.IPMODIFY:
        return
    check_ipmodify_filter(ops, old)
    check_ipmodify_filter(ops, new)
    live = [rec for rec in records if not rec.flags & FTRACE_FL_DISABLED]
    for n, rec in enumerate(live):
        in_old, in_new = rec.ip in old, rec.ip in new
        if in_old == in_new:
            continue
        if not in_new:
            rec.flags &= ~FTRACE_FL_IPMODIFY
        elif not rec.flags & FTRACE_FL_IPMODIFY:
            rec.flags |= FTRACE_FL_IPMODIFY
        else:
            for undo in live[:n]:
                if undo.ip in new and undo.ip not in old:
                    undo.flags &= ~FTRACE_FL_IPMODIFY
                elif undo.ip in old and undo.ip not in new:
                    undo.flags |= FTRACE_FL_IPMODIFY
            raise FtraceError(errno.EBUSY, f"ftrace: {rec.ip:#x} already has an IPMODIFY ops")


def ftrace_find_tramp_ops_any(rec: DynFtrace, ops_list: Sequence[FtraceOps]) -> list[FtraceOps]:
    """Every ops with a trampoline tracing the record, in list order (_any + _next)."""
    return [op for op in ops_list if op.trampoline and ops_traces_ip(op, rec.ip)]


def ftrace_find_tramp_ops_any_other(rec: DynFtrace, exclude: FtraceOps,
                                    ops_list: Sequence[FtraceOps]) -> FtraceOps | None:
    """The first ops other than `exclude` with a trampoline tracing the record."""
    return next((op for op in ops_list if op is not exclude and op.trampoline
                 and ops_traces_ip(op, rec.ip)), None)


def ftrace_find_tramp_ops_new(rec: DynFtrace, ops_list: Sequence[FtraceOps]) -> FtraceOps | None:
    """The ops the record will call directly (its hash tracks the record's only reference)."""
    for op in ops_list:                  # per site of every update: a loop, not a generator
        if hash_contains_ip(rec.ip, op.filter_hash, op.notrace_hash):       # ops_traces_ip
            return op
    return None


def ftrace_find_tramp_ops_curr(rec: DynFtrace, ops_list: Sequence[FtraceOps],
                               removed_ops: FtraceOps | None) -> FtraceOps | None:
    """The ops whose trampoline the site calls now: a removed ops by its old hashes first,
    then (skipping ops being added) a modifying ops by its old hashes or any other by its own."""
    if removed_ops is not None and ops_traced_ip_old(removed_ops, rec.ip):
        return removed_ops
    for op in ops_list:
        if not op.trampoline or op.flags & FtraceOpsFlags.ADDING:
            continue
        if op.flags & FtraceOpsFlags.MODIFYING:
            if ops_traced_ip_old(op, rec.ip):
                return op
        elif ops_traces_ip(op, rec.ip):
            return op
    return None


def ftrace_get_addr_new(rec: DynFtrace, ops_list: Sequence[FtraceOps],
                        arch: FtraceArch) -> int | None:
    """Where the site must call: TRAMP → the ops' trampoline, REGS → ftrace_regs_caller,
    else ftrace_caller. None is "Bad trampoline accounting" (the caller kills ftrace)."""
    if rec.flags & FTRACE_FL_TRAMP:
        ops = ftrace_find_tramp_ops_new(rec, ops_list)
        return ops.trampoline if ops is not None and ops.trampoline else None
    return arch.ftrace_regs_caller if rec.flags & FTRACE_FL_REGS else arch.ftrace_caller


def ftrace_get_addr_curr(rec: DynFtrace, ops_list: Sequence[FtraceOps],
                         removed_ops: FtraceOps | None, arch: FtraceArch) -> int | None:
    """Where the site calls now, from the _EN bits; None is "Bad trampoline accounting"."""
    if rec.flags & FTRACE_FL_TRAMP_EN:
        ops = ftrace_find_tramp_ops_curr(rec, ops_list, removed_ops)
        return ops.trampoline if ops is not None else None
    return arch.ftrace_regs_caller if rec.flags & FTRACE_FL_REGS_EN else arch.ftrace_caller
