"""Snapshots of a whole machine: the shared RAM buffer, every CPU's context and the devices.

RAM is kept as a `RamImage` (ramimage.py) that a restore maps the machine's RAM onto
copy-on-write: it costs in proportion to the pages the guest touched since the last
restore, not to the RAM size. Taking a snapshot only copies RAM out, so a snapshot thrown
away is freed then, not inside the next restore."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unicorn.x86_const import UC_X86_REG_CR3

from .ramimage import RamImage

if TYPE_CHECKING:
    from .machine import Machine


@dataclass
class Snapshot:
    """Everything needed to continue a machine exactly from one moment."""
    ram: RamImage
    cpus: list[tuple]
    now: int
    devices: dict[str, Any] = field(default_factory=dict)
    shape: tuple = ()         # (cpus, RAM bytes, kernel digest) of the machine it came from


def shape(m: "Machine") -> tuple:
    """What a snapshot must share with the machine it is restored into."""
    return len(m.cpus), m.ram_size, m.image.digest


def take(m: "Machine") -> Snapshot:
    """Capture RAM, every CPU and the devices."""
    cpus = [(c.uc.context_save(), c.state, c.apic.state(), c.startup_pending, c.instructions,
             c.clock_ns) for c in m.cpus]
    dev = {"serial": m.serial.state(), "execmem": m.execmem.state(),
           "exit": m.exit_code, "nmi": m._next_nmi,
           "rng": m._rng.getstate() if m._rng else None,
           "participants": [p.snapshot_state() for p in m.snapshot_participants]}
    return Snapshot(RamImage(m.ram, m.ram_ptr, m.ram_image), cpus, m.now, dev, shape(m))


def restore(m: "Machine", snap: Snapshot) -> None:
    """Continue from ``snap`` exactly as the machine would have from that moment; a snapshot
    of another machine shape is refused (ValueError) before anything changes."""
    if not isinstance(snap, Snapshot):
        raise TypeError(f"restore needs a Snapshot, not {type(snap).__name__}")
    if snap.shape != shape(m):
        (cpus, ram, kernel), (my_cpus, my_ram, my_kernel) = (snap.shape or (None,) * 3), shape(m)
        raise ValueError(f"snapshot of a machine with {cpus} CPUs, {ram} bytes of RAM and kernel "
                         f"{str(kernel)[:12]} cannot be restored into one with {my_cpus} CPUs, "
                         f"{my_ram} bytes and kernel {my_kernel[:12]}")
    m.ram_image = snap.ram if snap.ram.map_over(m.ram_ptr) else None
    for c, (ctx, state, apic, startup, insns, clock) in zip(m.cpus, snap.cpus):
        c.abandon_run()
        c.uc.context_restore(ctx)
        c.flush_tb()
        c.uc.reg_write(UC_X86_REG_CR3, c.uc.reg_read(UC_X86_REG_CR3))   # flushes the TLB
        c.state, c.startup_pending, c.instructions, c.clock_ns = state, startup, insns, clock
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
    m.now = snap.now
