"""The seam between generic ftrace (core.py) and the machine (arch/x86): what core calls.

Modelled on the kernel's arch hooks (Documentation/trace/ftrace-design.rst). The arch writes
guest text and owns trampolines; core decides what to write and keeps all bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, Union

from ftrace.ops import FtraceOps
from ftrace.records import DynFtrace
from ftrace.update import FtraceUpdate

# What ftrace_call / ftrace_regs_call inside ftrace_caller / ftrace_regs_caller call:
# an address (ftrace_stub, ftrace_ops_list_func), or an ops, meaning
# ftrace_ops_get_func(ops) with function_trace_op = ops.
FtraceCallTarget = Union[int, FtraceOps]


class FtraceArch(Protocol):
    """Arch hooks core relies on. Errors are FtraceError; patch errors FtracePatchError."""

    ftrace_caller: int           # FTRACE_ADDR: the shared trampoline without full regs
    ftrace_regs_caller: int      # FTRACE_REGS_ADDR: the shared trampoline with full pt_regs
    ftrace_stub: int             # the do-nothing callback
    ftrace_ops_list_func: int    # walks every ops (newest first), testing hashes, LIST bit lock
    ftrace_ops_assist_func: int  # recursion/RCU guard around one ops' func
    supports_regs: bool          # DYNAMIC_FTRACE_WITH_REGS: ftrace_regs_caller exists

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        """kallsyms: (name, offset of addr in it, symbol size), or None."""

    def is_kernel_core_data(self, ops: FtraceOps) -> bool:
        """True for an ops that lives forever (kernel core data): it is not made DYNAMIC."""

    def ftrace_make_nop_init(self, rec: DynFtrace) -> None:
        """Boot: verify `call __fentry__` at rec.ip and write the NOP directly (no int3).
        FtracePatchError(EINVAL, actual, expected) on mismatch, EFAULT if unreadable."""

    def ftrace_ops_alloc(self, ops: FtraceOps) -> None:
        """Registration, before anything is visible: build all the guest needs for `ops`
        (its copy, trampoline block, func_hash block). FtraceError(ENOMEM) when out of room,
        EINVAL for an unusable guest callback; nothing allocated then."""

    def ftrace_ops_free_unpublished(self, ops: FtraceOps) -> None:
        """Undo ftrace_ops_alloc for an ops whose registration failed before it was listed."""

    def ftrace_ops_list_add(self, ops: FtraceOps) -> None:
        """Publish `ops` at the head of the guest's list (one pointer store)."""

    def ftrace_ops_list_del(self, ops: FtraceOps) -> None:
        """Unlink `ops` from the guest's list (one pointer store; its own link stays). Called
        first in every unregistration, before the ops leaves core's ops_list."""

    def ftrace_hash_alloc(self, filter_hash: frozenset[int], notrace_hash: frozenset[int]) -> Any:
        """An unpublished func_hash block for the two hashes (ENOMEM when out of room)."""

    def ftrace_hash_free(self, block: Any) -> None:
        """Free a block from ftrace_hash_alloc that was never published."""

    def ftrace_ops_publish_hashes(self, ops: FtraceOps, block: Any) -> None:
        """Make `block` the hashes the list function tests for a registered ops (the
        kernel's rcu_assign_pointer of ops->func_hash); the old block after a grace period."""

    def arch_ftrace_update_trampoline(self, ops: FtraceOps) -> None:
        """At every registration: set up ops' private trampoline (set ops.trampoline,
        ops.trampoline_size and ALLOC_TRAMP), or re-point the one it has at
        ftrace_ops_get_func(ops). Leaving ops.trampoline 0 is allowed (the list is used)."""

    def arch_ftrace_trampoline_free(self, ops: FtraceOps, synced: bool = True) -> None:
        """After unregistration: free what ftrace_ops_alloc built, now if `synced` (the
        rcu_tasks wait completed), else after a later grace period; ops.trampoline = 0."""

    def ftrace_update_ftrace_func(self, func: FtraceCallTarget) -> None:
        """Retarget ftrace_call and ftrace_regs_call (int3 protocol, one site at a time).
        For an ops, also store function_trace_op = ops before the call is switched."""

    def ftrace_replace_code(self, plan: Sequence[FtraceUpdate]) -> None:
        """Verify every site of the plan first (NOP if old is None, else `call old`), and
        only then write all of them (`call new`, or the NOP if new is None) as one int3 batch.
        On a mismatch raise FtracePatchError with the record and write nothing."""

    def synchronize_rcu_tasks(self) -> bool:
        """Return once no vCPU is inside a trampoline or an ftrace callback: True, or False
        if that could not be confirmed in time (the caller then frees through call_rcu)."""

    def in_callback(self) -> bool:
        """Is the caller inside a callback (where ftrace_lock cannot be taken: EDEADLK)?"""

    def ftrace_lock(self) -> AbstractContextManager[None]:
        """Held around every mutating API call (deferred work waits meanwhile)."""
