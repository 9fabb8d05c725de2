"""Interrupt and exception delivery through the guest's IDT, done by the host.

Unicorn never vectors through the IDT itself, so this module does what a 64-bit CPU does:
read the gate, check its DPL for software interrupts, pick the stack (TSS.RSP0 on a privilege
change, or an IST slot), align it, push SS, RSP, RFLAGS, CS, RIP and an error code, clear IF
for interrupt gates, and switch CS/SS (including the hidden state Unicorn keeps) to the gate's.
The guest's own ``iretq`` undoes it natively.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import ucx
from .errors import TripleFault
from .paging import PageFault

if TYPE_CHECKING:
    from .cpu import VCpu

ERRCODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
T_DF, T_GP = 8, 13
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
    if vector * 16 + 15 > idt_limit:
        raise DeliveryFault(T_GP, vector * 8 + 2)
    cr3 = cpu.cr3()
    try:
        lo, sel, ist, attr, mid, hi, _ = _gate.unpack(cpu.machine.walker.read(cr3, idt + vector * 16, 16))
    except PageFault:
        raise DeliveryFault(T_DF, 0) from None
    if not attr & 0x80:
        raise DeliveryFault(T_GP, vector * 8 + 2)
    dpl, gtype = (attr >> 5) & 3, attr & 0xF
    cpl = _u64.unpack_from(buf, ucx.CTX_HFLAGS)[0] & ucx.HF_CPL_MASK
    if soft and dpl < cpl:
        raise DeliveryFault(T_GP, vector * 8 + 2)
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
