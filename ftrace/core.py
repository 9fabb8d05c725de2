"""Generic ftrace (kernel/trace/ftrace.c): the ops list, registration, filters, code updates.

Core decides; the arch (arch_api.FtraceArch) writes. Every public method follows the
kernel's sequence and errno, and a failing call leaves the state as it found it.
"""

from __future__ import annotations

import enum
import errno
import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ftrace import views
from ftrace.arch_api import FtraceArch, FtraceCallTarget
from ftrace.errors import FtraceError, FtracePatchError
from ftrace.flags import FTRACE_NOCLEAR_FLAGS, FtraceOpsFlags as FL
from ftrace.hash import ftrace_match_addr, match_records, split_mod_command
from ftrace.ops import EMPTY_HASH, FL_USER, FtraceOps, check_ops, check_pattern, check_u64
from ftrace.records import DynFtrace, FtraceRecords, ftrace_pages_and_groups
from ftrace.update import (
    BUG_TYPE_OF_ACTION, IGNORE, MAKE_CALL, MAKE_NOP, FtraceBugType, FtraceUpdate,
    ftrace_get_addr_curr, ftrace_get_addr_new, ftrace_hash_rec_update, ftrace_test_record,
    check_ipmodify_filter, ftrace_update_record, hash_update_ipmodify,
)


class FtraceCommand(enum.IntFlag):
    """FTRACE_UPDATE_CALLS & co: what ftrace_modify_all_code must do."""

    FTRACE_UPDATE_CALLS = 1 << 0
    FTRACE_DISABLE_CALLS = 1 << 1
    FTRACE_UPDATE_TRACE_FUNC = 1 << 2


UPDATE_CALLS = FtraceCommand.FTRACE_UPDATE_CALLS
DISABLE_CALLS = FtraceCommand.FTRACE_DISABLE_CALLS
UPDATE_TRACE_FUNC = FtraceCommand.FTRACE_UPDATE_TRACE_FUNC


_F = TypeVar("_F", bound=Callable[..., Any])


def ftrace_lock(method: _F) -> _F:
    """Run a mutating API call under ftrace_lock. Called from inside a callback (the host is
    in the middle of a guest instruction, possibly in the middle of an update) it would need
    a lock its own caller holds: EDEADLK, as the kernel cannot take ftrace_lock there."""
    @functools.wraps(method)
    def locked(self: "Ftrace", *args: Any, **kwargs: Any) -> Any:
        if self._ftrace_lock_held or self.arch.in_callback():
            raise FtraceError(errno.EDEADLK, f"{method.__name__}() from a callback would "
                              "deadlock on ftrace_lock; use machine.defer()")
        self._ftrace_lock_held = True
        try:
            with self.arch.ftrace_lock():
                return method(self, *args, **kwargs)
        finally:
            self._ftrace_lock_held = False
    return locked  # type: ignore[return-value]


