"""Interrupt and exception delivery through the guest's IDT, done by the host.

Unicorn never vectors through the IDT itself, so this module does what a 64-bit CPU does:
read the gate, check its DPL for software interrupts, pick the stack (TSS.RSP0 on a privilege
change, or an IST slot), align it, push SS, RSP, RFLAGS, CS, RIP and an error code, clear IF
for interrupt gates, and switch CS/SS (including the hidden state Unicorn keeps) to the gate's.
The guest's own ``iretq`` undoes it natively.

The common case runs in C (emu/native/deliver.c, built on first use like the block counter):
the same steps on the engine's live CPU state, about ten times cheaper, which a busy guest
pays at every timer tick. Where C meets anything unusual (a gate not present or of a type
long mode lacks, an unmapped IDT, TSS or stack, a failed DPL check) it changes nothing and
this module's Python path, the reference, runs instead and raises the fault. Without gcc,
or with ``FTEMU_NATIVE=0``, the Python path does everything.
"""
from __future__ import annotations

import ctypes
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_INS_SYSCALL, UC_X86_REG_CR3, UC_X86_REG_EFLAGS

from . import memlayout as L
from . import ucx
from .errors import TripleFault
from .kbuild import NativeLib, build_native
from .paging import PageFault

if TYPE_CHECKING:
    from .cpu import VCpu

ERRCODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
T_DF, T_NP, T_GP = 8, 11, 13
GATE_INTR, GATE_TRAP = 0xE, 0xF
RFLAGS_TF, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_VM = 1 << 8, 1 << 9, 1 << 14, 1 << 16, 1 << 17
_gate = struct.Struct("<HHBBHII")
_u64 = struct.Struct("<Q")
_i32 = struct.Struct("<i")


class DeliveryFault(Exception):
    """Delivering a vector raised another exception (vector, error code)."""

    def __init__(self, vector: int, error: int | None) -> None:
        super().__init__(vector, error)
        self.vector = vector
        self.error = error


def deliver(cpu: "VCpu", vector: int, error: int | None = None, soft: bool = False) -> None:
    """Deliver ``vector`` on ``cpu``, escalating to #DF and then to a triple fault."""
    native = cpu.native_trap
    if native is not None and native.deliver(vector, -1 if error is None else error, soft):
        cpu.machine.trace_delivery(cpu, vector)
        return
    try:
        _deliver_once(cpu, vector, error, soft)
    except DeliveryFault as first:
        if vector == T_DF:
            raise cpu.fatal(TripleFault, f"triple fault: #DF could not be delivered ({first.vector})")
        if vector in CONTRIBUTORY | {14} and first.vector in CONTRIBUTORY | {14}:
            deliver(cpu, T_DF, 0)
        else:
            deliver(cpu, first.vector, first.error)


def _deliver_once(cpu: "VCpu", vector: int, error: int | None, soft: bool) -> None:
    ctx, buf = cpu.ctx, cpu.ctx_buf
    cpu.uc.context_update(ctx)
    idt = _u64.unpack_from(buf, ucx.CTX_IDT_BASE)[0]
    idt_limit = struct.unpack_from("<I", buf, ucx.CTX_IDT_BASE + 8)[0]
    gate_error = vector * 8 + 2 + (0 if soft else 1)    # the IDT entry; EXT unless int n
    if vector * 16 + 15 > idt_limit:
        raise DeliveryFault(T_GP, gate_error)
    cr3 = cpu.cr3()
    try:
        lo, sel, ist, attr, mid, hi, _ = _gate.unpack(cpu.machine.walker.read(cr3, idt + vector * 16, 16))
    except PageFault:
        raise DeliveryFault(T_DF, 0) from None
    ist &= 7                                        # bits 3-7 of that byte are reserved
    dpl, gtype = (attr >> 5) & 3, attr & 0xF
    if gtype not in (GATE_INTR, GATE_TRAP):     # long mode has no other gates
        raise DeliveryFault(T_GP, gate_error)
    cpl = _u64.unpack_from(buf, ucx.CTX_HFLAGS)[0] & ucx.HF_CPL_MASK
    if soft and dpl < cpl:
        raise DeliveryFault(T_GP, gate_error)
    if not attr & 0x80:                         # checked after the type and the DPL (SDM)
        raise DeliveryFault(T_NP, gate_error)
    handler = lo | (mid << 16) | (hi << 32)
    rsp = _u64.unpack_from(buf, ucx.CTX_REGS + 8 * 4)[0]
    rip = _u64.unpack_from(buf, ucx.CTX_RIP)[0]
    cs = struct.unpack_from("<I", buf, ucx.seg_offset(ucx.R_CS))[0]
    ss = struct.unpack_from("<I", buf, ucx.seg_offset(ucx.R_SS))[0]
    rflags = cpu.rflags()
    new_cpl = sel & 3
    tss = _u64.unpack_from(buf, ucx.CTX_TR_BASE)[0]
    try:
        if ist:
            new_rsp = _u64.unpack(cpu.machine.walker.read(cr3, tss + 0x24 + 8 * (ist - 1), 8))[0]
        elif new_cpl != cpl:
            new_rsp = _u64.unpack(cpu.machine.walker.read(cr3, tss + 4 + 8 * new_cpl, 8))[0]
        else:
            new_rsp = rsp
        new_rsp &= ~0xF
        frame = [rip, cs, rflags, rsp, ss]
        if error is not None and vector in ERRCODE_VECTORS and not soft:
            frame.insert(0, error)
        new_rsp -= 8 * len(frame)
        cpu.machine.walker.write(cr3, new_rsp, struct.pack(f"<{len(frame)}Q", *frame))
    except PageFault:
        raise DeliveryFault(T_DF if vector in CONTRIBUTORY | {14} else 14, 0) from None
    struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, new_rsp)
    struct.pack_into("<Q", buf, ucx.CTX_RIP, handler)
    clear = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | (RFLAGS_IF if gtype == GATE_INTR else 0)
    eflags = _u64.unpack_from(buf, ucx.CTX_EFLAGS)[0]
    struct.pack_into("<Q", buf, ucx.CTX_EFLAGS, eflags & ~clear)
    if new_cpl != cpl:
        cpu.load_cs_ss(buf, sel, 0, new_cpl)
    _i32.pack_into(buf, ucx.CAL.old_exc_offset, -1)
    cpu.uc.context_restore(ctx)
    cpu.machine.trace_delivery(cpu, vector)


