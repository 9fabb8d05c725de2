"""Tracer benchmarks, side by side in one run: min / median / max of interleaved samples.

- Per traced call on bench_fib (one traced function, one event per call), each sample runs
  without tracing (before and after; the faster counts) beside runs with: the function
  tracer with the default ``local`` clock (the TSC, which the fast paths read from the
  vCPU's pvclock rather than with rdtsc) and with the ``counter`` clock (an atomic count),
  function_graph likewise (per entry+exit pair), and the fair naive peer: a lean Python
  UC_HOOK_CODE on the function's entry that records the same event as TRACE_FN (ip from its
  address argument, parent ip from the stack through a raw RSP read and a cached
  translation, RFLAGS, preempt_count, pid and the virtual time from the native block
  counter) in a list. Goals: function tracer <= 0.2 us per event and >= 8x cheaper than
  the peer; function_graph <= 0.5 us per pair.
- Every function traced while the guest runs on two CPUs with two busy threads (``bench=2``:
  bench_fib in a loop, the timer, the scheduler): guest slowdown (bench_fib loops finished
  per CPU second, untraced over traced) and events written per CPU second.
- Reading: formatting ``trace`` (lines per second) and draining every CPU's
  ``trace_pipe_raw`` (pages per second), each sample from a freshly filled buffer.

Times are this process's CPU time, not wall time: the machine is shared, and wall time
would count other processes' turns on its cores.

Run: python tools/bench/bench_tracers.py
"""
from __future__ import annotations

import os
import struct
import time

from common import min_med_max, row, verdict
from unicorn import UC_HOOK_CODE
from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_RSP

from emu import Machine
from emu import memlayout as L

FIB_N, SAMPLES = 20, 9
RUN_MS = 4                     # virtual time per all-functions sample
FILL_MS = 16                   # virtual time traced to fill the buffer for the reading rates
CONFIGS = [("function", "local"), ("function", "counter"),
           ("function_graph", "local"), ("function_graph", "counter")]


def clock(fn) -> float:
    """CPU seconds of one ``fn()``."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def med(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def us(values: list[float]) -> str:
    return min_med_max([v * 1e6 for v in values], "{:.3f}") + " us"


def fair_peer(m: Machine):
    """(install, remove, events): the naive tracer done well, recording what TRACE_FN holds."""
    cpu, fib = m.cpus[0], m.symbol_address("bench_fib")
    regs, ram, events, pages = cpu.regs, m.ram, [], {}
    u64, u32 = struct.Struct("<Q").unpack_from, struct.Struct("<I").unpack_from
    native = cpu.native

    def phys(va: int) -> int:
        page = va & ~0xFFF
        pa = pages.get(page)
        if pa is None:
            pa = pages[page] = m.walker.translate(cpu.cr3(), page)
        return pa + (va & 0xFFF)
    pcpu = phys(m.kernel.pcpu(0, 0))

    def entry(uc, address, size, ud):
        rsp = regs.read(UC_X86_REG_RSP)
        task = u64(ram, pcpu + L.PCPU_CURRENT)[0]
        events.append((address, u64(ram, phys(rsp))[0], regs.read(UC_X86_REG_EFLAGS),
                       u32(ram, pcpu + L.PCPU_PREEMPT_COUNT)[0], u32(ram, phys(task + L.TASK_PID))[0],
                       cpu.slice_start + native.retired(address) * L.NS_PER_INSN))
    handle = []

    def install() -> None:
        handle.append(cpu.uc.hook_add(UC_HOOK_CODE, entry, None, fib, fib))
        cpu.remove_cache(fib, fib + 1)

    def remove() -> None:
        cpu.uc.hook_del(handle.pop())
        cpu.remove_cache(fib, fib + 1)
    return install, remove, events


def per_call(m: Machine) -> tuple[int, dict[str, list[float]], list[float]]:
    """bench_fib's calls, extra seconds per traced call per configuration, and the peer's."""
    t = m.tracefs
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
    t.write("current_tracer", "function")
    t.write("trace", "")
    m.call("bench_fib", FIB_N)
    calls = int(t.read("per_cpu/cpu0/stats").split()[1])
    t.write("current_tracer", "nop")
    install, remove, events = fair_peer(m)
    out: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in CONFIGS}
    peer = []
    run = lambda: m.call("bench_fib", FIB_N)      # noqa: E731
    for _ in range(SAMPLES):
        before, traced = clock(run), {}
        for tracer, clk in CONFIGS:
            t.write("trace_clock", clk)
            t.write("current_tracer", tracer)
            traced[f"{tracer}/{clk}"] = clock(run)
            t.write("current_tracer", "nop")
        install()
        traced["peer"] = clock(run)
        remove()
        assert len(events) == calls, "the peer missed calls"
        events.clear()
        base = min(before, clock(run))
        for name, secs in traced.items():
            (peer if name == "peer" else out[name]).append((secs - base) / calls)
    t.write("trace_clock", "local")
    return calls, out, peer


def written_events(stats: str) -> int:
    """Events written into one CPU's buffer: those in it plus those overwritten."""
    fields = dict(line.split(": ") for line in stats.splitlines())
    return int(fields["entries"]) + int(fields["overrun"])


