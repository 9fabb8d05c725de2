"""Snapshots of a whole machine: the shared RAM buffer, every CPU's context and the devices.

Unicorn's own memory snapshots are copy-on-write and silently break the RAM sharing between
vCPUs, so the buffer itself is copied (about 3 ms back for 32 MiB)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unicorn.x86_const import UC_X86_REG_CR3

if TYPE_CHECKING:
    from .machine import Machine


@dataclass
class Snapshot:
    """Everything needed to continue a machine exactly from one moment."""
    ram: bytes
    cpus: list[tuple]
    now: int
    devices: dict[str, Any] = field(default_factory=dict)


def take(m: "Machine") -> Snapshot:
    """Capture RAM, every CPU and the devices."""
    cpus = [(c.uc.context_save(), c.state, c.apic.state(), c.startup_pending, c.instructions)
            for c in m.cpus]
    dev = {"serial": m.serial.state(), "execmem": m.execmem.state(),
           "exit": m.exit_code, "nmi": m._next_nmi,
           "rng": m._rng.getstate() if m._rng else None,
           "participants": [p.snapshot_state() for p in m.snapshot_participants]}
    return Snapshot(bytes(m.ram), cpus, m.now, dev)


def restore(m: "Machine", snap: Snapshot) -> None:
    """Continue from ``snap`` exactly as the machine would have from that moment."""
    m.ram[:] = snap.ram
    for c, (ctx, state, apic, startup, insns) in zip(m.cpus, snap.cpus):
        c.uc.context_restore(ctx)
        c.uc.ctl_flush_tb()
        c.uc.reg_write(UC_X86_REG_CR3, c.uc.reg_read(UC_X86_REG_CR3))   # flushes the TLB
        c.state, c.startup_pending, c.instructions = state, startup, insns
        c.apic.set_state(apic)
    dev = snap.devices
    m.serial.set_state(dev["serial"])
    m.execmem.set_state(dev["execmem"])
    m.exit_code, m._next_nmi = dev["exit"], dev["nmi"]
    if m._rng is not None and dev["rng"] is not None:
        m._rng.setstate(dev["rng"])
    for p, st in zip(m.snapshot_participants, dev["participants"]):
        p.restore_state(st)
    m.walker.flush()
    m._gdt_flags.clear()
    m.now = snap.now
