"""A local APIC per CPU: a timer counting virtual ns, inter-processor interrupts, NMIs.

Registers are the xAPIC's (memlayout APIC_*), reached by the guest through an MMIO page at
LAPIC_PA. Pending fixed interrupts are one bit per vector, as in the IRR.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import memlayout as L

if TYPE_CHECKING:
    from .cpu import VCpu

NEVER = 1 << 62


class LocalApic:
    """One CPU's APIC: timer state, pending vectors and NMI, and the ICR."""

    def __init__(self, cpu: "VCpu") -> None:
        self.cpu = cpu
        self.reset()

    def reset(self) -> None:
        self.irr: set[int] = set()
        self.nmi_pending = False
        self.init_pending = False
        self.lvt_timer = L.APIC_LVT_MASKED
        self.timer_init = 0
        self.deadline = NEVER
        self.icr_hi = 0
        self.svr = 0

    # ---- timer -------------------------------------------------------------
    def _start_timer(self, count: int) -> None:
        self.timer_init = count
        self.deadline = self.cpu.now() + count if count else NEVER

    def expire(self, now: int) -> None:
        """Raise the timer vector if its deadline has come, and re-arm a periodic timer."""
        if self.deadline > now:
            return
        if not self.lvt_timer & L.APIC_LVT_MASKED:
            self.irr.add(self.lvt_timer & 0xFF)
        if self.lvt_timer & L.APIC_TIMER_PERIODIC and self.timer_init:
            missed = (now - self.deadline) // self.timer_init + 1
            self.deadline += missed * self.timer_init
        else:
            self.deadline = NEVER

    # ---- MMIO --------------------------------------------------------------
    def mmio_read(self, offset: int) -> int:
        if offset == L.APIC_ID:
            return self.cpu.index << 24
        if offset == L.APIC_LVT_TIMER:
            return self.lvt_timer
        if offset == L.APIC_TIMER_INIT:
            return self.timer_init
        if offset == L.APIC_TIMER_CUR:
            return 0 if self.deadline == NEVER else max(0, self.deadline - self.cpu.now())
        if offset == L.APIC_ICR_HI:
            return self.icr_hi
        if offset == L.APIC_SVR:
            return self.svr
        return 0

    def mmio_write(self, offset: int, value: int) -> None:
        if offset == L.APIC_LVT_TIMER:
            self.lvt_timer = value
        elif offset == L.APIC_TIMER_INIT:
            self._start_timer(value)
        elif offset == L.APIC_ICR_HI:
            self.icr_hi = value
        elif offset == L.APIC_ICR_LO:
            self._send_ipi(value)
        elif offset == L.APIC_SVR:
            self.svr = value

    def _send_ipi(self, icr: int) -> None:
        shorthand = icr & 0xC0000
        me = self.cpu.index
        cpus = self.cpu.machine.cpus
        if shorthand == L.APIC_DEST_SELF:
            targets = [me]
        elif shorthand == L.APIC_DEST_ALL:
            targets = list(range(len(cpus)))
        elif shorthand == L.APIC_DEST_OTHERS:
            targets = [i for i in range(len(cpus)) if i != me]
        else:
            dest = self.icr_hi >> 24
            targets = [dest] if dest < len(cpus) else []
        mode = icr & 0x700
        for t in targets:
            cpus[t].apic.accept(mode, icr & 0xFF)
        if me in targets:
            self.cpu.request_stop()

    def accept(self, mode: int, vector: int) -> None:
        """An IPI arrives at this CPU."""
        if mode == L.APIC_DM_FIXED:
            self.irr.add(vector)
        elif mode == L.APIC_DM_NMI:
            self.nmi_pending = True
        elif mode == L.APIC_DM_INIT:
            self.init_pending = True
        elif mode == L.APIC_DM_STARTUP and self.init_pending:
            self.init_pending = False
            self.cpu.startup_pending = True

    def state(self) -> tuple:
        return (frozenset(self.irr), self.nmi_pending, self.init_pending, self.lvt_timer,
                self.timer_init, self.deadline, self.icr_hi, self.svr)

    def set_state(self, st: tuple) -> None:
        (irr, self.nmi_pending, self.init_pending, self.lvt_timer, self.timer_init,
         self.deadline, self.icr_hi, self.svr) = st
        self.irr = set(irr)