def busy_run(m: Machine) -> tuple[float, float]:
    """RUN_MS of guest time: bench_fib loops the busy threads finished per CPU second, and
    the CPU seconds."""
    counter = m.symbol_address("bench_iterations")
    done = m.read_u64(counter)
    secs = clock(lambda: m.run(ms=RUN_MS))
    return (m.read_u64(counter) - done) / secs, secs


def all_functions(m: Machine) -> tuple[list[float], list[float]]:
    """Slowdown and events per second with every function traced, the busy guest running."""
    t = m.tracefs
    slow, rate = [], []
    for _ in range(max(3, SAMPLES // 2)):
        base, _ = busy_run(m)
        t.write("tracing_on", "1")
        t.write("current_tracer", "function")
        t.write("trace", "")
        traced, secs = busy_run(m)
        written = sum(written_events(t.read(f"per_cpu/cpu{c}/stats")) for c in range(len(m.cpus)))
        t.write("current_tracer", "nop")
        slow.append(base / traced)
        rate.append(written / secs)
    return slow, rate


def fill(m: Machine) -> None:
    """A buffer full of function events from every CPU, then tracing off."""
    t = m.tracefs
    t.write("current_tracer", "function")
    t.write("trace", "")
    t.write("tracing_on", "1")
    m.run(ms=FILL_MS)
    t.write("tracing_on", "0")


def reading(m: Machine) -> tuple[int, list[float], int, list[float]]:
    """Lines of ``trace`` and lines/s formatting it; pages and pages/s of trace_pipe_raw."""
    t = m.tracefs
    fill(m)
    lines = t.read("trace").count("\n")
    fmt = [lines / clock(lambda: t.read("trace")) for _ in range(5)]
    raw, pages = [], 0
    for _ in range(5):
        fill(m)
        n = 0

        def drain() -> None:
            nonlocal n
            for c in range(len(m.cpus)):
                h = t.open(f"per_cpu/cpu{c}/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
                try:
                    while h.read(4096, 0):
                        n += 1
                except BlockingIOError:
                    pass
                finally:
                    h.release()
        raw.append(clock(drain) / max(n, 1))
        pages = n
    return lines, fmt, pages, [1 / s for s in raw]


def main() -> None:
    m = Machine(cpus=1)
    m.boot()
    calls, cost, peer = per_call(m)
    print(f"ftemu tracer benchmarks: bench_fib({FIB_N}) = {calls} traced calls per run; "
          f"min/median/max of {SAMPLES} interleaved samples")
    for (tracer, clk), goal in zip(CONFIGS, (0.2e-6, 0.2e-6, 0.5e-6, 0.5e-6)):
        v = cost[f"{tracer}/{clk}"]
        what = "per event" if tracer == "function" else "per entry+exit pair"
        row(f"{tracer}, {clk} clock, {what}", us(v), verdict(med(v) <= goal) + f" goal <= {goal * 1e6:g} us")
    row("fair naive peer: code hook recording the same event", us(peer))
    for clk in ("local", "counter"):
        ratios = [p / f for p, f in zip(peer, cost[f"function/{clk}"])]
        row(f"peer / function tracer ({clk} clock), x", min_med_max(ratios, "{:.1f}") + " x",
            verdict(med(ratios) >= 8) + " goal >= 8x")

    m2 = Machine(cpus=2, memory_mb=128, cmdline="console=ttyS0 bench=2")
    m2.boot()
    m2.tracefs.write("buffer_size_kb", "8192")
    slow, rate = all_functions(m2)
    row(f"every function traced, 2 busy CPUs, {RUN_MS} ms: guest slowdown",
        min_med_max(slow, "{:.2f}") + " x")
    row("every function traced: events per CPU second", min_med_max(rate, "{:,.0f}") + " ev/s")
    lines, fmt, pages, raw = reading(m2)
    row(f"reading trace ({lines} lines), lines per second", min_med_max(fmt, "{:,.0f}") + " lines/s")
    row(f"draining trace_pipe_raw ({pages} pages), pages per second", min_med_max(raw, "{:,.0f}") + " pages/s")


if __name__ == "__main__":
    main()
