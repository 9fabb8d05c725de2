"""Machine benchmarks, each figure min / median / max over interleaved samples of one run:

- guest speed against raw Unicorn (no hooks at all) over a copy of the booted machine's RAM
  and CPU state, i.e. the same code with the same page attributes (text X, data NX):
  Machine.call of bench_fib, and Machine.run of the busy guest (deterministic and
  free-running) beside the raw engine running the same benchd thread (work compared as
  bench_fib iterations per CPU second; the machine also takes the guest's timer interrupts
  and runs its tick, which raw Unicorn never does); the same raw peer with every page made RWX (the
  mappings the guest had before: the gain stays visible); raw Unicorn with a do-nothing
  native block hook (Unicorn's inline hook call per block: no block hook design beats it) and
  with ftemu's native block counter alone; and raw Unicorn translating without its exit check
  after every load and store (emu/kick.py), as ftemu does wherever no stop must land inside a
  block, alone (free-running's peer) and with the do-nothing block hook (deterministic's);
- a user task calling getpid(2) in a loop (the guest's call_getpid): syscalls per CPU second
  with the kernel entered in C (emu/native/deliver.c) and with trap.py's Python path (the
  peer a home-made Unicorn script would have: a Python SYSCALL hook);
- boot to ready; snapshot, and restore at 64 MiB followed by the first 1 ms of guest time
  (which pays for retranslating the code the restore dropped).

Times are the benchmarking thread's CPU time (time.thread_time): on a shared, loaded host
wall time mostly measures the other processes. Free-running virtual time follows wall time
as always.

Run: python tools/bench/bench_machine.py [--samples 15] [--speed-only]
"""
from __future__ import annotations

import argparse
from statistics import median
import ctypes
import struct
import time

from common import min_med_max, row, verdict
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RIP, UC_X86_REG_RSP

from emu import Machine, blockcount, kick, trap
from emu.paging import ADDR_MASK

FIB_N = 24                  # about 1.5M instructions a call: the per-call setup is noise
RUN_MS = 60                 # Machine.run samples (virtual ms); the raw peers then run for the
                            # CPU time that sample took (equal exposure to the host's noise)
FREE_MS = 100               # free-running samples: wall-clock virtual time, a loaded host gives
                            # the process only part of it, so longer samples (whole iterations)
QUANTUM = 200_000
PTE_P, PTE_PS, PTE_NX = 1, 0x80, 1 << 63


def cpu_clock(fn) -> float:
    """CPU seconds of this thread spent in ``fn()``."""
    t = time.thread_time()
    fn()
    return time.thread_time() - t


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
    """A bare Unicorn over a copy of ``m``'s RAM and CPU 0 (no hooks, unless ``block_hook``:
    "counter", ftemu's native block counter alone; "empty", a native block hook that does
    nothing). ``checks=False`` translates without Unicorn's exit checks after every load and
    store (emu/kick.py), as free-running ftemu does. ``call()`` runs bench_fib(FIB_N);
    ``run_for(s)`` goes on with the interrupted benchd thread (no interrupts: just its loop)
    and returns the bench_fib iterations it finished per second."""

    def __init__(self, m: Machine, rwx: bool = False, block_hook: str = "", checks: bool = True) -> None:
        self.buf = bytearray(m.ram)
        cr3 = m.cpus[0].cr3()
        if rwx:
            clear_nx(self.buf, cr3)
        self.cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map_ptr(0, m.ram_size, UC_PROT_ALL, ctypes.addressof(self.cbuf))
        self.uc.context_restore(m.cpus[0].uc.context_save())
        self.counter = None
        if block_hook == "counter":
            self.counter = blockcount.BlockCounter(self.uc, lambda va, n: m.walker.read(cr3, va, n))
            self.counter.begin(0)
        elif block_hook == "empty":
            blockcount.empty_block_hook(self.uc)
        if not checks:
            kick.Kicker(self.uc).checks(False)
        self.thread = self.uc.context_save()          # where benchd was interrupted
        self.rsp = (m.cpus[0].stack_pointer() - 512) & ~0xF
        self.ret = m.call_return_va
        self.ret_pa = m.walker.translate(cr3, self.rsp - 8)
        self.func = m.symbol_address("bench_fib")
        self.iterations = m.walker.translate(cr3, m.symbol_address("bench_iterations"))
        self.call()                                 # translate first, as the machine has

    def call(self) -> None:
        saved = self.uc.context_save()
        self.uc.context_restore(self.thread)
        # benchd's own runs (run_for) use this stack too: the return address goes in each time
        self.buf[self.ret_pa:self.ret_pa + 8] = self.ret.to_bytes(8, "little")
        self.uc.reg_write(UC_X86_REG_RSP, self.rsp - 8)
        self.uc.reg_write(UC_X86_REG_RDI, FIB_N)
        self.uc.emu_start(self.func, self.ret)
        self.uc.context_restore(saved)

    def run_for(self, seconds: float) -> float:
        before = self.done()
        t = cpu_clock(lambda: self.uc.emu_start(self.uc.reg_read(UC_X86_REG_RIP), 0,
                                                timeout=int(seconds * 1e6)))
        return (self.done() - before) / t

    def done(self) -> int:
        return struct.unpack_from("<Q", self.buf, self.iterations)[0]


