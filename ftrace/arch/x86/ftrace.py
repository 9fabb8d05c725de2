"""x86-64 ftrace on the emulated machine: the FtraceArch the generic core calls
(the kernel's arch/x86/kernel/ftrace.c), plus the host end of Python callbacks.

The shared code (ftrace_caller, ftrace_regs_caller, the list and assist functions) and each
ops' private trampoline are guest code in the machine's execmem area. Each registered ops has
a guest copy (func, flags, private, list link, func_hash pointer) that the guest code reads;
a Python callback is reached through a small guest stub that makes one ``out`` hypercall,
after which the host reads the arguments from the CPU's mailbox with one unpack and hands the
callback a lazy view of the pt_regs frame (ptregs.py): fields read and written in place.

Lifetime (as RCU): what the guest reads is published whole by one aligned 8-byte store (the
list head or a NEXT link, an ops' HASH pointer, function_trace_op); a block is never written
once published. Unlinking comes first, then the rcu_tasks wait, then freeing; replaced
func_hash blocks go through call_rcu (rcu_tasks.py).
"""
from __future__ import annotations

import contextlib
import copy
import errno
import struct
from sys import getrefcount
from typing import TYPE_CHECKING, Callable, Iterator

from emu import CallbackError, EmuError, memlayout as L
from emu.paging import PageFault

from ... import views
from ...errors import FtraceError, FtracePatchError
from ...flags import FtraceOpsFlags as FL
from ...ops import FtraceOps, ftrace_ops_get_func
from ...recursion import RecursionRecorder
from .asm import CodeBuilder
from .ftrace_64 import (HCALL_CALLBACK_PORT, HCALL_RECURSION_PORT, HASH_HEADER, MAILBOX_SHIFT,
                        OPS_HASH, OPS_NEXT, OPS_SIZE, Frame, emit_caller, emit_helpers,
                        instantiate_trampoline, python_stub,
                        trampoline_template)
from .insn import MCOUNT_INSN_SIZE, X86_NOP5, call_insn, site_insn
from .ptregs import FRAME_SIZE, FtraceRegs, PtRegs
from .rcu_tasks import RcuTasks, site_returns
from .text_poke import TextPoker

if TYPE_CHECKING:
    from emu import Machine
    from emu.cpu import VCpu

    from ...core import Ftrace

SHARED_CODE_SIZE = 0x1000
TRAMP_SIZE = 0x200
STUB_SIZE = 64
_q = struct.Struct("<Q")
_args = struct.Struct("<4Q")
_FREGS_WHAT = "ftrace callback: pt_regs pointer in the mailbox"


