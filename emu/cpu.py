"""One virtual CPU: a Unicorn instance over the shared RAM, its hooks, and its run state."""
from __future__ import annotations

import ctypes
import struct
import time
from typing import TYPE_CHECKING

from unicorn import (UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INSN_INVALID,
                     UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc, UcError)
from unicorn.x86_const import (UC_X86_INS_IN, UC_X86_INS_SYSCALL,
                               UC_X86_REG_CR3, UC_X86_REG_EFLAGS,
                               UC_X86_REG_RIP, UC_X86_REG_RSP)

from . import memlayout as L
from . import blockcount, crash, hypercall, trap, ucx
from .apic import LocalApic
from .errors import EmuError, GuestMemoryError
from .paging import PageFault
from .ticker import MIN_SLICE_NS

if TYPE_CHECKING:
    from .machine import Machine

STOPPED, RUNNING, HALTED, PARKED = "stopped", "running", "halted", "parked"
MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC0000081, 0xC0000082, 0xC0000084
RFLAGS_IF, RFLAGS_DF = 1 << 9, 1 << 10
T_UD, T_NMI = 6, 2
_u64 = struct.Struct("<Q")


class VCpu:
    """A vCPU. ``state`` is stopped (never started, or reset), running, halted (``hlt`` with
    interrupts on: waits for an interrupt) or parked (``cli; hlt``: waits for INIT/STARTUP)."""

    def __init__(self, machine: "Machine", index: int) -> None:
        self.machine = machine
        self.index = index
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map_ptr(0, machine.ram_size, UC_PROT_ALL, machine.ram_ptr)
        self.regs = ucx.RawRegs(self.uc)
        self.counter, self.limit = ucx.counter_cells(self.uc)
        # The native block counter, or None: Unicorn's count= then counts (slower).
        self.blocks = (blockcount.BlockCounter(self.uc, self._read_code)
                       if blockcount.available() else None)
        self._free_ips = 0.05          # fallback free-running: instructions per host ns
        self.precise = False           # count= even with the native counter (set_precise)
        self.ctx = self.uc.context_save()
        self.ctx_buf = ucx.context_buffer(self.ctx)
        self._rc_ctx = self.uc.context_save()     # remove_cache's own (hooks edit ctx)
        self.apic = LocalApic(self)
        self.state = STOPPED
        self.startup_pending = False
        self.in_slice = False
        self.slice_start = 0
        self.clock_ns = 0               # where this CPU's clock stood after its last slice
        self._host_start = 0
        self.instructions = 0
        self._stop_requested = False
        self._code_hook_rip: int | None = None     # inside a code hook: the hooked address
        self._stop_before: int | None = None       # a code hook stopped the run before this
        self.stop_rip: int | None = None           # the instruction whose hook asked to stop
        self._syscall_msrs: tuple[int, int, int] | None = None
        self.hook_error: BaseException | None = None
        self.hflags = ucx.hflags_cell(self.uc)
        self._io_fault_ctx = None
        self._pvclock_start = ctypes.c_uint64()     # the guest's, once attach_pvclock found it
        if self.blocks is not None:       # rdtsc answered in C (VCpu.now where it cannot)
            env = ctypes.addressof(self.hflags) - (ucx.CTX_HFLAGS - ucx.CTX_HDR)
            self._keep = [self.blocks.hook_rdtsc(self.uc, env, L.NS_PER_INSN, self._rdtsc_miss)]
        else:
            self._keep = [ucx.add_rdtsc_hook(self.uc, self.now)]
        self._add_hooks()

    # ---- hooks -------------------------------------------------------------
    def _add_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, UC_X86_INS_SYSCALL)
        self._keep.append(hypercall.add_out_hook(self))
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, UC_X86_INS_IN)
        uc.mmio_map(L.LAPIC_PA, 0x1000, lambda u, off, size, ud: self.apic.mmio_read(off), None,
                    lambda u, off, size, val, ud: self.apic.mmio_write(off, val), None)
        for addr, fn in self.machine.code_hooks:
            self.add_code_hook(addr, fn)

    def add_code_hook(self, addr: int, fn) -> int:
        """Call ``fn(cpu)`` before the instruction at ``addr`` runs on this CPU."""
        def hook(_uc, a: int, _size, _ud) -> None:
            self._code_hook_rip = a
            try:
                fn(self)
            finally:
                self._code_hook_rip = None
        h = self.uc.hook_add(UC_HOOK_CODE, hook, None, addr, addr)
        self.remove_cache(addr, addr + 1)
        return h

    @property
    def native(self) -> "blockcount.BlockCounter | None":
        """The native counter if it counts this CPU's runs now, else None (count= counts)."""
        return None if self.precise else self.blocks

    def set_precise(self, on: bool) -> None:
        """Instruction-precise runs, for a debugger's single steps and watchpoints: count=
        instead of the native counter, which ends runs only at block starts."""
        if on != self.precise:
            self.precise = on
            self.flush_tb()               # count= only counts code translated while it is on

    def _read_code(self, va: int, n: int) -> bytes:
        return self.machine.walker.read(self.cr3(), va, n)

    def flush_tb(self) -> None:
        """Forget every translation of this CPU (and the native counter's block counts)."""
        self.uc.ctl_flush_tb()
        if self.blocks is not None:
            self.blocks.invalidate()

    def remove_cache(self, start: int, end: int) -> None:
        """Forget the translations of [start, end) (and the native block counts). Unicorn
        looks the range up as code: on a page that is not executable (a host write to kernel
        data) that lookup takes a page fault inside the engine, leaving CR2 and
        old_exception = 14 behind, so the guest's next #PF became a #DF; the CPU state is
        put back around it."""
        self.uc.context_update(self._rc_ctx)
        self.uc.ctl_remove_cache(start, end)
        self.uc.context_restore(self._rc_ctx)
        if self.blocks is not None:
            self.blocks.invalidate()

    def _on_intr(self, uc: Uc, vector: int, _ud) -> None:
        uc.context_update(self.ctx)
        if self.blocks is not None:       # the block ended here, not at its end
            self.blocks.settle(_u64.unpack_from(self.ctx_buf, ucx.CTX_RIP)[0])
        is_int = struct.unpack_from("<i", self.ctx_buf, ucx.CAL.err_offset + 4)[0]
        error = struct.unpack_from("<I", self.ctx_buf, ucx.CAL.err_offset)[0]
        for fn in self.machine.trap_hooks.get(vector, ()):
            if fn(self):
                self._clear_old_exception()
                return
        trap.deliver(self, vector, error, soft=bool(is_int))

    def _clear_old_exception(self) -> None:
        self.uc.context_update(self.ctx)
        struct.pack_into("<i", self.ctx_buf, ucx.CAL.old_exc_offset, -1)
        self.uc.context_restore(self.ctx)

    def _on_invalid(self, uc: Uc, _ud) -> bool:
        if self.blocks is not None:
            self.blocks.settle(self.rip())
        try:
            trap.deliver(self, T_UD)
        except EmuError as e:       # a triple fault: the binding would report only UC_ERR_INSN_INVALID
            self._hook_failed(e)
        return True

    def _on_syscall(self, uc: Uc, _ud) -> None:
        if self._syscall_msrs is None:
            self._syscall_msrs = (uc.msr_read(MSR_STAR), uc.msr_read(MSR_LSTAR), uc.msr_read(MSR_FMASK))
        star, lstar, fmask = self._syscall_msrs
        rflags = self.rflags()
        uc.context_update(self.ctx)
        buf = self.ctx_buf
        rip = _u64.unpack_from(buf, ucx.CTX_RIP)[0]
        _u64.pack_into(buf, ucx.CTX_REGS + 8 * 1, rip + 2)           # rcx
        _u64.pack_into(buf, ucx.CTX_REGS + 8 * 11, rflags)           # r11
        eflags = _u64.unpack_from(buf, ucx.CTX_EFLAGS)[0]
        _u64.pack_into(buf, ucx.CTX_EFLAGS, eflags & ~fmask)
        if fmask & RFLAGS_DF:
            struct.pack_into("<i", buf, ucx.CTX_DF, 1)
        ksel = (star >> 32) & 0xFFFF
        self.load_cs_ss(buf, ksel, ksel + 8, 0)
        _u64.pack_into(buf, ucx.CTX_RIP, lstar - 2)                  # Unicorn adds 2 after the hook
        uc.context_restore(self.ctx)

    def _on_out(self, _uch, port: int, size: int, value: int, _ud) -> None:
        """``out`` checked as a CPU does, then its port's handler: the out hook itself where
        the native one cannot be built (a raw ctypes callback), else the native hook's path
        at CPL > 0 (hypercall.py). An exception cannot cross into C: kept for after emu_start."""
        try:
            if self.hflags.value & ucx.HF_CPL_MASK and not self.io_permitted(port, size):
                return self._io_fault()
            fn = self.machine.port_out.get(port)
            if fn is not None:
                fn(self, port, value)
        except BaseException as e:    # noqa: BLE001 - re-raised by after_emu_start
            self._hook_failed(e)

    def io_permitted(self, port: int, size: int) -> bool:
        """May the current CPL use ``port``? As a CPU decides: CPL <= IOPL, else every bit of
        the ports in the TSS I/O permission bitmap must be clear."""
        if self.hflags.value & ucx.HF_CPL_MASK <= (self.rflags() >> 12) & 3:
            return True
        self.uc.context_update(self.ctx)
        tss, limit = struct.unpack_from("<QI", self.ctx_buf, ucx.CTX_TR_BASE)
        if limit < 0x67:
            return False
        try:
            iobase = struct.unpack("<H", self.machine.walker.read(self.cr3(), tss + 0x66, 2))[0]
            at = iobase + port // 8
            if at + 1 > limit:
                return False
            bits = struct.unpack("<H", self.machine.walker.read(self.cr3(), tss + at, 2))[0]
        except PageFault:
            return False
        return not bits >> (port % 8) & ((1 << size) - 1)

    def _io_fault(self) -> None:
        """``in``/``out`` refused at this CPL: stop after it, then put the state back as it was
        before it and raise #GP(0) on it (a hook cannot redirect RIP; see after_emu_start)."""
        self._io_fault_ctx = self.uc.context_save()
        # emu_stop even under the native counter: Unicorn leaves the block right after this
        # hook with a stale RIP, which is harmless here since after_emu_start restores the
        # context saved above; a block-boundary stop would let the rest of the block run.
        self._stop_requested = True
        self.uc.emu_stop()

    def _hook_failed(self, exc: BaseException) -> None:
        """A raw hook raised: stop, and re-raise once emu_start has returned."""
        if self.hook_error is None:
            self.hook_error = exc
        if self.native is not None:
            # Not emu_stop: from an instruction hook Unicorn may leave the block right after
            # it with RIP still at the block start, and the resumed run would replay it.
            self.native.request_stop()
        else:
            self.uc.emu_stop()

    def after_emu_start(self) -> None:
        """Finish what hooks left for after emu_start: the #GP of a refused ``in``/``out``,
        and re-raising what a raw hook raised."""
        ctx, self._io_fault_ctx = self._io_fault_ctx, None
        if ctx is not None:
            self.uc.context_restore(ctx)
            if self.blocks is not None:    # the refused in/out did not retire
                self.blocks.settle(self.rip())
            trap.deliver(self, trap.T_GP, 0)
        exc, self.hook_error = self.hook_error, None
        if exc is not None:
            raise exc

    def _on_in(self, uc: Uc, port: int, size: int, _ud) -> int:
        if self.hflags.value & ucx.HF_CPL_MASK and not self.io_permitted(port, size):
            self._io_fault()
            return 0
        fn = self.machine.port_in.get(port)
        return fn(self, port) if fn is not None else 0xFFFFFFFF & ((1 << (8 * size)) - 1)

    # ---- state helpers -----------------------------------------------------
    def now(self) -> int:
        """This CPU's virtual time in ns: exact to the instruction inside a deterministic
        slice, host-clock based in free-running mode."""
        if not self.in_slice:
            return max(self.machine.now, self.clock_ns)
        if self.machine.deterministic:
            if self.native is not None:
                return self.slice_start + self.native.retired(self.rip()) * L.NS_PER_INSN
            return self.slice_start + max(self.counter.value - 1, 0) * L.NS_PER_INSN
        return self.slice_start + time.perf_counter_ns() - self._host_start

    def _rdtsc_miss(self) -> int:
        """rdtsc's value where the C hook has no answer (it cannot raise into C)."""
        try:
            return self.now()
        except BaseException as e:  # noqa: BLE001 - re-raised by after_emu_start
            self._hook_failed(e)
            return 0

    def attach_pvclock(self) -> None:
        """Keep this vCPU's PCPU_PVCLOCK words (guest/memlayout.h) for guest code that reads
        the TSC without rdtsc: the block counter updates the first at every block start,
        ``_set_clock`` the second (the slice's start, or PVCLOCK_INVALID)."""
        percpu = self.machine.kernel.percpu
        if percpu is None:
            return
        host = (self.machine.ram_ptr + percpu - L.KERNEL_VA_OFFSET + self.index * L.PCPU_SIZE
                + L.PCPU_PVCLOCK)
        self._pvclock_start = ctypes.c_uint64.from_address(host + 8)
        self._pvclock_start.value = L.PVCLOCK_INVALID
        if self.blocks is not None:
            self.blocks.set_pvclock(host)

    def _set_clock(self) -> None:
        """Tell the C rdtsc hook how now() reads this CPU's clock in the coming run (before
        every emu_start, and when a nested call moved ``slice_start``), and the guest's
        pvclock whether the block counter keeps it (only while counting blocks exactly)."""
        bc, start = self.blocks, L.PVCLOCK_INVALID
        if bc is None:
            pass
        elif not self.in_slice:
            bc.set_clock(blockcount.TSC_PYTHON, 0)
        elif not self.machine.deterministic:
            bc.set_clock(blockcount.TSC_HOST, self.slice_start, self._host_start)
        elif self.precise:
            bc.set_clock(blockcount.TSC_COUNTER, self.slice_start, 0, ctypes.addressof(self.counter))
        else:
            bc.set_clock(blockcount.TSC_BLOCKS, self.slice_start)
            start = self.slice_start
        self._pvclock_start.value = start

    def rflags(self) -> int:
        return self.regs.read(UC_X86_REG_EFLAGS)

    def cr3(self) -> int:
        return self.regs.read(UC_X86_REG_CR3)

    def rip(self) -> int:
        return self.regs.read(UC_X86_REG_RIP)

    def request_stop(self) -> None:
        """End the current slice (the run loop then looks at events). From a code hook: before
        the hooked instruction. From an instruction or MMIO hook: with count=, after this
        instruction; with the native counter, at the next block start (the rest of the block
        still runs), and reports name the instruction that asked (``stop_rip``)."""
        if not self.in_slice:
            return
        self._stop_requested = True
        if self.native is None:
            self.uc.emu_stop()
        elif self._code_hook_rip is not None:
            self._stop_before = self._code_hook_rip      # exact: Unicorn stops right here
            self.uc.emu_stop()
        else:
            # Not emu_stop (see _hook_failed). RIP is the instruction's where Unicorn syncs it
            # (rdtsc, port I/O checks), else the block's start.
            self.stop_rip = self.rip()
            self.blocks.request_stop()

    def stop_after_instruction(self) -> None:
        """End the current slice once the instruction now executing has completed, with RIP
        past it. For memory hooks: ``emu_stop`` there leaves RIP on the access, which has
        already happened and would happen again on resume. Needs instruction counting (the
        deterministic mode): the engine's limit is lowered to what has run. Under the native
        counter (not ``set_precise``) the run ends at the next block start instead."""
        if self.in_slice:
            self._stop_requested = True
            if self.native is not None:
                self.native.request_stop()
            else:
                self.limit.value = self.counter.value

    def load_cs_ss(self, buf, cs_sel: int, ss_sel: int, cpl: int) -> None:
        """Load CS and SS with their hidden state and set CPL, in a saved context buffer.

        ``reg_write(CS)`` stores only the selector in 64-bit mode; the CPU's privilege level
        lives in the hidden segment state and hflags, which we set here as a far transfer would."""
        cs_flags = self.machine.descriptor_flags(self, buf, cs_sel)
        ss_flags = self.machine.descriptor_flags(self, buf, ss_sel) if ss_sel & ~3 else cpl << ucx.DESC_DPL_SHIFT
        struct.pack_into("<IIQII", buf, ucx.seg_offset(ucx.R_CS), cs_sel, 0, 0, 0xFFFFFFFF, cs_flags)
        struct.pack_into("<IIQII", buf, ucx.seg_offset(ucx.R_SS), ss_sel, 0, 0,
                         0xFFFFFFFF if ss_sel & ~3 else 0, ss_flags)
        hflags = struct.unpack_from("<I", buf, ucx.CTX_HFLAGS)[0]
        struct.pack_into("<I", buf, ucx.CTX_HFLAGS, (hflags & ~ucx.HF_CPL_MASK) | cpl)

    def cpl(self) -> int:
        return self.hflags.value & ucx.HF_CPL_MASK

    def fatal(self, cls: type[EmuError], message: str) -> EmuError:
        """An error naming this CPU, where it faulted, its backtrace across exception and
        interrupt entries, and every other CPU (crash.report)."""
        return crash.report(self, cls, message)

    def bad_address(self, va: int, what: str) -> GuestMemoryError:
        """The error for an unmapped address the guest handed the host (``what`` says which)."""
        return self.fatal(GuestMemoryError, f"{what}: no mapping for guest address 0x{va:x}")

    def read_virt(self, va: int, n: int, what: str) -> bytes:
        """Read guest memory through this CPU's page tables on the guest's behalf (e.g. a
        pointer in a hypercall's arguments); unmapped: ``bad_address``."""
        try:
            return self.machine.walker.read(self.cr3(), va, n)
        except PageFault:
            raise self.bad_address(va, what) from None

    def stack_pointer(self) -> int:
        return self.regs.read(UC_X86_REG_RSP)

    # ---- running -----------------------------------------------------------
    def run_slice(self, start_ns: int, count: int) -> int:
        """Run up to ``count`` instructions' worth of time from ``start_ns``.

        Returns the virtual ns used. Deterministic: the instructions run (the native counter
        ends slices at a block boundary at or before ``count``; count= ends exactly there), or
        the whole slice if the CPU halted. Free-running: the host-time budget, never shorter
        than the ticker's ``MIN_SLICE_NS``; the ticker's stop is a flag the native block hook
        acts on at the next block start (Unicorn's own emu_stop from another thread can end a
        run mid-block with RIP rolled back, re-executing instructions). Without the native
        counter, free-running slices are counted too, sized by the host speed measured."""
        self.slice_start = start_ns
        self._stop_requested = False
        self._stop_before = self.stop_rip = None
        self.in_slice = True
        self._host_start = time.perf_counter_ns()
        det, bc = self.machine.deterministic, self.native
        budget_ns = count * L.NS_PER_INSN if det else max(count * L.NS_PER_INSN, MIN_SLICE_NS)
        if not det and bc is None:
            count = max(1, int(budget_ns * self._free_ips))
        try:
            if det or bc is None:
                ran, exhausted = self.emu_counted(self.rip(), 0, count)
            else:
                bc.begin(0)                   # before arm: the ticker may fire at once
                self.machine.ticker.arm(bc.request_stop, budget_ns)
                try:
                    ran, _ = self._emu_blocks(self.rip(), 0)
                finally:
                    self.machine.ticker.disarm()
                exhausted = bool(bc.v.stopped)
        except UcError as e:
            raise self.fatal(EmuError, f"unicorn stopped: {e}") from None
        finally:
            self.in_slice = False
        self.after_emu_start()
        if not det and bc is None:
            host_ns = max(time.perf_counter_ns() - self._host_start, 1)
            self._free_ips = 0.5 * self._free_ips + 0.5 * max(ran / host_ns, 1e-3)
        self.instructions += ran
        if not exhausted and not self._stop_requested:
            # Nothing asked Unicorn to stop early, so it stopped at a hlt.
            self.state = HALTED if self.rflags() & RFLAGS_IF else PARKED
        elif det and bc is not None:
            return ran * L.NS_PER_INSN
        return budget_ns

    def run_from(self, start_ns: int, count: int) -> int:
        """run_slice over the part of [start_ns, start_ns + count instructions) this CPU has
        not run yet: a CPU already ahead of ``start_ns`` (bursts of Machine.sync_cores, calls
        from callbacks) runs only the rest, so its clock never steps back. Returns the ns
        the whole span takes, as run_slice does."""
        skip = max(0, self.clock_ns - start_ns) // L.NS_PER_INSN
        if skip < count:
            before = self.instructions
            self.run_slice(start_ns + skip * L.NS_PER_INSN, count - skip)
            self.clock_ns = self.slice_start + (self.instructions - before) * L.NS_PER_INSN
        return count * L.NS_PER_INSN

    def resume_after_call(self, in_slice: bool, slice_start: int, spent_ns: int) -> None:
        """After Machine.call: a call made inside a slice (from a callback) took time on this
        CPU's clock, so the slice resumes that much later. A call between slices runs outside
        the machine's timeline: the clock stays where the round left it."""
        self.in_slice = in_slice
        self.slice_start = slice_start + spent_ns if in_slice else slice_start
        self._set_clock()

    def emu_counted(self, begin: int, until: int, count: int) -> tuple[int, bool]:
        """emu_start from ``begin`` (to ``until``, 0: none) for at most ``count`` instructions
        (0: no limit); returns (instructions retired, whether the limit ended the run). The
        native counter ends the run at the last block boundary within ``count``."""
        bc = self.native
        if bc is None:
            if self.blocks is not None:
                self.blocks.begin(0)      # precise: the block hook must not stop this run
            self._set_clock()
            self.uc.emu_start(begin, until, count=count)
            ran = min(self.counter.value, count)
            return ran, ran == count
        bc.begin(count)
        return self._emu_blocks(begin, until)

    def _emu_blocks(self, begin: int, until: int) -> tuple[int, bool]:
        """emu_start under the native counter (already given its budget)."""
        bc = self.blocks
        self._stop_before = None
        self._set_clock()
        self.uc.emu_start(begin, until)
        if self._stop_before is not None and self.rip() == self._stop_before:
            bc.settle(self._stop_before)          # a code hook stopped it inside a block
        return bc.v.ran, bool(bc.v.stopped) and not self._stop_requested

    def nmi_blocked(self) -> bool:
        """NMIs are held while RSP is inside this CPU's NMI IST stack (as if until its iretq),
        and while the CPU's IDT has no present NMI gate yet (just started, or loaded before
        it was filled): a real CPU would triple-fault; the NMI is taken once the gate is there."""
        self.uc.context_update(self.ctx)
        idt, limit = struct.unpack_from("<QI", self.ctx_buf, ucx.CTX_IDT_BASE)
        if limit < 16 * T_NMI + 15:
            return True
        try:
            gate = self.machine.walker.read(self.cr3(), idt + 16 * T_NMI, 16)
        except PageFault:
            return True
        if not gate[5] & 0x80:
            return True
        tss = _u64.unpack_from(self.ctx_buf, ucx.CTX_TR_BASE)[0]
        if not tss:
            return True
        try:
            top = _u64.unpack(self.machine.walker.read(self.cr3(), tss + 0x24 + 8 * (L.IST_NMI - 1), 8))[0]
        except PageFault:
            return False
        return top - L.IST_STACK_SIZE <= self.stack_pointer() < top

    def deliver_pending(self) -> None:
        """Take pending STARTUP, NMI and (if IF=1) the highest pending vector; nothing but
        STARTUP while RIP is in code that holds interrupts (``Machine.hold_interrupts_in``)."""
        apic = self.apic
        if self.startup_pending and self.state in (STOPPED, PARKED):
            self.startup_pending = False
            self.machine.start_ap(self)
        if self.state == STOPPED:
            return
        if (apic.nmi_pending or apic.irr) and self.state == RUNNING and self.machine.holds_interrupts(self.rip()):
            return
        if apic.nmi_pending and not self.nmi_blocked():
            apic.nmi_pending = False
            trap.deliver(self, T_NMI)
            self.state = RUNNING
        if apic.irr and self.state in (RUNNING, HALTED) and self.rflags() & RFLAGS_IF:
            vector = max(apic.irr)
            apic.irr.discard(vector)
            trap.deliver(self, vector)
            self.state = RUNNING

    def save_counters(self) -> tuple:
        """The instruction counters of the current run (a nested emu_start reuses them)."""
        native = self.blocks.save() if self.blocks is not None else None
        return self.counter.value, self.limit.value, native

    def restore_counters(self, saved: tuple) -> None:
        self.counter.value, self.limit.value, native = saved
        if native is not None:
            self.blocks.restore(native)
