"""x86-64 ftrace on the emulated machine: the FtraceArch the generic core calls
(the kernel's arch/x86/kernel/ftrace.c), plus the host end of Python callbacks.

The shared code (ftrace_caller, ftrace_regs_caller, the list and assist functions) and each
ops' private trampoline are guest code in the machine's execmem area. Each registered ops has
a guest copy (func, flags, private, list link, sorted filter and notrace arrays) that the
guest code reads; a Python callback is reached through a small guest stub that makes one
``out`` hypercall, after which the host reads the arguments and the pt_regs frame with one
read each and writes back only the fields the callback changed.
"""
from __future__ import annotations

import copy
import errno
import struct
from typing import TYPE_CHECKING, Callable

from emu import BudgetExceeded, EmuError, memlayout as L
from emu.cpu import RUNNING, STOPPED
from emu.paging import PageFault

from ...errors import FtracePatchError
from ...flags import FtraceOpsFlags as FL
from ...ops import FtraceOps, ftrace_ops_get_func
from ...recursion import RecursionRecorder
from .asm import CodeBuilder
from .ftrace_64 import (HCALL_CALLBACK_PORT, HCALL_RECURSION_PORT, MAILBOX_SIZE, OPS_SIZE,
                        emit_caller, emit_helpers, instantiate_trampoline, python_stub)
from .insn import MCOUNT_INSN_SIZE, X86_NOP5, call_insn, site_insn
from .ptregs import FRAME_SIZE, PT_REGS_OFFSET, PtRegs
from .text_poke import TextPoker

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

    from ...core import Ftrace

SHARED_CODE_SIZE = 0x1000
TRAMP_SIZE = 0x200
_q = struct.Struct("<Q")
_args = struct.Struct("<4Q")
_FREGS_WHAT = "ftrace callback: pt_regs pointer in the mailbox"
_CS_OFFSET = PT_REGS_OFFSET["cs"]


class GuestOps:
    """Where one ops lives in the guest: its copy, its Python stub, its hash arrays."""

    __slots__ = ("ops_id", "copy", "stub", "arrays", "hashes")

    def __init__(self, ops_id: int, copy: int, stub: int) -> None:
        self.ops_id, self.copy, self.stub = ops_id, copy, stub
        self.arrays: list[int] = []
        self.hashes: tuple[frozenset[int], frozenset[int]] | None = None


