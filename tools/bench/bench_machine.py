"""Machine benchmarks, each figure min / median / max over interleaved samples of one run:

- guest speed: bench_fib on a bare Unicorn (no hooks) over a copy of the booted machine's RAM
  and CPU state, i.e. the same code with the same page attributes (text X, data NX), against
  Machine.call (one counted run), Machine.run of the busy guest (deterministic, and
  free-running), and against bare Unicorn on the same copy with every page made RWX (the
  mappings the guest had before: the gain stays visible);
- boot to ready; snapshot, and restore at 64 MiB followed by the first 1 ms of guest time
  (which pays for retranslating the code the restore dropped).

Run: python tools/bench/bench_machine.py [--samples 7]
"""
from __future__ import annotations

import argparse
from statistics import median
import ctypes
import struct
import time

from common import clock, min_med_max, row, verdict
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RSP

from emu import Machine, blockcount
from emu.paging import ADDR_MASK

FIB_N = 22
QUANTUM = 200_000
PTE_P, PTE_PS, PTE_NX = 1, 0x80, 1 << 63


def clear_nx(ram: bytearray, cr3: int) -> None:
    """Make every kernel-half mapping of the page tables at ``cr3`` executable (in a copy)."""
    def walk(table: int, level: int) -> None:
        for i in range(512):
            at = table + 8 * i
            e = struct.unpack_from("<Q", ram, at)[0]
            if not e & PTE_P:
                continue
            struct.pack_into("<Q", ram, at, e & ~PTE_NX)
            if level > 1 and not (level < 4 and e & PTE_PS):
                walk(e & ADDR_MASK, level - 1)
    pml4 = cr3 & ADDR_MASK
    for i in range(256, 512):
        e = struct.unpack_from("<Q", ram, pml4 + 8 * i)[0]
        if e & PTE_P:
            struct.pack_into("<Q", ram, pml4 + 8 * i, e & ~PTE_NX)
            walk(e & ADDR_MASK, 3)


class RawPeer:
    """bench_fib on a bare Unicorn over a copy of ``m``'s RAM and CPU 0 (no hooks at all)."""

    def __init__(self, m: Machine, rwx: bool) -> None:
        self.buf = bytearray(m.ram)
        if rwx:
            clear_nx(self.buf, m.cpus[0].cr3())
        self.cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map_ptr(0, m.ram_size, UC_PROT_ALL, ctypes.addressof(self.cbuf))
        self.uc.context_restore(m.cpus[0].uc.context_save())
        self.rsp = (m.cpus[0].stack_pointer() - 512) & ~0xF
        self.ret = m.call_return_va
        ret_pa = m.walker.translate(m.cpus[0].cr3(), self.rsp - 8)
        self.buf[ret_pa:ret_pa + 8] = self.ret.to_bytes(8, "little")
        self.func = m.symbol_address("bench_fib")
        self.run()                                  # translate first, as the machine has

    def run(self) -> None:
        self.uc.reg_write(UC_X86_REG_RSP, self.rsp - 8)
        self.uc.reg_write(UC_X86_REG_RDI, FIB_N)
        self.uc.emu_start(self.func, self.ret)


def busy_machine(deterministic: bool) -> Machine:
    """One busy vCPU. Slices of up to QUANTUM instructions (timer events still cut them):
    with one vCPU the quantum only sets how often the host loop runs."""
    m = Machine(cpus=1, cmdline="console=ttyS0 bench=1", deterministic=deterministic,
                quantum=QUANTUM)
    m.boot()
    m.run(ms=5)
    return m


def guest_ips(m: Machine, ms: float) -> float:
    """Instructions per host second of ``m.run(ms)`` (both modes count them exactly)."""
    before = m.cpus[0].instructions
    t = clock(lambda: m.run(ms=ms))
    return (m.cpus[0].instructions - before) / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=7)
    n = ap.parse_args().samples
    native = "native block counter" if blockcount.available() else \
        f"count= fallback ({blockcount.why_unavailable() or 'FTEMU_NATIVE=0'})"
    print(f"ftemu machine benchmarks ({native}); min / median / max of {n} interleaved samples")

    det, free = busy_machine(True), busy_machine(False)
    det.call("bench_fib", FIB_N)
    insns = det.last_call_instructions
    nx, rwx = RawPeer(det, rwx=False), RawPeer(det, rwx=True)
    raw_ips, rwx_ips, call_ips, det_ips, free_ips = [], [], [], [], []
    for _ in range(n):
        raw_ips.append(insns / clock(nx.run))
        rwx_ips.append(insns / clock(rwx.run))
        call_ips.append(insns / clock(lambda: det.call("bench_fib", FIB_N)))
        det_ips.append(guest_ips(det, 20))
        free_ips.append(guest_ips(free, 20))

    def ratio(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b)]
    mips = lambda v: min_med_max([x / 1e6 for x in v], "{:.0f}") + " MIPS"  # noqa: E731
    row(f"raw Unicorn, bench_fib({FIB_N}), text X / data NX", mips(raw_ips))
    row("raw Unicorn, same code, every page RWX", mips(rwx_ips))
    r = ratio(call_ips, raw_ips)
    row("deterministic: Machine.call bench_fib / raw (same code+pages)", min_med_max(r),
        verdict(median(r) >= 0.85) + " goal >= 0.85")
    r = ratio(call_ips, rwx_ips)
    row("deterministic / raw Unicorn on all-RWX mappings", min_med_max(r),
        verdict(median(r) >= 4) + " goal >= 4")
    row("Machine.run busy guest (whole guest), deterministic", mips(det_ips))
    row("Machine.run busy guest (whole guest), free-running", mips(free_ips))
    r = ratio(free_ips, raw_ips)
    row("  free-running / raw bench_fib (NOT the same code mix)", min_med_max(r),
        verdict(median(r) >= 0.95) + " goal >= 0.95 (no same-code peer yet)")
    row("  free-running / deterministic (same guest)", min_med_max(ratio(free_ips, det_ips)))

    boots = [clock(lambda: Machine(cpus=2).boot()) for _ in range(n)]
    row("boot to ready (Machine(cpus=2) + boot())", min_med_max([b * 1e3 for b in boots], "{:.0f}") + " ms",
        verdict(sorted(boots)[n // 2] <= 1.0) + " goal <= 1 s")

    big = Machine(cpus=2, memory_mb=64, cmdline="console=ttyS0 bench=1")
    big.boot()
    snap = big.snapshot()
    snaps, restores, firsts, steady = [], [], [], []
    for _ in range(n):
        snaps.append(clock(big.snapshot))
        restores.append(clock(lambda: big.restore(snap)))
        firsts.append(clock(lambda: big.run(ms=1)))     # retranslates what restore dropped
        steady.append(clock(lambda: big.run(ms=1)))
    ms = lambda v: min_med_max([x * 1e3 for x in v], "{:.2f}") + " ms"  # noqa: E731
    row("snapshot (64 MiB RAM, 2 CPUs)", ms(snaps))
    row("restore (64 MiB RAM, 2 CPUs)", ms(restores), verdict(sorted(restores)[n // 2] <= 0.005)
        + " goal <= 5 ms")
    row("  the first 1 ms of guest time after it", ms(firsts))
    row("  the next 1 ms (translations warm again)", ms(steady))
    row("  restore + first 1 ms", ms([a + b for a, b in zip(restores, firsts)]))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"  ({time.perf_counter() - t0:.0f} s)")
