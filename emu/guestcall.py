"""Setting up a call of a guest function from the host (Machine.call): kernel mode, kernel
stack and GS, interrupts off, returning to the machine's call-return stub."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_RCX, UC_X86_REG_RDI,
                               UC_X86_REG_RDX, UC_X86_REG_RIP, UC_X86_REG_RSI)

from unicorn import UcError

from . import memlayout as L
from . import ucx
from .errors import BudgetExceeded, EmuError

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

ARG_REGS = (UC_X86_REG_RDI, UC_X86_REG_RSI, UC_X86_REG_RDX, UC_X86_REG_RCX, UC_X86_REG_R8, UC_X86_REG_R9)
RFLAGS_IF = 1 << 9
MSR_GS_BASE, MSR_KERNEL_GS_BASE = 0xC0000101, 0xC0000102
KERNEL_HALF = 0xFFFF800000000000
CALL_CHUNK = 1_000_000          # instructions between looks at Ctrl-C (about 10 ms)


def enter_kernel_call(m: "Machine", c: "VCpu", addr: int, args: tuple[int, ...]) -> None:
    """Set up a call frame (kernel mode, kernel stack, kernel GS, IF=0) returning to the
    stub. A CPU in user mode, or in the kernel's entry/exit window where the stack or GS
    are still the user's, is first moved to its TSS.RSP0 stack and kernel GS."""
    c.uc.context_update(c.ctx)
    buf = c.ctx_buf
    cpl = struct.unpack_from("<I", buf, ucx.CTX_HFLAGS)[0] & ucx.HF_CPL_MASK
    rsp = struct.unpack_from("<Q", buf, ucx.CTX_REGS + 8 * 4)[0] - 256
    if cpl == 3 or rsp < KERNEL_HALF:
        tss = struct.unpack_from("<Q", buf, ucx.CTX_TR_BASE)[0]
        rsp = struct.unpack("<Q", m.walker.read(c.cr3(), tss + 4, 8))[0]
    if cpl == 3:
        c.load_cs_ss(buf, L.KERNEL_CS, 0, 0)
    rsp = (rsp & ~0xF) - 8
    struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, rsp)
    eflags = struct.unpack_from("<Q", buf, ucx.CTX_EFLAGS)[0]
    struct.pack_into("<Q", buf, ucx.CTX_EFLAGS, eflags & ~RFLAGS_IF)
    c.uc.context_restore(c.ctx)
    gs, kgs = c.regs.msr_read(MSR_GS_BASE), c.regs.msr_read(MSR_KERNEL_GS_BASE)
    if gs < KERNEL_HALF <= kgs:                     # the user's GS is loaded: swapgs
        c.regs.msr_write(MSR_GS_BASE, kgs)
        c.regs.msr_write(MSR_KERNEL_GS_BASE, gs)
    m.walker.write(c.cr3(), rsp, struct.pack("<Q", m.call_return_va))
    for reg, value in zip(ARG_REGS, args):
        c.regs.write(reg, value)
    c.regs.write(UC_X86_REG_RIP, addr)


def run_to_return(m: "Machine", c: "VCpu", addr: int, max_insns: int, ctrlc) -> int:
    """Run the call set up by enter_kernel_call until it returns to the stub; returns the
    instructions it took. It runs in chunks so that Ctrl-C (``ctrlc.check()``) is seen
    between them; the vCPU's clock (``slice_start``, set by the caller) goes on across them."""
    done = 0
    while True:
        chunk = min(max_insns - done, CALL_CHUNK)
        c.stop_rip = None                   # errors name this run's instruction, not a stale one
        try:
            ran, exhausted = c.emu_counted(c.rip(), m.call_return_va, chunk)
        except UcError as e:
            raise c.fatal(EmuError, f"unicorn stopped in call to {m.lookup(addr)}: {e}") from None
        done += ran
        c.slice_start += ran * L.NS_PER_INSN
        c.after_emu_start()
        m._check_exit()
        if c.rip() == m.call_return_va:
            return done
        if not exhausted or done >= max_insns:
            raise c.fatal(BudgetExceeded, f"{m.lookup(addr)} did not return within {max_insns} instructions")
        ctrlc.check()
