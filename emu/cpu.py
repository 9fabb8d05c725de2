"""One virtual CPU: a Unicorn instance over the shared RAM, its hooks, and its run state."""
from __future__ import annotations

import contextlib
import ctypes
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from unicorn import (UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INSN_INVALID,
                     UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc)
from unicorn.x86_const import (UC_X86_INS_IN, UC_X86_INS_SYSCALL,
                               UC_X86_REG_CR3, UC_X86_REG_EFLAGS,
                               UC_X86_REG_RSP)

from . import memlayout as L
from . import blockcount, crash, hypercall, kick, trap, ucx
from .apic import LocalApic
from .errors import EmuError, GuestMemoryError
from .paging import PageFault
from .slicerun import HALTED, PARKED, RFLAGS_IF, RUNNING, STOPPED, SliceRunning

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["VCpu", "STOPPED", "RUNNING", "HALTED", "PARKED"]
MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC0000081, 0xC0000082, 0xC0000084
RFLAGS_DF = 1 << 10
RFLAGS_ARITH = 0x8D5            # CF PF AF ZF SF OF
# What SYSCALL loads into CS and SS whatever the GDT holds (the SDM's fixed values): flat
# 64-bit code and flat data, DPL 0, present, accessed, limit FFFFF pages (deliver.c's too).
SYSCALL_CS_FLAGS, SYSCALL_SS_FLAGS = 0x00AF9B00, 0x00CF9300
T_UD, T_NMI = 6, 2
_u64 = struct.Struct("<Q")


