"""What ftrace's NOP sites cost when nothing is traced: the guest kernel built with
``-pg -mfentry -mrecord-mcount`` (every site a 5-byte NOP after boot) beside the same kernel
built without -pg, side by side in one run.

Two workloads, each as many interleaved pairs (the order alternates within a pair, so a
slow phase of the shared host hits both kernels alike), timed by this thread's CPU time:
- ``bench_fib`` through ``Machine.call``: a traced call every ~19 instructions, the densest
  traced-call load the kernel has (the worst case for sites);
- the busy guest under ``Machine.run`` (bench=1): the whole kernel at work (timer
  interrupts, the tick, the scheduler, softirqs, RCU, the benchd thread), compared as
  bench_fib iterations per CPU second.

Each figure is the ratio -pg / without -pg: min / median / max of the pairs, the quartiles,
and a 95% confidence interval for the median (order statistics, no assumption about the
noise's shape). The pairs are spread over several freshly booted pairs of machines
(``--instances``): one machine's translation cache and host memory layout can make it run
~10% faster or slower than its twin for its whole life, which interleaving cannot average
out; the median of each instance is printed too. The instructions one call retires on each kernel are printed too (exact:
deterministic mode counts them), which says what the sites add.

Run: python tools/bench/bench_nop_sites.py [--pairs 60] [--instances 3]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

from common import row, verdict

from emu import Machine, kbuild

FIB_N = 26                  # ~3.7M instructions a call: long enough to time, short enough to repeat
RUN_MS = 100                # busy-guest samples, virtual ms (~250 iterations)
GOAL = 1.02


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free 95% confidence interval for the median (binomial order statistics)."""
    q, n = sorted(values), len(values)
    half = z * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return q[lo], q[hi]


def report(label: str, ratios: list[float]) -> None:
    q, n = sorted(ratios), len(ratios)
    lo, hi = median_ci(ratios)
    med = statistics.median(ratios)
    row(label, f"{q[0]:.3f} / {med:.3f} / {q[-1]:.3f}",
        verdict(med <= GOAL) + f" goal <= {GOAL:g}")
    row("  quartiles; 95% interval of the median",
        f"{q[n // 4]:.3f}-{q[3 * n // 4]:.3f}; {lo:.3f}-{hi:.3f}")


def pairs(n: int, pg: Callable[[], float], nopg: Callable[[], float]) -> list[float]:
    """``n`` ratios pg()/nopg() of costs measured back to back, in alternating order."""
    out = []
    for i in range(n):
        if i % 2:
            b, a = nopg(), pg()
        else:
            a, b = pg(), nopg()
        out.append(a / b)
    return out


def cpu_seconds(fn: Callable[[], object]) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def busy(kernel: str) -> Machine:
    m = Machine(cpus=1, kernel=kbuild.kernel_path(kernel), cmdline="console=ttyS0 bench=1")
    m.boot()
    m.run(ms=5)
    return m


def seconds_per_iteration(m: Machine) -> float:
    """CPU seconds per bench_fib iteration the busy guest finishes in ``m.run(RUN_MS)``."""
    addr = m.symbol_address("bench_iterations")
    before = m.read_u64(addr)
    t = cpu_seconds(lambda: m.run(ms=RUN_MS))
    return t / max(m.read_u64(addr) - before, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--instances", type=int, default=3)
    args = ap.parse_args()
    n, k = args.pairs, max(args.instances, 1)
    call_r, run_r, per_instance, insns, sites = [], [], [], [], 0
    for _ in range(k):
        pg, nopg = busy("kernel"), busy("kernel-nopg")
        sites = len(pg.ftrace.records)
        insns = []
        for m in (pg, nopg):
            m.call("bench_fib", FIB_N)
            insns.append(m.last_call_instructions)
        calls = [lambda m=m: cpu_seconds(lambda: m.call("bench_fib", FIB_N)) for m in (pg, nopg)]
        these = pairs(max(n // k, 1), *calls)
        per_instance.append(statistics.median(these))
        call_r += these
        run_r += pairs(max(n // k // 2, 3), lambda: seconds_per_iteration(pg),
                       lambda: seconds_per_iteration(nopg))
    print(f"NOP sites vs the kernel without -pg: min / median / max of {len(call_r)} interleaved "
          f"pairs over {k} pairs of machines (CPU time; {sites} sites, all NOPs)")
    report(f"bench_fib({FIB_N}) through Machine.call, -pg / without", call_r)
    row("  median of each pair of machines", " ".join(f"{x:.3f}" for x in per_instance))
    extra = insns[0] - insns[1]
    row("  instructions a call retires, -pg / without", f"{insns[0]} / {insns[1]}",
        f"(+{extra}: {extra / insns[1]:.1%}, one NOP per traced call)")
    report("busy guest under Machine.run, CPU s per iteration", run_r)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"  ({time.perf_counter() - t0:.0f} s)")