def busy_machine(deterministic: bool) -> Machine:
    """One busy vCPU. Slices of up to QUANTUM instructions (timer events still cut them):
    with one vCPU the quantum only sets how often the host loop runs."""
    m = Machine(cpus=1, cmdline="console=ttyS0 bench=1", deterministic=deterministic,
                quantum=QUANTUM)
    m.boot()
    m.run(ms=5)
    return m


def machine_rate(m: Machine, ms: float) -> tuple[float, float]:
    """bench_fib iterations the busy guest finishes per CPU second of ``m.run(ms)``, and
    those CPU seconds."""
    addr = m.symbol_address("bench_iterations")
    before = m.read_u64(addr)
    t = cpu_clock(lambda: m.run(ms=ms))
    return (m.read_u64(addr) - before) / t, t


def syscall_machine(native: bool) -> Machine:
    """One vCPU running call_getpid, entering the kernel in C or (``native=False``) in Python."""
    real = trap.native_available
    if not native:
        trap.native_available = lambda: False          # this machine's vCPUs only
    try:
        m = Machine(cpus=1)
    finally:
        trap.native_available = real
    m.boot()
    m.call("user_spawn", m.symbol_address("uprog_call_getpid_name"))
    m.run(ms=5)
    return m


def syscall_rate(m: Machine, ms: float) -> float:
    """getpid calls per CPU second of ``m.run(ms)`` (from the kernel's per-CPU counters)."""
    before = m.stats()["total"]["syscalls"]
    t = cpu_clock(lambda: m.run(ms=ms))
    return (m.stats()["total"]["syscalls"] - before) / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--speed-only", action="store_true", help="skip boot, snapshot and restore")
    args = ap.parse_args()
    n = args.samples
    native = "native block counter" if blockcount.available() else \
        f"count= fallback ({blockcount.why_unavailable() or 'FTEMU_NATIVE=0'})"
    print(f"ftemu machine benchmarks ({native}); min / median / max of {n} interleaved samples")

    det, free = busy_machine(True), busy_machine(False)
    det.call("bench_fib", FIB_N)
    insns = det.last_call_instructions
    nx, rwx = RawPeer(det), RawPeer(det, rwx=True)
    hooked, empty = RawPeer(det, block_hook="counter"), RawPeer(det, block_hook="empty")
    unchecked, floor = RawPeer(det, checks=False), RawPeer(det, block_hook="empty", checks=False)
    raw_t, rwx_t, hook_t, empty_t, floor_t, call_t = [], [], [], [], [], []
    raw_rate, unchecked_rate, det_rate, free_rate = [], [], [], []
    for _ in range(n):
        raw_t.append(cpu_clock(nx.call))
        rwx_t.append(cpu_clock(rwx.call))
        hook_t.append(cpu_clock(hooked.call))
        empty_t.append(cpu_clock(empty.call))
        floor_t.append(cpu_clock(floor.call))
        call_t.append(cpu_clock(lambda: det.call("bench_fib", FIB_N)))
        rate, took = machine_rate(det, RUN_MS)
        det_rate.append(rate)
        raw_rate.append(nx.run_for(took))
        unchecked_rate.append(unchecked.run_for(took))
        free_rate.append(machine_rate(free, FREE_MS)[0])

    def ratio(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b)]
    mips = lambda v: min_med_max([insns / x / 1e6 for x in v], "{:.0f}") + " MIPS"  # noqa: E731
    row(f"raw Unicorn, bench_fib({FIB_N}), text X / data NX", mips(raw_t))
    row("raw Unicorn, same code, every page RWX", mips(rwx_t))
    row("raw Unicorn + an empty native block hook / raw", min_med_max(ratio(raw_t, empty_t)),
        "(the floor of any block hook)")
    row("raw Unicorn + ftemu's native block counter alone / raw", min_med_max(ratio(raw_t, hook_t)))
    row("raw Unicorn without exit checks + an empty block hook / raw", min_med_max(ratio(raw_t, floor_t)),
        "(deterministic's design floor)")
    def goal_row(label: str, r: list[float], goal: float) -> None:
        row(label, min_med_max(r), verdict(median(r) >= goal) + f" goal >= {goal:g}")
    goal_row("deterministic: Machine.call bench_fib / raw (same code+pages)", ratio(raw_t, call_t), 0.85)
    row("  deterministic / its floor (the row above it)", min_med_max(ratio(floor_t, call_t)))
    goal_row("deterministic / raw Unicorn on all-RWX mappings", ratio(rwx_t, call_t), 4)
    row("raw Unicorn running benchd (bench_fib(18) iterations/s)", min_med_max(raw_rate, "{:.0f}"))
    goal_row("  Machine.run busy guest, deterministic / raw", ratio(det_rate, raw_rate), 0.85)
    row("  raw Unicorn without exit checks / raw", min_med_max(ratio(unchecked_rate, raw_rate)),
        "(what free-running translates)")
    goal_row("  Machine.run busy guest, free-running / raw", ratio(free_rate, raw_rate), 0.95)
    row("  free-running / raw without exit checks", min_med_max(ratio(free_rate, unchecked_rate)))
    row("  free-running / deterministic (same guest)", min_med_max(ratio(free_rate, det_rate)))

    in_c, in_py = syscall_machine(True), syscall_machine(False)
    c_rate, py_rate = [], []
    for _ in range(n):
        c_rate.append(syscall_rate(in_c, 20))
        py_rate.append(syscall_rate(in_py, 20))
    row("user getpid(2) loop, kernel entered in C (syscalls/s)", min_med_max(c_rate, "{:.0f}"))
    row("  in C / in Python (trap.py, a Python SYSCALL hook)", min_med_max(ratio(c_rate, py_rate)))

    if args.speed_only:
        return
    boots = [cpu_clock(lambda: Machine(cpus=2).boot()) for _ in range(n)]
    row("boot to ready (Machine(cpus=2) + boot())", min_med_max([b * 1e3 for b in boots], "{:.0f}") + " ms",
        verdict(sorted(boots)[n // 2] <= 1.0) + " goal <= 1 s")

    big = Machine(cpus=2, memory_mb=64, cmdline="console=ttyS0 bench=1")
    big.boot()
    snap = big.snapshot()
    snaps, restores, firsts, steady = [], [], [], []
    for _ in range(n):
        snaps.append(cpu_clock(big.snapshot))
        restores.append(cpu_clock(lambda: big.restore(snap)))
        firsts.append(cpu_clock(lambda: big.run(ms=1)))     # retranslates what restore dropped
        steady.append(cpu_clock(lambda: big.run(ms=1)))
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