class X86Ftrace:
    """FtraceArch for the emulated x86-64 machine (see ftrace/arch_api.py)."""

    def __init__(self, machine: "Machine", supports_regs: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.machine = machine
        self.supports_regs = supports_regs
        self.log = log
        self.core: "Ftrace | None" = None
        self.poker = TextPoker(machine)
        self.recursion = RecursionRecorder()
        self.callback_errors: list[tuple[FtraceOps, BaseException]] = []
        self.current_cpu: "VCpu | None" = None
        self.symbols: dict[int, tuple[str, int]] = {}
        self._guest: dict[int, GuestOps] = {}            # id(ops) -> where it lives
        self._by_ops_id: dict[int, FtraceOps] = {}
        self._dead: set[int] = set()
        self._next_id = 1
        self._to_free: list[int] = []
        self._tramp_call: dict[int, int] = {}
        self._callbacks: dict[int, tuple[FtraceOps, bool]] = {}   # ops id -> (ops, wants regs)
        self._synced = False           # did the last synchronize_rcu_tasks complete?
        self._kernel_pa = machine.walker.kernel_pa
        self.fentry = machine.symbol_address("__fentry__") if machine.image.has_symbol("__fentry__") else 0
        self._build_shared_code()
        machine.add_port(HCALL_CALLBACK_PORT, self._on_callback)
        machine.add_port(HCALL_RECURSION_PORT, self._on_recursion)

    # ---- guest code ----------------------------------------------------------
    def _build_shared_code(self) -> None:
        m = self.machine
        # A data page of its own: the guest writes the mailboxes on every Python callback.
        self.data = m.execmem.alloc(4096, align=4096)
        self.function_trace_op, self.ftrace_ops_list_head = self.data, self.data + 8
        self.mailboxes = self.data + 0x100
        self.mailbox_pa = self.mailboxes - L.EXECMEM_VA + L.EXECMEM_PA
        base = m.execmem.alloc(SHARED_CODE_SIZE)
        b = CodeBuilder(base)
        emit_helpers(b, self.ftrace_ops_list_head)
        stub = b.labels["ftrace_stub"]
        load_op = f"mov rdx, {self.function_trace_op}\nmov rdx, qword ptr [rdx]"
        emit_caller(b, "ftrace_caller", False, load_op, stub)
        if self.supports_regs:
            emit_caller(b, "ftrace_regs_caller", True, load_op, stub)
        if len(b.code) > SHARED_CODE_SIZE:
            raise RuntimeError("ftrace shared code outgrew its block")
        self._write(base, bytes(b.code) + bytes(SHARED_CODE_SIZE - len(b.code)))
        self._write(self.data, bytes(4096))
        lab = b.labels
        self.ftrace_stub = lab["ftrace_stub"]
        self.ftrace_ops_list_func = lab["ftrace_ops_list_func"]
        self.ftrace_ops_assist_func = lab["ftrace_ops_assist_func"]
        self.ftrace_caller = lab["ftrace_caller"]
        self.ftrace_regs_caller = lab.get("ftrace_regs_caller", 0)
        self.ftrace_call = lab["ftrace_caller_call"]
        self.ftrace_regs_call = lab.get("ftrace_regs_caller_call", 0)
        self.code_ranges = [(base, base + SHARED_CODE_SIZE)]
        names = sorted(lab.items(), key=lambda kv: kv[1])
        for (name, addr), nxt in zip(names, [a for _, a in names[1:]] + [base + len(b.code)]):
            if not name.endswith(("_call", "_end")):
                self.symbols[addr] = (name, max(nxt - addr, 1))

    def _write(self, va: int, data: bytes) -> None:
        pa = va - L.EXECMEM_VA + L.EXECMEM_PA
        self.machine.ram[pa:pa + len(data)] = data
        self.machine.invalidate_code(va, len(data))

    def _read(self, va: int, n: int) -> bytes:
        return self.machine.read(va, n)

    # ---- snapshots ----------------------------------------------------------------
    _STATE = ("symbols", "_guest", "_by_ops_id", "_dead", "_next_id", "_to_free", "code_ranges",
              "_tramp_call", "callback_errors", "recursion", "_callbacks")

    def known_ops(self) -> list[FtraceOps]:
        """Every ops that has a guest copy now."""
        return list(self._by_ops_id.values())

    def snapshot_state(self) -> tuple:
        ops = self.known_ops()
        return self._copy_state(ops), ops

    def restore_state(self, st: tuple) -> None:
        fields, ops = st
        self.__dict__.update(self._copy_state(ops, fields))

    def _copy_state(self, ops: list[FtraceOps], src: dict | None = None) -> dict:
        """A deep copy of the host state (ops objects themselves are shared, not copied)."""
        memo = {id(o): o for o in ops}
        src = src if src is not None else {f: getattr(self, f) for f in self._STATE}
        return copy.deepcopy(src, memo)

    # ---- FtraceArch: symbols and identity --------------------------------------
    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        for start, (name, size) in self.symbols.items():
            if start <= addr < start + size:
                return name, addr - start, size
        s = self.machine.image.containing(addr)
        return None if s is None else (s.name, addr - s.addr, s.size)

    def is_kernel_core_data(self, ops: FtraceOps) -> bool:
        """Every ops comes from Python, so none lives in kernel core data: all are DYNAMIC."""
        return False

    # ---- FtraceArch: boot ----------------------------------------------------
    def ftrace_make_nop_init(self, rec) -> None:
        """Verify ``call __fentry__`` at the site and write the NOP directly."""
        expected = call_insn(rec.ip, self.fentry)
        try:
            actual = self._read(rec.ip, MCOUNT_INSN_SIZE)
        except EmuError:
            raise FtracePatchError(errno.EFAULT, "cannot read call site", rec) from None
        if actual != expected:
            raise FtracePatchError(errno.EINVAL, "call site mismatch", rec, actual, expected)
        self.poker.text_poke_early(rec.ip, X86_NOP5)

    # ---- FtraceArch: ops in the guest -----------------------------------------
    def _guest_ops(self, ops: FtraceOps) -> GuestOps:
        g = self._guest.get(id(ops))
        if g is None:
            ops_id = self._next_id
            self._next_id += 1
            copy = self.machine.execmem.alloc(OPS_SIZE)
            stub, code = self.machine.execmem.alloc(64), python_stub(ops_id, self.mailboxes)
            self._write(stub, code)
            self.symbols[stub] = ("ftrace_ops_stub", len(code))
            g = self._guest[id(ops)] = GuestOps(ops_id, copy, stub)
            self._by_ops_id[ops_id] = ops
            self.code_ranges.append((stub, stub + 64))
        return g

    def _ops_target(self, ops: FtraceOps) -> int:
        """ftrace_ops_get_func(ops) as a guest address."""
        f = ftrace_ops_get_func(ops, self.ftrace_ops_assist_func)
        return f if isinstance(f, int) else self._guest_ops(ops).stub

    def sync_guest_ops(self) -> None:
        """Publish every registered ops (flags, func, private, hashes, list order) to the guest.
        Host writes happen between guest instructions, so each publish is atomic for vCPUs."""
        assert self.core is not None
        ordered = self.core.ops_list
        for i, ops in enumerate(ordered):
            g = self._guest_ops(ops)
            func = ops.func if isinstance(ops.func, int) else g.stub
            private = ops.private if isinstance(ops.private, int) else 0
            nxt = self._guest_ops(ordered[i + 1]).copy if i + 1 < len(ordered) else 0
            hashes = (ops.filter_hash, ops.notrace_hash)
            if g.hashes != hashes:
                self._to_free += g.arrays
                g.arrays = [self._array(h) for h in hashes]
                g.hashes = hashes
            if g.ops_id not in self._dead:
                self._callbacks[g.ops_id] = (ops, bool(ops.flags & FL.SAVE_REGS))
            fields = struct.pack("<8Q", func, int(ops.flags), private & 0xFFFFFFFFFFFFFFFF, nxt,
                                 g.arrays[0], len(hashes[0]), g.arrays[1], len(hashes[1]))
            self._write(g.copy, fields + _q.pack(g.ops_id))
        head = self._guest_ops(ordered[0]).copy if ordered else 0
        self._write(self.ftrace_ops_list_head, _q.pack(head))

    def ftrace_ops_publish_hashes(self, ops: FtraceOps) -> None:
        """The list function reads hashes from the guest copies: publish them now."""
        self.sync_guest_ops()

    def _array(self, ips: frozenset[int]) -> int:
        if not ips:
            return 0
        va = self.machine.execmem.alloc(8 * len(ips))
        self._write(va, b"".join(_q.pack(ip) for ip in sorted(ips)))
        return va

    # ---- FtraceArch: trampolines ---------------------------------------------
    def arch_ftrace_update_trampoline(self, ops: FtraceOps) -> None:
        """Give ``ops`` a private trampoline (a copy of ftrace_caller or ftrace_regs_caller that
        loads this ops and calls its function directly), or re-point the one it has."""
        g = self._guest_ops(ops)
        self.sync_guest_ops()
        target = self._ops_target(ops)
        if ops.trampoline:
            call_site = ops.trampoline + self._tramp_call_offset(ops)
            if self._read(call_site, MCOUNT_INSN_SIZE) != call_insn(call_site, target):
                self.poker.text_poke_bp(call_site, call_insn(call_site, target))
            return
        regs = bool(ops.flags & FL.SAVE_REGS) and self.supports_regs
        base = self.machine.execmem.alloc(TRAMP_SIZE)
        code, call_off = instantiate_trampoline(regs, base, g.copy, target)
        self._write(base, code)
        ops.trampoline, ops.trampoline_size = base, len(code)
        ops.flags |= FL.ALLOC_TRAMP
        self.symbols[base] = ("ftrace_trampoline", ops.trampoline_size)
        self.code_ranges.append((base, base + TRAMP_SIZE))
        self._tramp_call[base] = call_off

    def _tramp_call_offset(self, ops: FtraceOps) -> int:
        return self._tramp_call[ops.trampoline]

    def arch_ftrace_trampoline_free(self, ops: FtraceOps) -> None:
        """Free the private trampoline, the guest copy and stub (after synchronize_rcu_tasks;
        if that could not confirm every task left them, their memory is kept instead)."""
        free = self.machine.execmem.free if self._synced else (lambda va: None)
        if ops.trampoline and ops.flags & FL.ALLOC_TRAMP:
            self.symbols.pop(ops.trampoline, None)
            self.code_ranges.remove((ops.trampoline, ops.trampoline + TRAMP_SIZE))
            free(ops.trampoline)
        ops.trampoline = ops.trampoline_size = 0
        ops.flags &= ~FL.ALLOC_TRAMP
        g = self._guest.pop(id(ops), None)
        if g is not None:
            self._dead.add(g.ops_id)
            self._callbacks.pop(g.ops_id, None)
            self._by_ops_id.pop(g.ops_id, None)
            self.symbols.pop(g.stub, None)
            self.code_ranges.remove((g.stub, g.stub + 64))
            for va in (g.copy, g.stub, *g.arrays, *self._to_free):
                if va:
                    free(va)
            self._to_free = []

    # ---- FtraceArch: code updates ---------------------------------------------
    def ftrace_update_ftrace_func(self, func) -> None:
        """Point ftrace_call and ftrace_regs_call at ``func`` (an address, or an ops whose
        function becomes the target after function_trace_op is set to it)."""
        self.sync_guest_ops()
        if isinstance(func, FtraceOps):
            self._write(self.function_trace_op, _q.pack(self._guest_ops(func).copy))
            target = self._ops_target(func)
        else:
            target = func
        batch = {site: call_insn(site, target) for site in (self.ftrace_call, self.ftrace_regs_call)
                 if site and self._read(site, MCOUNT_INSN_SIZE) != call_insn(site, target)}
        self.poker.text_poke_bp_batch(batch)            # both calls in one int3 round

    def ftrace_replace_code(self, plan) -> None:
        """Verify every site first, then write them all as one int3 batch."""
        self.sync_guest_ops()
        batch = {}
        ram, text_pa = self.machine.ram, self.machine.text_pa
        for rec, _action, old, new in plan:
            expected = site_insn(rec.ip, old)
            try:
                pa = text_pa(rec.ip)
                actual = bytes(ram[pa:pa + MCOUNT_INSN_SIZE])
            except EmuError:
                raise FtracePatchError(errno.EFAULT, "cannot read call site", rec) from None
            if actual != expected:
                raise FtracePatchError(errno.EINVAL, "call site mismatch", rec, actual, expected)
            batch[rec.ip] = site_insn(rec.ip, new)
        self.poker.text_poke_bp_batch(batch)

    def synchronize_rcu_tasks(self, budget_ms: float = 200) -> None:
        """The rcu_tasks wait: return once no task can still be inside ftrace code (a
        trampoline, a stub, the list or assist function, or a callback they called).

        Holdouts are the tasks running on a CPU that may be inside, and the runnable tasks
        waiting for a CPU (they may have been preempted inside); blocked tasks slept
        voluntarily, which a callback never does. A holdout is released when it blocks, or is
        seen running outside ftrace code; after the text change it can only come back through
        the new text. The machine runs meanwhile. If ``budget_ms`` passes first, the code is
        kept rather than freed (``arch_ftrace_trampoline_free`` then leaks it)."""
        self._synced = False
        if self.machine.in_guest():
            return          # called from a callback: the caller's own frame is inside
        kernel, cpus = self.machine.kernel, self.machine.cpus
        sites = {r.ip + MCOUNT_INSN_SIZE for r in self.core.records} if self.core else set()

        def running() -> dict[int, "VCpu"]:
            return {kernel.current(c.index): c for c in cpus if c.state != STOPPED}

        now = running()
        holdouts = {t for t, c in now.items() if self._cpu_inside(c, sites)}
        holdouts |= {t for t in kernel.tasks() if t not in now and kernel.on_rq(t)}

        def quiescent() -> bool:
            now = running()
            holdouts.difference_update([t for t in holdouts if (
                not self._cpu_inside(now[t], sites) if t in now else not kernel.on_rq(t))])
            return not holdouts
        if not quiescent():
            try:
                self.machine.run_until(quiescent, budget_ms)
            except BudgetExceeded:
                self.log(f"ftrace: tasks still inside ftrace code after {budget_ms:g} ms: "
                         "keeping the old trampolines")
                return
        self._synced = True

    def _cpu_inside(self, cpu: "VCpu", sites: set[int]) -> bool:
        """Might the task running on ``cpu`` return into ftrace code? Yes while it serves an
        interrupt (it may have interrupted a trampoline); else if its RIP, a return address on
        its frame-pointer chain (ftrace code, or just after a call site: a trampoline's frame),
        or a word of its innermost frame (a leaf callback's return address) says so."""
        if cpu.state != RUNNING or cpu.cpl() == 3:
            return False
        if self.machine.kernel.preempt_count(cpu.index) & (L.NMI_MASK | L.HARDIRQ_MASK | L.SOFTIRQ_OFFSET):
            return True
        from unicorn.x86_const import UC_X86_REG_RBP
        rip, rsp, rbp = cpu.rip(), cpu.stack_pointer(), cpu.regs.read(UC_X86_REG_RBP)
        returns = self.machine.return_addresses(cpu, rbp)
        if any(r in sites for r in returns):
            return True
        words = [rip, *returns]
        if rsp < rbp <= rsp + 512:
            try:
                raw = self.machine.read(rsp, rbp + 16 - rsp)
                words += struct.unpack(f"<{len(raw) // 8}Q", raw)
            except EmuError:
                pass
        return any(self._in_code(w) for w in words)

    def _in_code(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.code_ranges)

    # ---- hypercalls ------------------------------------------------------------
    def _on_callback(self, cpu: "VCpu", port: int, ops_id: int) -> None:
        entry = self._callbacks.get(ops_id)
        if entry is None:
            return
        ops, wants_regs = entry
        ip, parent_ip, _op, fregs = _args.unpack_from(self.machine.ram, self.mailbox_pa + MAILBOX_SIZE * cpu.index)
        regs = self._pt_regs(cpu, fregs) if wants_regs and fregs else None
        outer, self.current_cpu = self.current_cpu, cpu
        try:
            ops.saved_func(ip, parent_ip, ops, regs)
        except Exception as e:       # the guest must not suffer: retire the ops cleanly
            self._retire(ops, ops_id, e)
            return
        finally:
            self.current_cpu = outer
        if regs is not None and regs.dirty:
            for addr, data in regs.changes():
                self.machine.walker.write(cpu.cr3(), addr, data)

    def _pt_regs(self, cpu: "VCpu", fregs: int) -> PtRegs | None:
        """The trampoline's frame as a PtRegs, or None for a frame without full regs."""
        if (fregs & 0xFFF) + FRAME_SIZE <= 0x1000:
            try:
                pa = self._kernel_pa(fregs, cpu.cr3)
            except PageFault:
                raise cpu.bad_address(fregs, _FREGS_WHAT) from None
            raw = self.machine.ram[pa:pa + FRAME_SIZE]
        else:
            raw = cpu.read_virt(fregs, FRAME_SIZE, _FREGS_WHAT)
        if not _q.unpack_from(raw, _CS_OFFSET)[0]:
            return None
        return PtRegs(raw, fregs)

    def _retire(self, ops: FtraceOps, ops_id: int, e: Exception) -> None:
        self.callback_errors.append((ops, e))
        name = getattr(ops.saved_func, "__qualname__", repr(ops.saved_func))
        self.log(f"ftrace: callback {name} raised {type(e).__name__}: {e}; ops unregistered")
        self._dead.add(ops_id)
        self._callbacks.pop(ops_id, None)

        def unregister() -> None:
            if ops.flags & FL.ENABLED and self.core is not None:
                self.core.unregister_ftrace_function(ops)
        self.machine.defer(unregister)

    def _on_recursion(self, cpu: "VCpu", port: int, value: int) -> None:
        ip, parent_ip = struct.unpack("<QQ", self.machine.walker.read(cpu.cr3(), cpu.stack_pointer(), 16))
        self.recursion.ftrace_record_recursion(ip, parent_ip)
