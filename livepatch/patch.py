"""Patching functions through ftrace (kernel/livepatch/patch.c).

One ``klp_ops`` per patched original function: an ftrace ops whose callback is the guest's
own ``klp_ftrace_handler`` and whose ``private`` points at an 8-byte slot in guest memory, the
head of the function's func stack (newest ``klp_func`` first, linked through
``stack_next``). Pushing or popping a func is one pointer store the handler sees whole.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ftrace import FtraceError, FtraceOps
from ftrace.flags import FtraceOpsFlags as FL

from .structs import KlpFunc, KlpObject

if TYPE_CHECKING:
    from emu import Machine

# The kernel's DYNAMIC | IPMODIFY | PERMANENT (DYNAMIC is ftrace's own doing here), without
# SAVE_REGS as on x86-64 with DYNAMIC_FTRACE_WITH_ARGS: the ops' trampoline builds only
# ftrace_caller's ftrace_regs, through which the handler sets the ip.
KLP_OPS_FLAGS = FL.IPMODIFY | FL.PERMANENT
_q = struct.Struct("<Q")


@dataclass(eq=False)
class KlpOps:
    """struct klp_ops: the ftrace ops of one original function and its func stack."""
    old_func: int
    slot: int                          # guest address of the func stack head
    fops: FtraceOps
    func_stack: list[KlpFunc] = field(default_factory=list)     # newest first


class KlpPatcher:
    """klp_patch_object / klp_unpatch_object on one machine."""

    def __init__(self, m: "Machine", log: Callable[[str, int], None]) -> None:
        self.m = m
        self.log = log
        self.ops: dict[int, KlpOps] = {}
        self.handler = m.symbol_address("klp_ftrace_handler")

    def find_ops(self, old_func: int) -> KlpOps | None:
        return self.ops.get(old_func)

    def _publish(self, ops: KlpOps) -> None:
        """Relink the stack in the guest: links first, then the head, one store each."""
        for i, f in enumerate(ops.func_stack):
            f.set_stack_next(self.m, ops.func_stack[i + 1] if i + 1 < len(ops.func_stack) else None)
        head = ops.func_stack[0].addr if ops.func_stack else 0
        self.m.write(ops.slot, _q.pack(head))

    def patch_func(self, func: KlpFunc) -> None:
        """klp_patch_func: push ``func``; the first one of a function registers its ops.
        FtraceError (the kernel's errno) if ftrace refuses, with nothing changed."""
        if func.patched:
            return
        ft = self.m.ftrace
        ops = self.find_ops(func.old_func)
        if ops is None:
            slot = self.m.modules.area.alloc(16)
            fops = FtraceOps(self.handler, KLP_OPS_FLAGS, private=slot)
            ops = KlpOps(func.old_func, slot, fops, [func])
            self._publish(ops)
            try:
                ft.ftrace_set_filter_ip(fops, func.old_func, False, False)
            except FtraceError as e:
                self.log(f"livepatch: failed to set ftrace filter for function '{func.old_name}' ({-e.errno})", 4)
                self.m.modules.area.free(slot)
                raise
            try:
                ft.register_ftrace_function(fops)
            except FtraceError as e:
                self.log(f"livepatch: failed to register ftrace handler for function '{func.old_name}' ({-e.errno})", 4)
                ft.ftrace_set_filter_ip(fops, func.old_func, True, False)
                self.m.modules.area.free(slot)
                raise
            self.ops[func.old_func] = ops
        else:
            ops.func_stack.insert(0, func)
            self._publish(ops)
        func.patched = True
        func.write(self.m)

    def unpatch_func(self, func: KlpFunc) -> None:
        """klp_unpatch_func: pop ``func``; the last one unregisters the ops (which waits until
        no vCPU can be inside the handler for it) and frees its slot."""
        ops = self.find_ops(func.old_func)
        if ops is None or not func.patched:
            return
        if len(ops.func_stack) == 1:
            ft = self.m.ftrace
            ft.unregister_ftrace_function(ops.fops)
            ft.ftrace_set_filter_ip(ops.fops, func.old_func, True, False)
            del self.ops[func.old_func]
            self.m.modules.area.free(ops.slot)
        else:
            ops.func_stack.remove(func)
            self._publish(ops)
        func.patched = False
        func.write(self.m)

    def patch_object(self, obj: KlpObject) -> None:
        """klp_patch_object: every func, or none (an error unpatches the ones done)."""
        try:
            for func in obj.funcs:
                self.patch_func(func)
        except FtraceError:
            self.unpatch_object(obj)
            raise
        obj.patched = True

    def unpatch_object(self, obj: KlpObject, nops_only: bool = False) -> None:
        for func in obj.funcs:
            if nops_only and not func.nop:
                continue
            self.unpatch_func(func)
        if not nops_only:
            obj.patched = False

    def previous(self, func: KlpFunc) -> KlpFunc | None:
        """The func below ``func`` on its stack (the version it replaces), None: the original."""
        ops = self.find_ops(func.old_func)
        if ops is None or func not in ops.func_stack:
            return None
        i = ops.func_stack.index(func)
        return ops.func_stack[i + 1] if i + 1 < len(ops.func_stack) else None

    def snapshot_state(self) -> dict:
        return {k: (o, list(o.func_stack)) for k, o in self.ops.items()}

    def restore_state(self, st: dict) -> None:
        self.ops = {}
        for k, (o, stack) in st.items():
            o.func_stack = list(stack)
            self.ops[k] = o