class VCpu(SliceRunning):
    """A vCPU. ``state`` is stopped (never started, or reset), running, halted (``hlt`` with
    interrupts on: waits for an interrupt) or parked (``cli; hlt``: waits for INIT/STARTUP)."""

    def __init__(self, machine: "Machine", index: int) -> None:
        self.machine = machine
        self.index = index
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map_ptr(0, machine.ram_size, UC_PROT_ALL, machine.ram_ptr)
        self.regs = ucx.RawRegs(self.uc)
        self.counter, self.limit = ucx.counter_cells(self.uc)
        self.count_hook = ucx.count_hook_cell(self.uc)
        # The native block counter, or None: Unicorn's count= then counts (slower). Free-
        # running, it only answers rdtsc: nothing counts, kicks end the slices (slicerun.py).
        self.blocks = (blockcount.BlockCounter(self.uc, self._read_code, machine.deterministic)
                       if blockcount.available() else None)
        # Kicks end free-running slices; both modes translate without exit checks where
        # nothing needs them (SliceRunning.update_checks).
        self.kicker = kick.Kicker(self.uc) if kick.available() else None
        self._free_ips = 0.05          # fallback free-running: instructions per host ns
        self.precise = False           # count= even with the native counter (set_precise)
        self.code_hooks = 0
        self.update_checks()
        self.ctx = self.uc.context_save()
        self.ctx_buf = ucx.context_buffer(self.ctx)
        self._kept_ctx = self.uc.context_save()   # _state_kept's own (hooks edit ctx)
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
        env = ctypes.addressof(self.hflags) - (ucx.CTX_HFLAGS - ucx.CTX_HDR)
        # RIP and the system flags (IF) read in place, as hflags: no engine call
        self._env_rip = ctypes.c_uint64.from_address(env + ucx.CTX_RIP - ucx.CTX_HDR)
        self._env_eflags = ctypes.c_uint64.from_address(env + ucx.CTX_EFLAGS - ucx.CTX_HDR)
        self.native_trap = trap.attach_native(self, env)     # None: trap.py's Python path
        self._io_fault_ctx = None
        self._pvclock_start = ctypes.c_uint64()     # the guest's, once attach_pvclock found it
        if self.blocks is not None:       # rdtsc answered in C (VCpu.now where it cannot)
            self._keep = [self.blocks.hook_rdtsc(self.uc, env, L.NS_PER_INSN, self._rdtsc_miss)]
        else:
            self._keep = [ucx.add_rdtsc_hook(self.uc, self.now)]
        self._add_hooks()

    # ---- hooks -------------------------------------------------------------
    def _add_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        if self.native_trap is not None:
            self._keep.append(self.native_trap.hook_syscall(uc, self._syscall_from_c))
        else:
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
        self.code_hooks += 1
        self.update_checks()              # before the hooked block is translated again
        h = self.uc.hook_add(UC_HOOK_CODE, hook, None, addr, addr)
        self.remove_cache(addr, addr + 1)
        return h

    def remove_code_hook(self, handle: int) -> None:
        """Undo add_code_hook (the blocks translated with exit checks meanwhile keep them)."""
        self.hook_del(handle)
        self.code_hooks -= 1
        self.update_checks()

    def _read_code(self, va: int, n: int) -> bytes:
        return self.machine.walker.read(self.cr3(), va, n)

    def flush_tb(self) -> None:
        """Forget every translation of this CPU (and the native counter's block counts).
        Where runs no longer use count= (set_precise(False)), Unicorn's count= hook goes now
        too, with the CPU state kept (hook_del): Unicorn would delete it at the start of the
        next run, leaving the traces of a fault in the state that run starts from (a
        restored one, which then did not continue as it had)."""
        if self.count_hook.value and (self.native is not None or self.kicking):
            with self._state_kept():
                ucx.retire_count_hook(self.uc, self.count_hook)
        self.uc.ctl_flush_tb()
        if self.blocks is not None:
            self.blocks.invalidate()

    def hook_del(self, handle: int) -> None:
        """``uc.hook_del`` with the CPU state kept. Deleting a code hook makes Unicorn forget
        the blocks it instrumented, each looked up through the current page tables: one of
        another address space (a user program's, seen from the kernel's CR3) faults inside
        the engine, leaving CR2, error_code, exception_next_eip and old_exception behind."""
        with self._state_kept():
            self.uc.hook_del(handle)

    def remove_cache(self, start: int, end: int) -> None:
        """Forget the translations of [start, end) (and the native block counts). Unicorn
        looks the range up as code: on a page that is not executable (a host write to kernel
        data) that lookup takes a page fault inside the engine, leaving CR2 and
        old_exception = 14 behind, so the guest's next #PF became a #DF; the CPU state is
        put back around it."""
        with self._state_kept():
            self.uc.ctl_remove_cache(start, end)
        if self.blocks is not None:
            self.blocks.invalidate()

    @contextlib.contextmanager
    def _state_kept(self) -> Iterator[None]:
        """Put the CPU state back as it was after an engine call that may fault inside."""
        self.uc.context_update(self._kept_ctx)
        try:
            yield
        finally:
            self.uc.context_restore(self._kept_ctx)

    def _on_intr(self, uc: Uc, vector: int, _ud) -> None:
        if self._io_fault_ctx is not None:     # the rest of a refused in/out's block
            return
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

    def _syscall_from_c(self, native: trap.NativeDelivery) -> None:
        """The native SYSCALL hook's way back (an exception cannot cross into C); hands the
        hook (``native``) the MSRs once read, for the syscalls after this one."""
        try:
            self._on_syscall(self.uc, None)
        except BaseException as e:  # noqa: BLE001 - re-raised by after_emu_start
            self._hook_failed(e)
        if self._syscall_msrs is not None:
            native.syscall_msrs(*self._syscall_msrs)

    def _on_syscall(self, uc: Uc, _ud) -> None:
        """SYSCALL, which Unicorn leaves to a hook (native_trap's in C, where it is built)."""
        if self._io_fault_ctx is not None:     # the rest of a refused in/out's block
            return
        if self._syscall_msrs is None:
            self._syscall_msrs = (uc.msr_read(MSR_STAR), uc.msr_read(MSR_LSTAR), uc.msr_read(MSR_FMASK))
        star, lstar, fmask = self._syscall_msrs
        rflags = self.rflags()
        uc.context_update(self.ctx)
        buf = self.ctx_buf
        rip = _u64.unpack_from(buf, ucx.CTX_RIP)[0]
        length = self._syscall_length(rip)
        _u64.pack_into(buf, ucx.CTX_REGS + 8 * 1, rip + length)      # rcx
        _u64.pack_into(buf, ucx.CTX_REGS + 8 * 11, rflags)           # r11
        eflags = _u64.unpack_from(buf, ucx.CTX_EFLAGS)[0]
        _u64.pack_into(buf, ucx.CTX_EFLAGS, eflags & ~fmask)
        if fmask & RFLAGS_ARITH:        # kept lazily by the engine: set them as they now are
            _u64.pack_into(buf, ucx.CTX_CC_SRC, rflags & RFLAGS_ARITH & ~fmask)
            struct.pack_into("<I", buf, ucx.CTX_CC_OP, ucx.CC_OP_EFLAGS)
        if fmask & RFLAGS_DF:
            struct.pack_into("<i", buf, ucx.CTX_DF, 1)
        ksel = (star >> 32) & 0xFFFF
        _load_segment(buf, ucx.R_CS, ksel & ~3, 0xFFFFFFFF, SYSCALL_CS_FLAGS)    # RPL forced to 0
        _load_segment(buf, ucx.R_SS, ksel + 8, 0xFFFFFFFF, SYSCALL_SS_FLAGS)
        hflags = struct.unpack_from("<I", buf, ucx.CTX_HFLAGS)[0]
        struct.pack_into("<I", buf, ucx.CTX_HFLAGS, hflags & ~ucx.HF_CPL_MASK)
        _u64.pack_into(buf, ucx.CTX_RIP, lstar - length)   # Unicorn adds the length after the hook
        uc.context_restore(self.ctx)

    def _syscall_length(self, rip: int) -> int:
        """The length of the SYSCALL at ``rip``: any prefixes (legacy, REX), then 0F 05.
        Unicorn adds it to RIP after the hook, and RCX must hold the next instruction's
        address: with a fixed 2, a prefixed syscall entered the kernel one byte past LSTAR
        and returned into its own middle."""
        cr3 = self.cr3()
        for i in range(14):
            if self.machine.walker.read(cr3, rip + i, 1)[0] == 0x0F:
                return i + 2
        return 2                  # unreachable: Unicorn decoded a syscall there

    def _on_out(self, _uch, port: int, size: int, value: int, _ud) -> None:
        """``out`` checked as a CPU does, then its port's handler: the out hook itself where
        the native one cannot be built (a raw ctypes callback), else the native hook's path
        at CPL > 0 (hypercall.py). An exception cannot cross into C: kept for after emu_start."""
        if self._io_fault_ctx is not None:     # the rest of a refused in/out's block
            return
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
        before it and raise #GP(0) on it (a hook cannot redirect RIP; see after_emu_start).
        Nothing after it may run, not even the rest of its block: with exit checks Unicorn
        leaves right after this hook (emu_stop; the stale RIP is harmless since the saved
        context is put back); without them (kick.py) the rest of the block would run, so the
        CPU is given page tables that map nothing: its next memory access faults, and that
        fault, like every hook until the run ends, is ignored (``_io_fault_ctx`` is set)."""
        self._set_io_fault(self.uc.context_save())
        self._stop_requested = True
        if not self.checked:
            self.regs.write(UC_X86_REG_CR3, self.machine.no_pages_pa)
        if self.kicking:
            self.kicker.kick()
        else:
            self.uc.emu_stop()

    def _set_io_fault(self, ctx) -> None:
        """A refused in/out's saved state (None: none pending). While one is pending every hook
        is ignored: the Python ones test ``_io_fault_ctx``, the native SYSCALL hook its flag."""
        self._io_fault_ctx = ctx
        if self.native_trap is not None:
            self.native_trap.hooks_off(ctx is not None)

    def abandon_run(self) -> None:
        """Forget what the last run left for after emu_start (Machine.restore): a run that
        ended in an engine error never got there, and a refused in/out's pending state would
        otherwise keep every hook of the restored machine ignored."""
        self._set_io_fault(None)
        self.hook_error = None

    def after_emu_start(self) -> None:
        """Finish what hooks left for after emu_start: the #GP of a refused ``in``/``out``,
        and re-raising what a raw hook raised."""
        ctx = self._io_fault_ctx
        if ctx is not None:
            self._set_io_fault(None)
            self.uc.context_restore(ctx)
            self.regs.write(UC_X86_REG_CR3, self.cr3())     # flushes the TLB
            if self.blocks is not None:    # the refused in/out did not retire
                self.blocks.settle(self.rip())
            trap.deliver(self, trap.T_GP, 0)
        exc, self.hook_error = self.hook_error, None
        if exc is not None:
            raise exc

    def _on_in(self, uc: Uc, port: int, size: int, _ud) -> int:
        if self._io_fault_ctx is not None:     # the rest of a refused in/out's block
            return 0
        if self.hflags.value & ucx.HF_CPL_MASK and not self.io_permitted(port, size):
            self._io_fault()
            return 0
        fn = self.machine.port_in.get(port)
        return fn(self, port) if fn is not None else 0xFFFFFFFF & ((1 << (8 * size)) - 1)

    # ---- state helpers -----------------------------------------------------
    def rflags(self) -> int:
        return self.regs.read(UC_X86_REG_EFLAGS)

    def cr3(self) -> int:
        return self.regs.read(UC_X86_REG_CR3)

    def rip(self) -> int:
        return self._env_rip.value

    def interrupts_enabled(self) -> bool:
        """RFLAGS.IF (a system flag: kept whole in env->eflags, unlike the arithmetic ones)."""
        return bool(self._env_eflags.value & RFLAGS_IF)

    def load_cs_ss(self, buf, cs_sel: int, ss_sel: int, cpl: int) -> None:
        """Load CS and SS with their hidden state and set CPL, in a saved context buffer.

        ``reg_write(CS)`` stores only the selector in 64-bit mode; the CPU's privilege level
        lives in the hidden segment state and hflags, which we set here as a far transfer would."""
        cs_flags = self.machine.descriptor_flags(self, buf, cs_sel)
        ss_flags = self.machine.descriptor_flags(self, buf, ss_sel) if ss_sel & ~3 else cpl << ucx.DESC_DPL_SHIFT
        _load_segment(buf, ucx.R_CS, cs_sel, 0xFFFFFFFF, cs_flags)
        _load_segment(buf, ucx.R_SS, ss_sel, 0xFFFFFFFF if ss_sel & ~3 else 0, ss_flags)
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
        if apic.irr and self.state in (RUNNING, HALTED) and self.interrupts_enabled():
            vector = max(apic.irr)
            apic.irr.discard(vector)
            trap.deliver(self, vector)
            self.state = RUNNING


def _load_segment(buf, seg: int, sel: int, limit: int, flags: int) -> None:
    """A segment register with base 0 and its hidden state, in a saved context buffer."""
    struct.pack_into("<IIQII", buf, ucx.seg_offset(seg), sel, 0, 0, limit, flags)
