"""Machine benchmarks: boot-to-ready time, guest speed under Machine vs raw Unicorn running
the same guest code without our hooks (deterministic and free-running), snapshot/restore.

Run: python tools/bench/bench_machine.py
"""
from __future__ import annotations

import ctypes

from common import row, timed, verdict
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc

from emu import Machine

FIB_N = 18


def raw_unicorn_run(m: Machine, func: int, arg: int) -> tuple[float, int]:
    """The same guest function on a bare Unicorn (no hooks at all) over a copy of the RAM and
    of CPU 0's context: the peer our machine is measured against."""
    buf = ctypes.create_string_buffer(bytes(m.ram), m.ram_size)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map_ptr(0, m.ram_size, UC_PROT_ALL, ctypes.addressof(buf))
    uc.context_restore(m.cpus[0].uc.context_save())
    from unicorn.x86_const import UC_X86_REG_RDI, UC_X86_REG_RSP
    rsp = (m.cpus[0].stack_pointer() - 512) & ~0xF
    ret = m.call_return_va
    uc.mem_write(m.walker.translate(m.cpus[0].cr3(), rsp - 8), ret.to_bytes(8, "little"))
    def once() -> None:
        uc.reg_write(UC_X86_REG_RSP, rsp - 8)
        uc.reg_write(UC_X86_REG_RDI, arg)
        uc.emu_start(func, ret)
    once()                                  # translate first, as the machine has
    return timed(once, 5), 0


def busy_machine(deterministic: bool) -> Machine:
    m = Machine(cpus=1, cmdline="console=ttyS0 bench=1", deterministic=deterministic)
    m.boot()
    return m


def insns_of_one_call(m: Machine, func: str, arg: int) -> int:
    """Instructions one call runs, counted by the deterministic machine."""
    m.call(func, arg)
    return m.last_call_instructions


def main() -> None:
    print("ftemu machine benchmarks (medians; ratios measured side by side in this run)")
    Machine(cpus=2).boot()                                   # build and warm the caches
    boot = timed(lambda: Machine(cpus=2).boot(), 5)
    row("boot to ready (Machine(cpus=2) + boot())", f"{boot * 1e3:.0f} ms",
        verdict(boot <= 1.0) + " target <= 1 s")

    m = busy_machine(True)
    per_iter = insns_of_one_call(m, "bench_fib", FIB_N)
    raw_t, _ = raw_unicorn_run(m, m.symbol_address("bench_fib"), FIB_N)
    raw_ips = per_iter / raw_t
    row(f"raw Unicorn, no hooks: bench_fib({FIB_N})", f"{raw_ips / 1e6:.1f} MIPS")
    call_t = timed(lambda: m.call("bench_fib", FIB_N), 5)
    row("Machine.call (one counted emu_start), same code", f"{per_iter / call_t / 1e6:.1f} MIPS",
        f"ratio {per_iter / call_t / raw_ips:.2f}")
    iterations = m.symbol_address("bench_iterations")
    share = 1.0
    for det, target in ((True, 0.6), (False, 0.9)):
        mm = busy_machine(det)
        done = []

        def run() -> None:
            before, insns = mm.read_u64(iterations), mm.cpus[0].instructions
            mm.run(ms=100)
            done.append((mm.read_u64(iterations) - before, mm.cpus[0].instructions - insns))
        t = timed(run, 3)
        iters, insns = sorted(done)[1]
        if det:
            ips = insns / t                       # every instruction, counted exactly
            share = iters * per_iter / insns      # the busy loop's share of all guest work
        else:                                     # no counter: the busy loop's work, scaled
            ips = iters * per_iter / share / t
        label = "deterministic" if det else "free-running (estimated)"
        row(f"Machine.run, busy guest, {label}", f"{ips / 1e6:.1f} MIPS",
            f"ratio {ips / raw_ips:.2f} " + verdict(ips / raw_ips >= target) + f" target >= {target}")
    row("  (share of guest work in the busy loop)", f"{share * 100:.0f} %")
    snap_t = timed(lambda: m.snapshot(), 5)
    snap = m.snapshot()
    restore_t = timed(lambda: m.restore(snap), 5)
    row(f"snapshot ({m.ram_size >> 20} MiB RAM, {len(m.cpus)} CPU)", f"{snap_t * 1e3:.2f} ms")
    row("restore", f"{restore_t * 1e3:.2f} ms", verdict(restore_t <= 0.005) + " target <= 5 ms")


if __name__ == "__main__":
    main()
