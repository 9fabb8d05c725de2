"""``m.livepatch``: the kernel's klp (kernel/livepatch/core.c) on a machine.

A patch module's init calls the guest's ``klp_enable_patch``, which asks the host (KLP_PORT)
and waits; the host answers between two rounds of the machine, when no vCPU executes. The
host reads the patch, resolves each ``old_name`` in vmlinux or its module (kallsyms, with
``old_sympos``), adds nop funcs for atomic replace, registers one ftrace ops per function
and runs the transition. The sysfs files (/sys/kernel/livepatch) write through the same code.
"""
from __future__ import annotations

import copy
import errno
import struct
from typing import TYPE_CHECKING, Any

from unicorn.x86_const import UC_X86_REG_RDI

from emu import memlayout as L
from emu.module import MODULE_STATE_COMING, MODULE_STATE_GOING, Module, ModuleError

from ftrace import FtraceError

from . import sysfs
from .debug import KlpDebug
from .explain import explain
from .patch import KlpPatcher
from .structs import KlpFunc, KlpObject, KlpPatch, read_patch
from .transition import IDLE, PATCHED, UNPATCHED, KlpTransition, state_word

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

REQ_ENABLE, REQ_TRANSITION_WORK = 1, 2
REQ_DONE, ASK_AGAIN = 32, 2           # struct klp_request's done: 1 answered, 2 ask again
RESCHED, SIGNAL = 1, 2
_q = struct.Struct("<Q")


class KlpError(OSError):
    """A refused klp operation, with the kernel's errno."""