# ---- the native path ------------------------------------------------------------------
SOURCE = Path(__file__).with_name("native") / "deliver.c"
ENV_CR3 = 448                      # env->cr[3], checked against the engine at attach
_errcode_mask = sum(1 << v for v in ERRCODE_VECTORS)


class _TrapCpu(ctypes.Structure):
    """``struct trap_cpu`` of deliver.c."""
    _fields_ = [("env", ctypes.c_void_p), ("ram", ctypes.c_void_p), ("ram_size", ctypes.c_uint64),
                ("old_exc", ctypes.c_int64), ("uc", ctypes.c_void_p), ("reg_read", ctypes.c_void_p),
                ("eflags_reg", ctypes.c_int64), ("boot_gdt_pa", ctypes.c_uint64),
                ("errcode_vectors", ctypes.c_uint64), ("delivered", ctypes.c_uint64),
                ("slow", ctypes.c_uint64), ("star", ctypes.c_uint64), ("lstar", ctypes.c_uint64),
                ("fmask", ctypes.c_uint64), ("msr_valid", ctypes.c_uint32),
                ("hooks_off", ctypes.c_uint32), ("syscall_host", ctypes.c_void_p),
                ("syscalls", ctypes.c_uint64)]


HOST_FN = ctypes.CFUNCTYPE(None)


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build_native(SOURCE, "native interrupt delivery")))
    lib.ftemu_deliver.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int64, ctypes.c_uint32]
    lib.ftemu_deliver.restype = ctypes.c_int
    return lib


_native = NativeLib(_load)


def native_available() -> bool:
    """True if vCPUs made now deliver in C (building deliver.c on first call)."""
    return _native.load() is not None


class NativeDelivery:
    """deliver.c bound to one vCPU's engine and the machine's RAM: interrupt and exception
    delivery, and the SYSCALL hook."""

    def __init__(self, cpu: "VCpu", env: int) -> None:
        assert _native.lib is not None, "call native_available() first"
        m = cpu.machine
        self.t = _TrapCpu(env, m.ram_ptr, m.ram_size, ucx.CAL.old_exc_offset - ucx.CTX_HDR,
                          ctypes.cast(cpu.uc._uch, ctypes.c_void_p).value,
                          ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value,
                          UC_X86_REG_EFLAGS, L.BOOT_GDT_PA, _errcode_mask, 0, 0)
        self._addr = ctypes.addressof(self.t)
        self._fn = _native.lib.ftemu_deliver

    def deliver(self, vector: int, error: int, soft: bool) -> bool:
        """Deliver in C; False if C left it to the Python path (nothing changed then)."""
        return self._fn(self._addr, vector, error, soft) == 0

    def hook_syscall(self, uc, host) -> object:
        """Make deliver.c's ``ftemu_syscall`` the SYSCALL hook; ``host(self)`` does a syscall
        the Python way where C does not (the first, which reads the MSRs, and any whose
        instruction C cannot read) and must call ``syscall_msrs``. Returns what must stay alive as
        long as the hook: the callback, which holds this object (the hook's user data points
        into it, whoever else drops it)."""
        cb = HOST_FN(lambda: host(self))
        self.t.syscall_host = ctypes.cast(cb, ctypes.c_void_p).value
        ucx.add_insn_hook(uc, ctypes.cast(_native.lib.ftemu_syscall, ctypes.c_void_p), UC_X86_INS_SYSCALL,
                          self._addr)
        return cb

    def syscall_msrs(self, star: int, lstar: int, fmask: int) -> None:
        """The SYSCALL MSRs, as the host read them at the first syscall."""
        self.t.star, self.t.lstar, self.t.fmask, self.t.msr_valid = star, lstar, fmask, 1

    def hooks_off(self, off: bool) -> None:
        """Ignore the instruction hooks C answers (the rest of a refused in/out's block)."""
        self.t.hooks_off = off


def attach_native(cpu: "VCpu", env: int) -> NativeDelivery | None:
    """The native delivery for ``cpu`` if deliver.c is built and this engine's CPU state is
    laid out as it expects (CR3 where deliver.c reads it), else None."""
    if not native_available():
        return None
    cr3 = ctypes.c_uint64.from_address(env + ENV_CR3)
    before = cpu.cr3()
    cpu.regs.write(UC_X86_REG_CR3, 0x5000)          # a probe only this field can follow
    found = cr3.value == 0x5000
    cpu.regs.write(UC_X86_REG_CR3, before)
    return NativeDelivery(cpu, env) if found else None