class GuestOps:
    """Where one registered ops lives in the guest: its copy, Python stub (0 for a guest
    callback), private trampoline and published func_hash block (0: trace everything)."""

    __slots__ = ("ops_id", "copy", "stub", "tramp", "hash_block")

    def __init__(self, ops_id: int, copy: int, stub: int, tramp: int, hash_block: int) -> None:
        self.ops_id, self.copy, self.stub, self.tramp = ops_id, copy, stub, tramp
        self.hash_block = hash_block

    def blocks(self) -> list[int]:
        return [va for va in (self.copy, self.stub, self.tramp, self.hash_block) if va]


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
        self.current_cpu: "VCpu | None" = None
        self.symbols: dict[int, tuple[str, int]] = {}
        self._guest: dict[int, GuestOps] = {}            # id(ops) -> where it lives
        self._by_ops_id: dict[int, FtraceOps] = {}
        self._next_id = 1
        self._tramp_call: dict[int, int] = {}
        self._callbacks: dict[int, tuple[FtraceOps, Frame]] = {}  # ops id -> (ops, its frame)
        self._spare_views: dict["VCpu", PtRegs] = {}     # per CPU: a pt_regs view to re-point
        self._kernel_pa = machine.walker.kernel_pa
        self._kernel_pages = machine.walker.kernel_pages
        self._ram = machine.ram
        self.fentry = machine.symbol_address("__fentry__") if machine.image.has_symbol("__fentry__") else 0
        text = machine.image.sections.get(".text")
        self._text = (text[0], text[0] + len(text[1])) if text else (0, 0)
        self._build_shared_code()
        self.rcu = RcuTasks(machine, self._in_code, self._site_returns, self._free_block, log)
        machine.add_port(HCALL_CALLBACK_PORT, self._on_callback)
        machine.add_port(HCALL_RECURSION_PORT, self._on_recursion)

    def _site_returns(self) -> set[int]:
        return site_returns(self.core.records) if self.core else set()

    # ---- guest code ----------------------------------------------------------
    def _build_shared_code(self) -> None:
        m = self.machine
        # A data page of its own, NX: the guest writes the mailboxes on every Python callback.
        self.data = m.execmem.alloc(4096, align=4096, executable=False)
        self.function_trace_op, self.ftrace_ops_list_head = self.data, self.data + 8
        self.mailboxes = self.data + 0x100
        self.mailbox_pa = self.mailboxes - L.EXECMEM_VA + L.EXECMEM_PA
        base = m.execmem.alloc(SHARED_CODE_SIZE)
        b = CodeBuilder(base)
        emit_helpers(b, self.ftrace_ops_list_head)
        stub = b.labels["ftrace_stub"]
        load_op = f"mov rdx, {self.function_trace_op}\nmov rdx, qword ptr [rdx]"
        emit_caller(b, "ftrace_caller", Frame.ARGS, load_op, stub)
        if self.supports_regs:
            emit_caller(b, "ftrace_regs_caller", Frame.REGS, load_op, stub)
        if len(b.code) > SHARED_CODE_SIZE:
            raise RuntimeError("ftrace shared code outgrew its block")
        self._write(base, bytes(b.code) + bytes(SHARED_CODE_SIZE - len(b.code)))
        self._write_data(self.data, bytes(4096))
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
        """Write code: vCPUs drop their translations of it."""
        self._write_data(va, data)
        self.machine.invalidate_code(va, len(data))

    def _write_data(self, va: int, data: bytes) -> None:
        """Write what the guest reads but never runs (copies, links, hash blocks): a block
        that once held code is rewritten as code before it runs again, so no translation
        needs dropping."""
        pa = va - L.EXECMEM_VA + L.EXECMEM_PA
        self.machine.ram[pa:pa + len(data)] = data

    def _read(self, va: int, n: int) -> bytes:
        return self.machine.read(va, n)

    # ---- snapshots ----------------------------------------------------------------
    _STATE = ("symbols", "_guest", "_by_ops_id", "_next_id", "code_ranges", "_tramp_call",
              "recursion", "_callbacks")

    def known_ops(self) -> list[FtraceOps]:
        """Every ops that has a guest copy now."""
        return list(self._by_ops_id.values())

    def snapshot_state(self) -> tuple:
        ops = self.known_ops()
        return self._copy_state(ops), ops, self.rcu.state()

    def restore_state(self, st: tuple) -> None:
        fields, ops, rcu = st
        self.__dict__.update(self._copy_state(ops, fields))
        self.rcu.set_state(rcu)

    def _copy_state(self, ops: list[FtraceOps], src: dict | None = None) -> dict:
        """A deep copy of the host state (ops objects themselves are shared, not copied)."""
        memo = {id(o): o for o in ops}
        src = src if src is not None else {f: getattr(self, f) for f in self._STATE}
        return copy.deepcopy(src, memo)

    # ---- the ftrace_lock side of the machine ------------------------------------------
    def in_callback(self) -> bool:
        """Is the host inside a callback (some vCPU in the middle of an instruction)?"""
        return self.machine.in_guest()

    @contextlib.contextmanager
    def ftrace_lock(self) -> Iterator[None]:
        """Held around every mutating API call: deferred work waits, and on the way out
        the call_rcu queue is polled."""
        with self.machine.hold_deferred():
            yield
        self.rcu.poll()

    # ---- FtraceArch: symbols and identity --------------------------------------
    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        in_execmem = L.EXECMEM_VA <= addr < L.EXECMEM_VA + L.EXECMEM_SIZE
        for start, (name, size) in self.symbols.items() if in_execmem else ():
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
    def _alloc(self, sizes: list[tuple[int, bool]]) -> list[int]:
        """Blocks of (size, executable) (code, or NX data), all or none: when the area is full,
        wait for a grace period to free what call_rcu holds and try once more; then ENOMEM."""
        for attempt in (0, 1):
            got: list[int] = []
            try:
                for size, code in sizes:
                    got.append(self.machine.execmem.alloc(size, executable=code))
                return got
            except MemoryError:
                for va in got:
                    self.machine.execmem.free(va)
                if attempt or not self.rcu.queue or not self.rcu.synchronize():
                    break
        raise FtraceError(errno.ENOMEM, "ftrace: the code area (execmem) is full")

    def _check_guest_func(self, ops: FtraceOps, tramp: int) -> None:
        """A guest callback must be code the trampoline's rel32 call can reach: kernel text,
        module text, or a block of the code area."""
        f = ops.func
        if not isinstance(f, int):
            return
        in_text = self._text[0] <= f < self._text[1]
        in_modules = L.MODULES_VA <= f < L.MODULES_VA + L.MODULES_SIZE
        in_execmem = any(va <= f < va + n for va, n in self.machine.execmem.used.items()) \
            and self.machine.execmem.executable(f)
        if not (in_text or in_modules or in_execmem):
            raise FtraceError(errno.EINVAL, f"guest callback {f:#x} is neither kernel or "
                              "module text nor in the code area")
        if self._ops_target(ops) == f:
            rel = f - (tramp + self._tramp_template_call(ops) + MCOUNT_INSN_SIZE)
            if not -(1 << 31) <= rel < 1 << 31:
                raise FtraceError(errno.EINVAL, f"guest callback {f:#x} is out of reach of "
                                  "the trampoline's call")

    def _tramp_template_call(self, ops: FtraceOps) -> int:
        return trampoline_template(self._tramp_frame(ops))[2]

    def _tramp_frame(self, ops: FtraceOps) -> Frame:
        """The frame an ops' private trampoline builds: full regs for SAVE_REGS, the
        ftrace_regs of ftrace_caller for an IPMODIFY ops without it (WITH_ARGS: livepatch's
        ops), none otherwise (ftrace_64's docstring)."""
        if ops.flags & FL.SAVE_REGS and self.supports_regs:
            return Frame.REGS
        return Frame.ARGS if ops.flags & FL.IPMODIFY else Frame.NONE

    def ftrace_ops_alloc(self, ops: FtraceOps) -> None:
        """Build everything a registration needs in the guest (copy, stub, trampoline,
        func_hash block), unreachable until ``ftrace_ops_list_add``: ENOMEM or EINVAL
        (unusable guest callback) with nothing allocated."""
        python = not isinstance(ops.func, int)
        hashes = (ops.filter_hash, ops.notrace_hash)
        sizes = [(OPS_SIZE, False), (TRAMP_SIZE, True)] + ([(STUB_SIZE, True)] if python else []) + (
            [(_hash_size(*hashes), False)] if any(hashes) else [])
        blocks = self._alloc(sizes)
        copy_va, tramp = blocks[0], blocks[1]
        try:
            self._check_guest_func(ops, tramp)
        except FtraceError:
            for va in blocks:
                self.machine.execmem.free(va)
            raise
        stub = blocks[2] if python else 0
        hash_block = blocks[-1] if any(hashes) else 0
        ops_id = self._next_id
        self._next_id += 1
        g = self._guest[id(ops)] = GuestOps(ops_id, copy_va, stub, tramp, hash_block)
        self._by_ops_id[ops_id] = ops
        if hash_block:
            self._write_data(hash_block, _hash_bytes(*hashes))
        if stub:
            code = python_stub(ops_id, self.mailboxes)
            self._write(stub, code + bytes(STUB_SIZE - len(code)))
            self.symbols[stub] = ("ftrace_ops_stub", len(code))
            self.code_ranges.append((stub, stub + STUB_SIZE))
        private = ops.private if isinstance(ops.private, int) else 0
        func = ops.func if not python else stub
        self._write_data(copy_va, struct.pack("<6Q", func, int(ops.flags),
                                              private & 0xFFFFFFFFFFFFFFFF, 0, hash_block, ops_id))

    def ftrace_ops_free_unpublished(self, ops: FtraceOps) -> None:
        """Undo ``ftrace_ops_alloc`` for an ops that never reached the guest list."""
        g = self._guest.pop(id(ops))
        self._by_ops_id.pop(g.ops_id, None)
        for va in g.blocks():
            self._free_block(va)

    def ftrace_ops_list_add(self, ops: FtraceOps) -> None:
        """add_ftrace_ops: link the copy to the current head, then publish it as the head."""
        g = self._guest[id(ops)]
        head = self._read_u64(self.ftrace_ops_list_head)
        self._write_data(g.copy + OPS_NEXT, _q.pack(head))
        self._write_data(self.ftrace_ops_list_head, _q.pack(g.copy))
        self._callbacks[g.ops_id] = (ops, self._tramp_frame(ops))

    def ftrace_ops_list_del(self, ops: FtraceOps) -> None:
        """remove_ftrace_ops (list_del_rcu): one store makes the predecessor (or the head)
        skip the copy; the copy keeps its NEXT, so a vCPU standing on it walks on."""
        assert self.core is not None
        g = self._guest[id(ops)]
        i = self.core.ops_list.index(ops)
        link = (self._guest[id(self.core.ops_list[i - 1])].copy + OPS_NEXT if i
                else self.ftrace_ops_list_head)
        self._write_data(link, _q.pack(self._read_u64(g.copy + OPS_NEXT)))

    def ftrace_hash_alloc(self, filter_hash: frozenset[int], notrace_hash: frozenset[int]) -> int:
        """A func_hash block for the two hashes, not yet published (0 when both are empty)."""
        if not filter_hash and not notrace_hash:
            return 0
        va = self._alloc([(_hash_size(filter_hash, notrace_hash), False)])[0]
        self._write_data(va, _hash_bytes(filter_hash, notrace_hash))
        return va

    def ftrace_hash_free(self, block: int) -> None:
        """Free a block from ``ftrace_hash_alloc`` that was never published."""
        if block:
            self._free_block(block)

    def ftrace_ops_publish_hashes(self, ops: FtraceOps, block: int) -> None:
        """rcu_assign_pointer(ops->func_hash, block); the old block after a grace period."""
        g = self._guest[id(ops)]
        old, g.hash_block = g.hash_block, block
        self._write_data(g.copy + OPS_HASH, _q.pack(block))
        self.rcu.call_rcu([old])

    def _read_u64(self, va: int) -> int:
        return _q.unpack(self._read(va, 8))[0]

    def _ops_target(self, ops: FtraceOps) -> int:
        """ftrace_ops_get_func(ops) as a guest address."""
        f = ftrace_ops_get_func(ops, self.ftrace_ops_assist_func)
        return f if isinstance(f, int) else self._guest[id(ops)].stub

    # ---- FtraceArch: trampolines ---------------------------------------------
    def arch_ftrace_update_trampoline(self, ops: FtraceOps) -> None:
        """Write ``ops``' private trampoline (a copy of ftrace_caller or ftrace_regs_caller
        that loads this ops and calls its function directly) in the block reserved for it."""
        g = self._guest[id(ops)]
        code, call_off = instantiate_trampoline(self._tramp_frame(ops), g.tramp, g.copy,
                                                self._ops_target(ops))
        self._write(g.tramp, code)
        ops.trampoline, ops.trampoline_size = g.tramp, len(code)
        ops.flags |= FL.ALLOC_TRAMP
        self.symbols[g.tramp] = ("ftrace_trampoline", ops.trampoline_size)
        self.code_ranges.append((g.tramp, g.tramp + TRAMP_SIZE))
        self._tramp_call[g.tramp] = call_off

    def arch_ftrace_trampoline_free(self, ops: FtraceOps, synced: bool = True) -> None:
        """Free the trampoline, copy, stub and func_hash block of an unlinked ops: now if
        the rcu_tasks wait completed (``synced``), else after a later grace period."""
        ops.trampoline = ops.trampoline_size = 0     # ALLOC_TRAMP stays, as in the kernel
        g = self._guest.pop(id(ops))
        self._callbacks.pop(g.ops_id, None)
        self._by_ops_id.pop(g.ops_id, None)
        if synced:
            for va in g.blocks():
                self._free_block(va)
        else:
            self.rcu.call_rcu(g.blocks())

    def _free_block(self, va: int) -> None:
        """Give a block back to the code area, forgetting it as code or symbol."""
        self.symbols.pop(va, None)
        self._tramp_call.pop(va, None)
        self.code_ranges = [r for r in self.code_ranges if r[0] != va]
        self.machine.execmem.free(va)

    # ---- FtraceArch: code updates ---------------------------------------------
    def ftrace_update_ftrace_func(self, func) -> None:
        """Point ftrace_call and ftrace_regs_call at ``func`` (an address, or an ops whose
        function becomes the target after function_trace_op is set to it)."""
        if isinstance(func, FtraceOps):
            self._write_data(self.function_trace_op, _q.pack(self._guest[id(func)].copy))
            target = self._ops_target(func)
        else:
            target = func
        batch = {site: call_insn(site, target) for site in (self.ftrace_call, self.ftrace_regs_call)
                 if site and self._read(site, MCOUNT_INSN_SIZE) != call_insn(site, target)}
        self.poker.text_poke_bp_batch(batch)            # both calls in one int3 round

    def ftrace_replace_code(self, plan) -> None:
        """Verify every site first, then write them all as one int3 batch. Sites share pages,
        so each page is translated once."""
        batch, pas, page_pa = {}, {}, {}
        ram, text_pa = self.machine.ram, self.machine.text_pa
        for rec, _action, old, new in plan:
            ip = rec.ip
            page = ip & ~0xFFF
            try:
                if (base := page_pa.get(page)) is None:
                    base = page_pa[page] = text_pa(page)
            except EmuError:
                raise FtracePatchError(errno.EFAULT, "cannot read call site", rec) from None
            pa = base + (ip & 0xFFF)
            expected = site_insn(ip, old)
            if ram[pa:pa + MCOUNT_INSN_SIZE] != expected:
                raise FtracePatchError(errno.EINVAL, "call site mismatch", rec,
                                       bytes(ram[pa:pa + MCOUNT_INSN_SIZE]), expected)
            batch[ip], pas[ip] = site_insn(ip, new), pa
        self.poker.text_poke_bp_batch(batch, pas)

    def synchronize_rcu_tasks(self, budget_ms: float = 200) -> bool:
        """The rcu_tasks wait (rcu_tasks.py): True once no task can still be inside ftrace
        code; False if ``budget_ms`` of virtual time passed first."""
        return self.rcu.synchronize(budget_ms)

    def _in_code(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.code_ranges)

    # ---- hypercalls ------------------------------------------------------------
    def _on_callback(self, cpu: "VCpu", port: int, ops_id: int) -> None:
        """The hypercall of an ops' stub: its arguments from this CPU's mailbox (one unpack
        from RAM), a lazy pt_regs view when the ops asked for regs (an ftrace_regs view for
        an IPMODIFY ops without SAVE_REGS), the user's function."""
        entry = self._callbacks.get(ops_id)
        if entry is None:
            return
        ops, frame = entry
        ip, parent_ip, _op, fregs = _args.unpack_from(self._ram, self.mailbox_pa + (cpu.index << MAILBOX_SHIFT))
        # A SAVE_REGS ops is called only with a full frame (cs set): its own trampoline or
        # ftrace_regs_caller; the list function skips it when ftrace_caller's ftrace_regs
        # (cs = 0) is all there is. Others see None, as the seed has it, unless IPMODIFY.
        regs = None
        if fregs and frame == Frame.ARGS:
            regs = self._pt_regs(cpu, fregs, FtraceRegs)
            refs = getrefcount(regs)
        elif fregs and frame:
            # The common case inline (a call costs as much as the rest): a frame within one
            # known page seen through this CPU's spare view, taken out of the spare slot while
            # the callback runs (a nested callback on this CPU finds the slot empty).
            off = fregs & 0xFFF
            pa = self._kernel_pages.get(fregs - off)
            regs = self._spare_views.pop(cpu, None)
            if pa is None or off > 0x1000 - FRAME_SIZE or regs is None:
                regs = self._pt_regs(cpu, fregs)
            else:
                regs._base, regs.address = pa + off, fregs
            refs = getrefcount(regs)
        outer, self.current_cpu = self.current_cpu, cpu
        try:
            ops.saved_func(ip, parent_ip, ops, regs)
        except CallbackError:
            raise                    # from a nested Machine.call: it names the innermost
        except Exception as exc:
            raise self._callback_error(cpu, ops, ip, exc) from exc
        finally:
            self.current_cpu = outer
        if regs is not None:
            if getrefcount(regs) > refs:            # the callback kept it: see ptregs.py
                regs.detach()
            elif regs._write_through is None and type(regs) is PtRegs:   # a view of RAM: reusable
                self._spare_views[cpu] = regs

    def _callback_error(self, cpu: "VCpu", ops: FtraceOps, ip: int, exc: Exception) -> CallbackError:
        """The loud end of a raising callback: the ops, the traced function, the CPU."""
        assert self.core is not None
        name = views.sprint_func(self.core, ops.saved_func)
        where = self.machine.lookup(ip)
        err = cpu.fatal(CallbackError, f"ftrace callback {name} raised {type(exc).__name__}: "
                        f"{exc} (traced function {where})")
        err.ops, err.ip = ops, ip      # type: ignore[attr-defined]
        return err

    def _pt_regs(self, cpu: "VCpu", fregs: int, view: type[PtRegs] = PtRegs) -> PtRegs:
        """A lazy view of the trampoline's pt_regs frame at ``fregs``: guest RAM itself when
        the frame lies in one page (kept as the CPU's spare view afterwards, re-pointed at
        later frames: making a view costs more than the rest of the hypercall), else a copy
        written through."""
        if (fregs & 0xFFF) + FRAME_SIZE > 0x1000:
            raw = bytearray(cpu.read_virt(fregs, FRAME_SIZE, _FREGS_WHAT))
            return view(raw, 0, fregs, lambda va, data: self.machine.walker.write(cpu.cr3(), va, data))
        try:
            return view(self._ram, self._kernel_pa(fregs, cpu.cr3), fregs)
        except PageFault:
            raise cpu.bad_address(fregs, _FREGS_WHAT) from None

    def _on_recursion(self, cpu: "VCpu", port: int, value: int) -> None:
        ip, parent_ip = struct.unpack("<QQ", self.machine.walker.read(cpu.cr3(), cpu.stack_pointer(), 16))
        self.recursion.ftrace_record_recursion(ip, parent_ip)


def _hash_size(filter_hash: frozenset[int], notrace_hash: frozenset[int]) -> int:
    return HASH_HEADER + 8 * (len(filter_hash) + len(notrace_hash))


def _hash_bytes(filter_hash: frozenset[int], notrace_hash: frozenset[int]) -> bytes:
    """A func_hash block: the two counts, then each hash's ips sorted (binary search)."""
    ips = sorted(filter_hash) + sorted(notrace_hash)
    return struct.pack(f"<2Q{len(ips)}Q", len(filter_hash), len(notrace_hash), *ips)