class Ftrace:
    """The generic ftrace state of one machine.

    Fields (all guarded by the caller: one host thread drives every update):
    records - the call sites; ops_list - registered ops, newest first;
    ftrace_trace_function - the wanted global callback (§3.7); ftrace_call - what
    ftrace_call/ftrace_regs_call call right now; ftrace_disabled - dead after a bug.
    """

    def __init__(self, arch: FtraceArch, call_sites: Iterable[int],
                 log: Callable[[str], None] = print) -> None:
        self.arch = arch
        self.log = log
        self.records = FtraceRecords(call_sites)
        self.ops_list: list[FtraceOps] = []
        self.ftrace_disabled = False
        self.ftrace_start_up = 0
        self.ftrace_trace_function: FtraceCallTarget = arch.ftrace_stub
        self.ftrace_call: FtraceCallTarget = arch.ftrace_stub
        self.removed_ops: FtraceOps | None = None
        self._ftrace_enabled = 0
        self._last_ftrace_enabled = False
        self._saved_ftrace_func: FtraceCallTarget | None = None
        self._ftrace_lock_held = False

    # -- boot -------------------------------------------------------------------------------

    def ftrace_init(self) -> None:
        """ftrace_init(): NOP every site, disable invalid weak sites, set ftrace_enabled = 1."""
        count = len(self.records)
        if not count:
            self.log("ftrace: No functions to be traced?")
            self.ftrace_disabled = True
            return
        for rec in self.records:
            if self.ftrace_disabled:
                break  # as ftrace_update_code: stop converting, but boot goes on
            try:
                self.arch.ftrace_make_nop_init(rec)
            except FtracePatchError as e:
                self._ftrace_bug_from(e, FtraceBugType.FTRACE_BUG_INIT)
        pages, groups = ftrace_pages_and_groups(count)
        self.log(f"ftrace: allocating {count} entries in {pages} pages")
        self.log(f"ftrace: allocated {pages} pages with {groups} groups")
        self.records.mark_invalid(self.arch.lookup)
        self._ftrace_enabled = 1
        self._last_ftrace_enabled = True

    # -- registration -----------------------------------------------------------------------

    @ftrace_lock
    def register_ftrace_function(self, ops: FtraceOps) -> None:
        """Start calling ops.func at the functions its hashes select (ftrace_startup).

        All or nothing: the flags are checked and everything the guest will need is built
        (ENOMEM, EINVAL for an unusable guest callback) and the IPMODIFY claim is made (EBUSY)
        before the ops becomes visible anywhere."""
        check_ops(ops)
        if self.ftrace_disabled:
            raise FtraceError(errno.ENODEV, "ftrace is disabled")
        orig_flags = ops.flags
        ops.flags = self._register_flags(ops)
        try:
            check_ipmodify_filter(ops, ops.filter_hash or None)   # before anything is built
            self.arch.ftrace_ops_alloc(ops)
        except BaseException:
            ops.flags = orig_flags
            raise
        ops.flags |= FL.ENABLED | FL.ADDING
        try:
            hash_update_ipmodify(self.records, ops, EMPTY_HASH, ops.filter_hash or None)
        except FtraceError:
            ops.flags = orig_flags
            self.arch.ftrace_ops_free_unpublished(ops)
            raise
        self._register_ftrace_function(ops)
        self.ftrace_start_up += 1
        command = UPDATE_CALLS if ftrace_hash_rec_update(self.records, ops, True,
                                                          self.ops_list) else 0
        self._ftrace_startup_enable(FtraceCommand(command))
        if self.ftrace_disabled:
            self._unregister_ftrace_function(ops)
            raise FtraceError(errno.ENODEV, "ftrace died while enabling the ops")
        ops.flags &= ~FL.ADDING

    def _register_flags(self, ops: FtraceOps) -> FL:
        """__register_ftrace_function's checks: the flags the ops will run with, or an error.

        Seed API rather than the kernel in one place: SAVE_REGS_IF_SUPPORTED alone asks for
        regs where the machine has them (the kernel needs SAVE_REGS too on x86-64) and is
        dropped where it has none. IPMODIFY without SAVE_REGS is accepted, as by the kernel
        with DYNAMIC_FTRACE_WITH_ARGS (the seed says it requires SAVE_REGS; the issue asks
        for klp's ops with the kernel's flags, DYNAMIC | IPMODIFY | PERMANENT): such an ops
        sets the ip through ftrace_caller's ftrace_regs.
        Only user flags (and DYNAMIC, ALLOC_TRAMP: left by an earlier registration) are accepted.
        """
        flags = ops.flags
        if flags & FL.DELETED:
            raise FtraceError(errno.EINVAL, "ops was deleted")
        if flags & FL.ENABLED:
            raise FtraceError(errno.EBUSY, "ops is already registered")
        foreign = int(flags) & ~int(FL_USER | FL.DYNAMIC | FL.ALLOC_TRAMP)
        if foreign:
            raise FtraceError(errno.EINVAL, f"flags {foreign:#x} are not a user's (ftrace "
                              "sets them itself, or they do not exist)")
        if flags & FL.SAVE_REGS_IF_SUPPORTED:
            flags = flags | FL.SAVE_REGS if self.arch.supports_regs else flags & ~FL.SAVE_REGS
        elif flags & FL.SAVE_REGS and not self.arch.supports_regs:
            raise FtraceError(errno.EINVAL, "SAVE_REGS is not supported by this machine")
        if not self._ftrace_enabled and flags & FL.PERMANENT:
            raise FtraceError(errno.EBUSY, "PERMANENT ops while ftrace_enabled=0")
        if not self.arch.is_kernel_core_data(ops):
            flags |= FL.DYNAMIC
        return FL(flags)

    def _register_ftrace_function(self, ops: FtraceOps) -> None:
        """Push the ops at the list head (host and guest), give it its trampoline."""
        self.ops_list.insert(0, ops)
        self.arch.ftrace_ops_list_add(ops)
        ops.saved_func = ops.func
        self.arch.arch_ftrace_update_trampoline(ops)
        if self._ftrace_enabled:
            self._update_ftrace_function()

    @ftrace_lock
    def unregister_ftrace_function(self, ops: FtraceOps) -> None:
        """Stop calling ops.func; on return no vCPU is inside it or its trampoline.

        The ops leaves the guest's list first (whatever the sites need), then sites are
        patched, then the rcu_tasks wait, then its guest memory is freed. Seed API rather
        than the kernel: the wait happens for every ops (the kernel skips it for ops in core
        kernel data). If ftrace dies during the update, ENODEV and nothing is freed: a site
        may still call the trampoline.
        """
        check_ops(ops)
        if self.ftrace_disabled:
            raise FtraceError(errno.ENODEV, "ftrace is disabled")
        self._unregister_ftrace_function(ops)
        self.ftrace_start_up -= 1
        if ops.filter_hash:  # disabling IPMODIFY never fails
            hash_update_ipmodify(self.records, ops, ops.filter_hash, EMPTY_HASH)
        command = UPDATE_CALLS if ftrace_hash_rec_update(self.records, ops, False,
                                                          self.ops_list) else 0
        ops.flags &= ~FL.ENABLED
        if self._saved_ftrace_func != self.ftrace_trace_function:
            self._saved_ftrace_func = self.ftrace_trace_function
            command |= UPDATE_TRACE_FUNC
        if command and self._ftrace_enabled:
            self._run_removing(ops, FtraceCommand(command))
        if self.ftrace_disabled:
            raise FtraceError(errno.ENODEV, "ftrace died while removing the ops; its "
                              "trampoline stays, as sites may still call it")
        synced = self.arch.synchronize_rcu_tasks()
        if ops.flags & FL.DYNAMIC:
            self.arch.arch_ftrace_trampoline_free(ops, synced)

    def _unregister_ftrace_function(self, ops: FtraceOps) -> None:
        if not ops.flags & FL.ENABLED:
            raise FtraceError(errno.EBUSY, "ops is not registered")
        self.arch.ftrace_ops_list_del(ops)
        self.ops_list.remove(ops)
        if self._ftrace_enabled:
            self._update_ftrace_function()
        ops.func = ops.saved_func

    def _run_removing(self, ops: FtraceOps, command: FtraceCommand) -> None:
        """Patch with `ops` gone, its old hashes still finding its trampoline."""
        ops.flags |= FL.REMOVING
        self.removed_ops = ops
        ops.old_filter_hash, ops.old_notrace_hash = ops.filter_hash, ops.notrace_hash
        self._run_update_code(command)
        if not self.ops_list:
            leftovers = [rec for rec in self.records if rec.flags & ~FTRACE_NOCLEAR_FLAGS]
            for rec in leftovers:
                self.log(f"  {views.sprint_symbol(self, rec.ip)} flags:{rec.flags:x}")
            if leftovers:
                self.ftrace_kill()
        ops.old_filter_hash = ops.old_notrace_hash = EMPTY_HASH
        self.removed_ops = None
        ops.flags &= ~FL.REMOVING

    # -- filters ----------------------------------------------------------------------------

    @ftrace_lock
    def ftrace_set_filter(self, ops: FtraceOps, buf: str | None, reset: bool) -> None:
        """Trace the functions matching `buf` (one pattern); reset first if `reset`."""
        self._set_regex(ops, buf, reset, enable=True)

    @ftrace_lock
    def ftrace_set_notrace(self, ops: FtraceOps, buf: str | None, reset: bool) -> None:
        """Never trace the functions matching `buf` (notrace wins over the filter)."""
        self._set_regex(ops, buf, reset, enable=False)

    def ftrace_set_filter_ip(self, ops: FtraceOps, ip: int, remove: bool, reset: bool) -> None:
        """Add (or remove) one call site, given as the site or as sym+0, to the filter."""
        self.ftrace_set_filter_ips(ops, [ip], remove, reset)

    @ftrace_lock
    def ftrace_set_filter_ips(self, ops: FtraceOps, ips: list[int], remove: bool,
                              reset: bool) -> None:
        """ftrace_set_filter_ip for several sites at once; all or nothing."""
        if isinstance(ips, (str, bytes)) or not hasattr(ips, "__iter__"):
            raise TypeError(f"ips must be a list of ints, not {type(ips).__name__}")
        ips = [check_u64("an ip", ip) for ip in ips]
        self._set_hash(ops, None, ips, remove, reset, enable=True)

    def _set_regex(self, ops: FtraceOps, buf: str | None, reset: bool, enable: bool) -> None:
        buf = check_pattern(buf)
        check_ops(ops)
        func, module = split_mod_command(ops, buf, self.records) if buf is not None else (None, None)
        self._set_hash(ops, func, None, False, reset, enable, module)

    def _set_hash(self, ops: FtraceOps, buf: str | None, ips: list[int] | None, remove: bool,
                  reset: bool, enable: bool, module: str | None = None) -> None:
        """ftrace_set_hash: build the new hash aside, then swap it in with one update."""
        check_ops(ops)
        if self.ftrace_disabled:
            raise FtraceError(errno.ENODEV, "ftrace is disabled")
        new = EMPTY_HASH if reset else (ops.filter_hash if enable else ops.notrace_hash)
        if buf is not None:
            new, _, found = match_records(self.records, self.arch.lookup, new, buf, module)
            if not found:
                raise FtraceError(errno.EINVAL, f"{buf!r} matches no traceable function")
        if ips is not None:
            new = ftrace_match_addr(self.records, self.arch.lookup, new, ips, remove)
        self._hash_move_and_update_ops(ops, new, enable)

    def _hash_move_and_update_ops(self, ops: FtraceOps, new: frozenset[int],
                                  enable: bool) -> None:
        """Drop the old references, publish the new hash, add references, patch once. The
        guest's func_hash block is built first, so running out of room changes nothing."""
        if ops.flags & FL.IPMODIFY and not enable:
            raise FtraceError(errno.EINVAL, "an IPMODIFY ops cannot have a notrace hash")
        new_filter = new if enable else ops.filter_hash
        new_notrace = ops.notrace_hash if enable else new
        registered = bool(ops.flags & FL.ENABLED)
        block = self.arch.ftrace_hash_alloc(new_filter, new_notrace) if registered else 0
        try:
            if enable:
                hash_update_ipmodify(self.records, ops, ops.filter_hash or None, new or None)
        except FtraceError:
            self.arch.ftrace_hash_free(block)
            raise
        old_filter, old_notrace = ops.filter_hash, ops.notrace_hash
        changed = ftrace_hash_rec_update(self.records, ops, False, self.ops_list)
        ops.filter_hash, ops.notrace_hash = new_filter, new_notrace
        if registered:
            self.arch.ftrace_ops_publish_hashes(ops, block)
        changed |= ftrace_hash_rec_update(self.records, ops, True, self.ops_list)
        if self._ftrace_enabled and registered and changed:   # else the plan would be empty
            ops.flags |= FL.MODIFYING
            ops.old_filter_hash, ops.old_notrace_hash = old_filter, old_notrace
            # Only sites in the old or new filter can change (both non-empty: else all).
            scope = old_filter | new_filter if old_filter and new_filter else None
            self._run_update_code(UPDATE_CALLS, scope)
            ops.old_filter_hash = ops.old_notrace_hash = EMPTY_HASH
            ops.flags &= ~FL.MODIFYING

    # -- modules (the loader calls these as the kernel's load_module/free_module do) ---------

    @ftrace_lock
    def ftrace_module_init(self, module: str, call_sites: Iterable[int]) -> None:
        """A module is COMING: add records for its sites, make each `call __fentry__` the NOP
        before its code runs, then enable the sites registered ops already trace (an ops with
        an empty filter traces every function, new ones too: ftrace_module_enable)."""
        if self.ftrace_disabled:
            return
        new = self.records.add_module(module, call_sites)
        for rec in new:
            try:
                self.arch.ftrace_make_nop_init(rec)
            except FtracePatchError as e:
                self._ftrace_bug_from(e, FtraceBugType.FTRACE_BUG_INIT)
                return
        self.records.mark_invalid(self.arch.lookup)
        update = False
        for ops in self.ops_list:
            update |= ftrace_hash_rec_update(new, ops, True, self.ops_list)
        if update and self._ftrace_enabled:
            self._run_update_code(UPDATE_CALLS)

    @ftrace_lock
    def ftrace_release_mod(self, module: str) -> None:
        """A module is GOING (its code will not run again): forget its records. Filters keep
        their size but the module's ips become 0 (clear_mod_from_hashes), so an ops filtered
        only on the module does not start tracing everything."""
        gone = {rec.ip for rec in self.records.remove_module(module)}
        if not gone:
            return
        changed = []
        for ops in self.ops_list:
            hashes = (ops.filter_hash, ops.notrace_hash)
            new = tuple(frozenset(0 if ip in gone else ip for ip in h) for h in hashes)
            if new != hashes:
                changed.append((ops, new))
        blocks: list = []
        try:                                # every block first: ENOMEM changes nothing
            for _, (filter_hash, notrace_hash) in changed:
                blocks.append(self.arch.ftrace_hash_alloc(filter_hash, notrace_hash))
        except FtraceError:
            for block in blocks:
                self.arch.ftrace_hash_free(block)
            raise
        for (ops, (ops.filter_hash, ops.notrace_hash)), block in zip(changed, blocks):
            self.arch.ftrace_ops_publish_hashes(ops, block)

    # -- kernel.ftrace_enabled --------------------------------------------------------------

    @property
    def ftrace_enabled(self) -> int:
        """/proc/sys/kernel/ftrace_enabled."""
        return self._ftrace_enabled

    @ftrace_enabled.setter
    @ftrace_lock
    def ftrace_enabled(self, value: int) -> None:
        """0 NOPs every site but unregisters nothing (EBUSY while a PERMANENT ops is
        registered; the value stays 1); 1 re-patches every site that has users."""
        if not isinstance(value, int):
            raise TypeError(f"ftrace_enabled must be an int, not {type(value).__name__}")
        if self.ftrace_disabled:
            raise FtraceError(errno.ENODEV, "ftrace is disabled")
        self._ftrace_enabled = value
        if bool(value) == self._last_ftrace_enabled:
            return
        if value:
            if self.ops_list:
                self._update_ftrace_function()
            self._saved_ftrace_func = None  # force UPDATE_TRACE_FUNC
            if self.ftrace_start_up:
                self._ftrace_startup_enable(UPDATE_CALLS)
        else:
            if any(op.flags & FL.PERMANENT for op in self.ops_list):
                self._ftrace_enabled = 1
                raise FtraceError(errno.EBUSY, "a PERMANENT ops is registered")
            self.ftrace_trace_function = self.arch.ftrace_stub
            if self.ftrace_start_up:
                self._run_update_code(DISABLE_CALLS)
        self._last_ftrace_enabled = bool(self._ftrace_enabled)

    # -- code updates -----------------------------------------------------------------------

    def _update_ftrace_function(self) -> None:
        """update_ftrace_function: the stub for no ops; for one ops the ops itself unless it
        is DYNAMIC or RCU; otherwise ftrace_ops_list_func."""
        if not self.ops_list:
            self.ftrace_trace_function = self.arch.ftrace_stub
        elif len(self.ops_list) == 1 and not self.ops_list[0].flags & (FL.DYNAMIC | FL.RCU):
            self.ftrace_trace_function = self.ops_list[0]
        else:
            self.ftrace_trace_function = self.arch.ftrace_ops_list_func

    def _ftrace_startup_enable(self, command: FtraceCommand) -> None:
        if self._saved_ftrace_func != self.ftrace_trace_function:
            self._saved_ftrace_func = self.ftrace_trace_function
            command |= UPDATE_TRACE_FUNC
        if command and self._ftrace_enabled:
            self._run_update_code(command)

    def _run_update_code(self, command: FtraceCommand,
                         scope: frozenset[int] | None = None) -> None:
        """ftrace_modify_all_code: list function first, then the sites, then the final func."""
        list_func = self.arch.ftrace_ops_list_func
        update = command & UPDATE_TRACE_FUNC
        if update and not self._update_ftrace_call(list_func):
            return
        if command & UPDATE_CALLS:
            self._ftrace_replace_code(True, scope)
        elif command & DISABLE_CALLS:
            self._ftrace_replace_code(False, scope)
        if update and self.ftrace_trace_function != list_func:
            self._update_ftrace_call(self.ftrace_trace_function)

    def _update_ftrace_call(self, func: FtraceCallTarget) -> bool:
        try:
            self.arch.ftrace_update_ftrace_func(func)
        except FtraceError as e:
            self.log(f"ftrace: failed to update ftrace_call: {e.strerror}")
            self.ftrace_kill()
            return False
        self.ftrace_call = func
        return True

    def ftrace_plan(self, enable: bool, scope: frozenset[int] | None = None) -> list[FtraceUpdate]:
        """Every site whose code must change, with the address it calls now and must call."""
        plan = []
        recs = self.records if scope is None else [
            rec for ip in sorted(scope) if (rec := self.records.lookup_rec(ip, ip)) and rec.ip == ip]
        for rec in recs:
            action = ftrace_test_record(rec, enable)
            if action == IGNORE:
                continue
            old = None if action == MAKE_CALL else self._addr(rec, curr=True)
            new = None if action == MAKE_NOP else self._addr(rec, curr=False)
            plan.append(FtraceUpdate(rec, action, old, new))
        return plan

    def _addr(self, rec: DynFtrace, curr: bool) -> int:
        """ftrace_get_addr_curr/new; bad trampoline accounting warns and kills ftrace."""
        if curr:
            addr = ftrace_get_addr_curr(rec, self.ops_list, self.removed_ops, self.arch)
        else:
            addr = ftrace_get_addr_new(rec, self.ops_list, self.arch)
        if addr is None:
            tail = "" if curr else f" ({rec.flags:x})"
            self.log(f"Bad trampoline accounting at: {rec.ip:016x} "
                     f"({views.sprint_symbol(self, rec.ip)}){tail}")
            self.ftrace_kill()
            return self.arch.ftrace_caller
        return addr

    def _ftrace_replace_code(self, enable: bool, scope: frozenset[int] | None = None) -> None:
        plan = self.ftrace_plan(enable, scope)
        if not plan:
            return
        try:
            self.arch.ftrace_replace_code(plan)
        except FtracePatchError as e:
            action = next(step.action for step in plan if step.rec is e.rec)
            self._ftrace_bug_from(e, BUG_TYPE_OF_ACTION[action])
            return
        for step in plan:
            ftrace_update_record(step.rec, enable)

    # -- death ------------------------------------------------------------------------------

    def ftrace_bug(self, err: int, rec: DynFtrace | None, actual: bytes | None = None,
                   expected: bytes | None = None,
                   bug_type: FtraceBugType = FtraceBugType.FTRACE_BUG_UNKNOWN) -> None:
        """Log the kernel's `[ ftrace bug ]` report, then kill ftrace (FTRACE_WARN_ON_ONCE)."""
        for line in views.ftrace_bug_lines(self, err, rec, actual, expected, bug_type):
            self.log(line)
        self.ftrace_kill()

    def _ftrace_bug_from(self, e: FtracePatchError, bug_type: FtraceBugType) -> None:
        self.ftrace_bug(e.errno, e.rec, e.actual, e.expected, bug_type)

    def ftrace_kill(self) -> None:
        """Irreversible: no more registrations (ENODEV), ftrace_enabled = 0, stub callback.
        Sites are left as they are, as in the kernel."""
        self.ftrace_disabled = True
        self._ftrace_enabled = 0
        self.ftrace_trace_function = self.arch.ftrace_stub