class Livepatch:
    """Registered patches (``klp_patches``, oldest first) and the transition."""

    def __init__(self, m: "Machine") -> None:
        self.m = m
        self.patches: list[KlpPatch] = []
        self.patcher = KlpPatcher(m, self.log)
        self.transition = KlpTransition(m, self.patcher, self.log)
        self.debug = KlpDebug(m)           # pr_debug lines, switched by dynamic debug
        m.add_port(L.KLP_PORT, self._on_request)
        m.modules.register_notifier(self._module_notifier)
        m.snapshot_participants.append(self)
        sysfs.register_root(self)

    def log(self, text: str, level: int) -> None:
        if level == 7:
            self.debug.pr_debug(text)
        else:
            self.m.printk(text, level)

    # ---- requests from the guest --------------------------------------------------------
    def _on_request(self, cpu: "VCpu", port: int, value: int) -> None:
        req = cpu.regs.read(UC_X86_REG_RDI)
        self.m.defer(lambda: self._serve(cpu, req))

    def _serve(self, cpu: "VCpu", req: int) -> None:
        if not self.m.kernel.no_spinlock_held():
            self.m.write(req + REQ_DONE, _q.pack(ASK_AGAIN))    # after another round
            return
        op, arg = struct.unpack("<QQ", self.m.read(req, 16))
        self.transition.requester = cpu
        ret, flags = 0, 0
        try:
            if op == REQ_ENABLE:
                ret = self._enable_from_guest(arg)
                flags = RESCHED if self.transition.patch is not None and ret == 0 else 0
            elif op == REQ_TRANSITION_WORK:
                flags = self._transition_work()
        finally:
            self.transition.requester = None
        if self.transition.want_signal:
            self._write_signal_list()
            flags |= SIGNAL
        self.m.write(req + 16, struct.pack("<qQQ", ret, flags, 1))

    def _write_signal_list(self) -> None:
        tasks = self.transition.want_signal[:L.NTASK + L.NCPU - 1] + [0]
        self.m.write(self.m.symbol_address("klp_signal_tasks"), b"".join(_q.pack(t) for t in tasks))
        self.transition.want_signal = []

    def _transition_work(self) -> int:
        """klp_transition_work_fn: try again; RESCHED while tasks remain."""
        done = self.try_complete_transition()
        return RESCHED if done is False else 0

    def _enable_from_guest(self, addr: int) -> int:
        try:
            self.klp_enable_patch(addr)
        except KlpError as e:
            return -e.errno
        return 0

    # ---- enabling ----------------------------------------------------------------------
    def _module_of(self, this_module: int) -> Module | None:
        return next((mod for mod in self.m.modules.modules.values() if mod.this_module == this_module), None)

    def klp_enable_patch(self, addr: int) -> KlpPatch:
        """klp_enable_patch(patch) for a patch in guest memory: checks, klp_init_patch and
        __klp_enable_patch; KlpError with the kernel's errno when refused."""
        mod_p = _q.unpack(self.m.read(addr + L.KLP_PATCH_MOD, 8))[0]
        mod = self._module_of(mod_p) if mod_p else None
        if mod is None:
            raise KlpError(errno.EINVAL, "patch without a module")
        try:
            patch = read_patch(self.m, addr, mod)
        except ValueError as e:
            raise KlpError(errno.EINVAL, str(e)) from None
        if not mod.livepatch:
            self.log(f"livepatch: module {mod.name} is not marked as a livepatch module", 3)
            raise KlpError(errno.EINVAL, f"module {mod.name} is not a livepatch module")
        if not self._is_patch_compatible(patch):
            self.log(f"livepatch: Livepatch patch ({mod.name}) is not compatible with the "
                     "already installed livepatches.", 3)
            raise KlpError(errno.EINVAL, "incompatible states")
        if self.transition.patch is not None:
            raise KlpError(errno.EBUSY, "a transition is in progress")
        self.m.modules.module_get(mod)
        try:
            self._init_patch(patch)
            self._enable(patch)
        except KlpError:
            self._free_patch(patch)
            raise
        return patch

    def _is_patch_compatible(self, patch: KlpPatch) -> bool:
        """klp_is_patch_compatible: a replacing patch must keep every state the installed
        patches set, in the same or a newer version."""
        for old in self.patches:
            for st in old.states:
                new = next((s for s in patch.states if s.id == st.id), None)
                if new is None:
                    if patch.replace:
                        return False
                elif new.version < st.version:
                    return False
        return True

    def _init_patch(self, patch: KlpPatch) -> None:
        """klp_init_patch: nops for atomic replace, symbols of loaded objects, sysfs."""
        if patch.replace:
            self._add_nops(patch)
        for obj in patch.objs:
            if obj.name is not None:
                obj.mod = self.m.modules.modules.get(obj.name)
            if self._loaded(obj):
                self._init_object_loaded(patch, obj)
        self.patches.append(patch)
        self._write_patch_list()
        sysfs.add_patch(self, patch)

    def _loaded(self, obj: KlpObject) -> bool:
        return obj.name is None or obj.mod is not None

    def _init_object_loaded(self, patch: KlpPatch, obj: KlpObject) -> None:
        obj.write_mod(self.m)
        for func in obj.funcs:
            if not func.old_func:
                func.old_func, func.old_size = self._find_symbol(obj, func)
            if func.nop:
                func.new_func, func.new_size = func.old_func, func.old_size
            else:
                s = self.m.image.containing(func.new_func)
                if s is None:
                    raise KlpError(errno.ENOENT, f"livepatch: could not find size for {func.old_name}")
                func.new_size = s.size
            func.write(self.m)

    def _find_symbol(self, obj: KlpObject, func: KlpFunc) -> tuple[int, int]:
        """klp_find_object_symbol: the ``old_sympos``-th function of that name in the object
        (0: it must be unique)."""
        found = [s for s in self._object_symbols(obj) if s[0] == func.old_name]
        where = obj.display_name
        if not found:
            self.log(f"livepatch: symbol '{func.old_name}' not found in symbol table", 3)
            raise KlpError(errno.EINVAL, f"no symbol {func.old_name}")
        pos = func.old_sympos
        if pos == 0 and len(found) > 1:
            self.log(f"livepatch: unresolvable ambiguity for symbol '{func.old_name}' in object '{where}'", 3)
            raise KlpError(errno.EINVAL, "ambiguous symbol")
        if pos > len(found):
            self.log(f"livepatch: symbol position {pos} for symbol '{func.old_name}' in object '{where}' not found", 3)
            raise KlpError(errno.EINVAL, "no such symbol position")
        _, addr, size = found[max(pos, 1) - 1]
        return addr, size

    def _object_symbols(self, obj: KlpObject) -> list[tuple[str, int, int]]:
        if obj.mod is not None:
            return sorted(((n, a, s) for n, (a, s) in obj.mod.symbols.items()), key=lambda x: x[1])
        return [(s.name, s.addr, s.size) for s in self.m.image.kernel_symbols()]

    def _add_nops(self, patch: KlpPatch) -> None:
        """klp_add_nops: a nop func for every function an older patch changes that this one
        does not, so the replace leaves it running the original."""
        for old in self.patches:
            for oobj in old.objs:
                obj = next((o for o in patch.objs if o.name == oobj.name), None)
                if obj is None:
                    obj = KlpObject(self.m.modules.area.alloc(L.KLP_OBJ_SIZE), oobj.name, (0, 0, 0, 0),
                                    dynamic=True)
                    self.m.write(obj.addr, bytes(L.KLP_OBJ_SIZE))
                    patch.objs.append(obj)
                for of in oobj.funcs:
                    if any(f.old_name == of.old_name and f.old_sympos == of.old_sympos for f in obj.funcs):
                        continue
                    addr = self.m.modules.area.alloc(L.KLP_FUNC_SIZE)
                    self.m.write(addr, bytes(L.KLP_FUNC_SIZE))
                    obj.funcs.append(KlpFunc(addr, of.old_name, 0, of.old_sympos, obj, of.old_func,
                                             of.old_size, nop=True))

    def _write_patch_list(self) -> None:
        addrs = [p.addr for p in self.patches][:L.KLP_MAX_PATCHES - 1] + [0]
        self.m.write(self.m.symbol_address("klp_patches"), b"".join(_q.pack(a) for a in addrs))

    def _call(self, fn: int, *args: int) -> int:
        """Run a patch module's callback on the vCPU whose task asked (the host's own
        requests: CPU 0). A host call runs one vCPU while the others stand still, so it
        needs a machine where no vCPU holds a spin lock: a guest request is asked again
        until then (_serve); the host's own requests run the machine to such a point."""
        cpu = self.transition.requester
        if cpu is None and not self.m.kernel.no_spinlock_held():
            self.m.run_until(self.m.kernel.no_spinlock_held, 1000)
        ret = self.m.call(fn, *args, cpu=cpu.index if cpu is not None else 0)
        return ret - (1 << 64) if ret >= 1 << 63 else ret

    def _pre_patch(self, obj: KlpObject) -> int:
        if not obj.callbacks[0]:
            ret = 0
        else:
            ret = self._call(obj.callbacks[0], obj.addr) & 0xFFFFFFFF
            ret = ret - (1 << 32) if ret >= 1 << 31 else ret
        if ret == 0:
            obj.post_unpatch_enabled = True
        return ret

    def _callback(self, obj: KlpObject, which: int) -> None:
        if which == 3:                        # post_unpatch runs only after a pre_patch
            if not obj.post_unpatch_enabled:
                return
            obj.post_unpatch_enabled = False
        if obj.callbacks[which]:
            self._call(obj.callbacks[which], obj.addr)

    def _enable(self, patch: KlpPatch) -> None:
        """__klp_enable_patch."""
        if patch.enabled:
            raise KlpError(errno.EINVAL, "already enabled")
        self.log(f"livepatch: enabling patch '{patch.name}'", 5)
        self.transition.init(patch, PATCHED)
        for obj in patch.objs:
            if not self._loaded(obj):
                continue
            ret = self._pre_patch(obj)
            if ret:
                self.log(f"livepatch: pre-patch callback failed for object '{obj.display_name}'", 4)
                self._cancel(patch)
                raise KlpError(-ret, "pre-patch callback failed")
            try:
                self.patcher.patch_object(obj)
            except FtraceError as e:
                self.log(f"livepatch: failed to patch object '{obj.display_name}'", 4)
                self._cancel(patch)
                raise KlpError(e.errno, str(e)) from None
        self.transition.start()
        patch.enabled = True
        patch.write_flags(self.m)
        self.try_complete_transition()

    def _cancel(self, patch: KlpPatch) -> None:
        """The error path of __klp_enable_patch: klp_cancel_transition goes to unpatch."""
        self.log(f"livepatch: failed to enable patch '{patch.name}'", 4)
        self.log(f"livepatch: '{patch.name}': canceling patching transition, going to unpatch", 7)
        self.transition._set_target(UNPATCHED)
        self.transition.complete()
        self._complete_transition()

    def klp_disable_patch(self, patch: KlpPatch) -> None:
        """__klp_disable_patch: start the unpatching transition (EBUSY during another)."""
        if not patch.enabled:
            raise KlpError(errno.EINVAL, "not enabled")
        if self.transition.patch is not None:
            raise KlpError(errno.EBUSY, "a transition is in progress")
        self.transition.init(patch, UNPATCHED)
        for obj in patch.objs:
            if obj.patched:
                self._callback(obj, 2)
        self.transition.start()
        patch.enabled = False
        patch.write_flags(self.m)
        if self.try_complete_transition() is False:
            self.m.call("klp_schedule_transition_work")

    def try_complete_transition(self) -> bool | None:
        """klp_try_complete_transition: True when it completed (then the patches it leaves
        unused are freed), False while tasks remain, None without a transition."""
        patch = self.transition.patch
        done = self.transition.try_complete()
        if not done:
            return done
        assert patch is not None
        self._complete_transition()
        if not patch.enabled:
            self._free_patch(patch)
        elif patch.replace:
            for old in [p for p in self.patches if p is not patch]:
                self._free_patch(old)
        return True

    def _complete_transition(self) -> None:
        """klp_complete_transition after its first line: replaced patches and nops go, funcs
        leave transition, every task IDLE, post callbacks, 'complete'."""
        tr = self.transition
        patch, target = tr.patch, tr.target
        assert patch is not None
        if patch.replace and target == PATCHED:
            for old in [p for p in self.patches if p is not patch]:
                old.enabled = False
                old.write_flags(self.m)
                for obj in old.objs:
                    self.patcher.unpatch_object(obj)
            for obj in patch.objs:
                self.patcher.unpatch_object(obj, nops_only=True)
        if target == UNPATCHED:
            for obj in patch.objs:
                self.patcher.unpatch_object(obj)
            tr.synchronize()
        for f in patch.funcs():
            f.set_transition(self.m, False)
        if target == PATCHED:
            tr.synchronize()
        tr.all_idle()
        # The post callbacks still see the patch in transition (klp_get_prev_state works).
        for obj in patch.objs:
            if self._loaded(obj):
                self._callback(obj, 1 if target == PATCHED else 3)
        self.log(f"livepatch: '{patch.name}': {state_word(target)} complete", 5)
        tr.finish()

    def _free_patch(self, patch: KlpPatch) -> None:
        """klp_free_patch: off the list and out of sysfs; the module reference goes unless
        the patch was forced (its code may still run somewhere)."""
        if patch in self.patches:
            self.patches.remove(patch)
            self._write_patch_list()
            sysfs.remove_patch(self, patch)
        if not patch.forced and patch.mod.name in self.m.modules.modules and self.m.modules.refcnt(patch.mod):
            self.m.modules.module_put(patch.mod)
        for obj in patch.objs:
            for f in obj.funcs:
                if f.nop:
                    self.m.modules.area.free(f.addr)
            if obj.dynamic:
                self.m.modules.area.free(obj.addr)

    # ---- sysfs writes ------------------------------------------------------------------
    def set_enabled(self, patch: KlpPatch, enabled: bool) -> None:
        """enabled_store: reverse a transition of this patch, or start disabling it."""
        if patch.enabled == enabled:
            raise KlpError(errno.EINVAL, "already in that state")
        if patch is self.transition.patch:
            self.transition.reverse()
        elif not enabled:
            self.klp_disable_patch(patch)
        else:
            raise KlpError(errno.EINVAL, "a disabled patch cannot be enabled again")

    def force(self, patch: KlpPatch) -> None:
        """force_store: only for the patch in transition."""
        if patch is not self.transition.patch:
            raise KlpError(errno.EINVAL, "not in transition")
        self.transition.force()
        if self.transition.target == UNPATCHED:
            patch.forced = True
        elif patch.replace:
            for p in self.patches:
                if p is not patch:
                    p.forced = True
        patch.write_flags(self.m)
        self.try_complete_transition()

    # ---- modules coming and going --------------------------------------------------------
    def _module_notifier(self, state: int, mod: Module) -> None:
        if state == MODULE_STATE_COMING:
            self._module_coming(mod)
        elif state == MODULE_STATE_GOING:
            self._module_going(mod)

    def _module_coming(self, mod: Module) -> None:
        """klp_module_coming: patch the module's objects of every registered patch; a
        failure reverts the ones done and refuses the module (ModuleError)."""
        for patch in self.patches:
            obj = next((o for o in patch.objs if o.name == mod.name), None)
            if obj is None:
                continue
            obj.mod = mod
            self._init_object_loaded(patch, obj)
            self.log(f"livepatch: applying patch '{patch.name}' to loading module '{mod.name}'", 5)
            ret = self._pre_patch(obj)
            if ret:
                self.log(f"livepatch: pre-patch callback failed for object '{obj.name}'", 4)
            else:
                try:
                    self.patcher.patch_object(obj)
                except FtraceError as e:
                    self.log(f"livepatch: failed to apply patch '{patch.name}' to module "
                             f"'{mod.name}' ({-e.errno})", 4)
                    ret = -e.errno
            if ret:
                self.log(f"livepatch: patch '{patch.name}' failed for module '{mod.name}', "
                         f"refusing to load module '{mod.name}'", 4)
                obj.mod = None
                obj.write_mod(self.m)
                self._cleanup_module_patches(mod, limit=patch)
                raise ModuleError(-ret, f"livepatch refused module {mod.name}")
            if patch is not self.transition.patch:
                self._callback(obj, 1)

    def _module_going(self, mod: Module) -> None:
        """klp_module_going."""
        self._cleanup_module_patches(mod)

    def _cleanup_module_patches(self, mod: Module, limit: KlpPatch | None = None) -> None:
        """klp_cleanup_module_patches_limited: revert the module's objects of the patches
        registered before ``limit`` (all of them without one)."""
        for patch in self.patches:
            if patch is limit:
                break
            obj = next((o for o in patch.objs if o.name == mod.name and o.mod is not None), None)
            if obj is None:
                continue
            if patch is not self.transition.patch:
                self._callback(obj, 2)
            self.log(f"livepatch: reverting patch '{patch.name}' on unloading module '{mod.name}'", 5)
            self.patcher.unpatch_object(obj)
            self._callback(obj, 3)
            obj.mod = None
            obj.write_mod(self.m)

    # ---- views ---------------------------------------------------------------------------
    def patch_named(self, name: str) -> KlpPatch | None:
        return next((p for p in self.patches if p.name == name), None)

    def explain(self) -> str:
        """Why the transition in progress has not completed: each task not yet switched,
        where it sleeps and which function holds it."""
        return explain(self)

    # ---- snapshots -----------------------------------------------------------------------
    def _shared(self) -> list:
        """Objects other layers own (modules, ftrace ops): shared by snapshots, not copied."""
        return list(self.m.modules.modules.values()) + [o.fops for o in self.patcher.ops.values()]

    def snapshot_state(self) -> Any:
        shared = self._shared()
        memo = {id(o): o for o in shared}
        return shared, copy.deepcopy((self.patches, self.patcher.ops, self.transition.snapshot_state()), memo)

    def restore_state(self, st: Any) -> None:
        for patch in self.patches:
            sysfs.remove_patch(self, patch)
        shared, state = st
        self.patches, self.patcher.ops, tr = copy.deepcopy(state, {id(o): o for o in shared})
        self.transition.restore_state(tr)
        for patch in self.patches:
            sysfs.add_patch(self, patch)


def attach(machine: "Machine", options: dict[str, Any]) -> Livepatch | None:
    """The ``ftemu.extensions`` entry point (after ftrace, by name order); None for a kernel
    built without klp (no ``klp_ftrace_handler``, e.g. the tests' tiny guest)."""
    if not machine.image.has_symbol("klp_ftrace_handler"):
        return None
    return Livepatch(machine)
