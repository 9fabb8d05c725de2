"""Tracer benchmarks, side by side in one run (min / median / max of 5 samples each).

- Function tracer, one traced function (bench_fib: one event per call): cost per event with
  the default ``local`` clock (the TSC: one rdtsc exit to the host per event) and with the
  ``counter`` clock (no exit), beside the fair naive peer: a Python UC_HOOK_CODE on the
  function entry that records the same event (ip, parent ip, flags, preempt count, pid, the
  virtual time) in a Python list. Goal: <= 0.2 us per event and >= 8x cheaper than the peer.
- function_graph on the same function: cost per entry+exit pair (goal <= 0.5 us).
- Function tracer on every function: guest slowdown and events per second over 20 ms of
  virtual time on two CPUs.
- Reading: formatting ``trace`` (lines per second) and draining ``trace_pipe_raw`` (pages
  per second) from a full buffer.

Run: python tools/bench/bench_tracers.py
"""
from __future__ import annotations

import os
import statistics
import struct
import time

from common import row, verdict
from unicorn import UC_HOOK_CODE
from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_RIP, UC_X86_REG_RSP

from emu import Machine
from emu import memlayout as L

FIB_N, REPEAT = 18, 5


def samples(fn, repeat: int = REPEAT) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def mmm(values: list[float], scale: float = 1e6, unit: str = "us") -> str:
    return (f"{min(values) * scale:.3f}/{statistics.median(values) * scale:.3f}/"
            f"{max(values) * scale:.3f} {unit}")


def per_event(m: Machine, calls: int, base: list[float]) -> list[float]:
    """Extra seconds per traced call over the untraced median, one value per sample."""
    b = statistics.median(base)
    return [(t - b) / calls for t in samples(lambda: m.call("bench_fib", FIB_N))]


def naive_peer(m: Machine, calls: int, base: list[float]) -> list[float]:
    """UC_HOOK_CODE at the entry recording what a TRACE_FN event holds."""
    events: list[tuple] = []
    fib, cpu = m.symbol_address("bench_fib"), m.cpus[0]
    pcpu = m.kernel.pcpu(0, 0)

    def hook(uc, address, size, ud):
        rsp = uc.reg_read(UC_X86_REG_RSP)
        parent = struct.unpack("<Q", m.read(rsp, 8))[0]
        area = m.read(pcpu, 0x18)
        pc, = struct.unpack_from("<I", area, L.PCPU_PREEMPT_COUNT)
        task, = struct.unpack_from("<Q", area, L.PCPU_CURRENT)
        pid, = struct.unpack("<i", m.read(task + L.TASK_PID, 4))
        events.append((uc.reg_read(UC_X86_REG_RIP), parent, uc.reg_read(UC_X86_REG_EFLAGS), pc,
                       pid, cpu.now()))
    h = cpu.uc.hook_add(UC_HOOK_CODE, hook, None, fib, fib)
    cpu.uc.ctl_remove_cache(fib, fib + 1)
    try:
        return per_event(m, calls, base)
    finally:
        cpu.uc.hook_del(h)
        cpu.uc.ctl_remove_cache(fib, fib + 1)


def main() -> None:
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    base = samples(lambda: m.call("bench_fib", FIB_N))
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
    tfs.write("current_tracer", "function")
    tfs.write("trace", "")
    m.call("bench_fib", FIB_N)
    calls = int(tfs.read("per_cpu/cpu0/stats").split()[1])
    print(f"ftemu tracer benchmarks: bench_fib({FIB_N}) = {calls} traced calls per run "
          f"(min/median/max of {REPEAT})")
    row("untraced bench_fib, per call", mmm([t / calls for t in base]))
    local = per_event(m, calls, base)
    tfs.write("trace_clock", "counter")
    counter = per_event(m, calls, base)
    tfs.write("current_tracer", "nop")
    naive = naive_peer(m, calls, base)
    med = statistics.median
    row("function tracer, local clock (rdtsc), per event", mmm(local),
        verdict(med(local) <= 0.2e-6) + " goal <= 0.2 us")
    row("function tracer, counter clock (no rdtsc), per event", mmm(counter),
        verdict(med(counter) <= 0.2e-6) + " goal <= 0.2 us")
    row("naive peer: Python UC_HOOK_CODE recording the event", mmm(naive))
    ratios = [n / t for n, t in zip(sorted(naive), sorted(local))]
    row("naive / function tracer (local clock), x", mmm(ratios, 1, "x"),
        verdict(med(ratios) >= 8) + " goal >= 8x")

    # function_graph: an entry and an exit event per call (return hijack, shadow stack).
    tfs.write("trace_clock", "local")
    tfs.write("current_tracer", "function_graph")
    graph_local = per_event(m, calls, base)
    tfs.write("trace_clock", "counter")
    graph_counter = per_event(m, calls, base)
    tfs.write("current_tracer", "nop")
    row("function_graph, local clock, per entry+exit pair", mmm(graph_local),
        verdict(med(graph_local) <= 0.5e-6) + " goal <= 0.5 us")
    row("function_graph, counter clock, per entry+exit pair", mmm(graph_counter),
        verdict(med(graph_counter) <= 0.5e-6) + " goal <= 0.5 us")

    # Every function traced: bench_fib and everything that interrupts it.
    tfs.write("trace_clock", "local")
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, None, True)
    tfs.write("current_tracer", "function")
    tfs.write("trace", "")
    traced = samples(lambda: m.call("bench_fib", FIB_N))
    tfs.write("current_tracer", "nop")
    slow = [t / statistics.median(base) for t in traced]
    row("every function traced: guest slowdown (bench_fib)", mmm(slow, 1, "x"))
    row("every function traced: events per second (wall)",
        mmm([calls / t for t in traced], 1, "ev/s"))

    m2 = Machine(cpus=2, memory_mb=128)
    m2.boot()
    m2.tracefs.write("buffer_size_kb", "8192")
    m2.tracefs.write("current_tracer", "function")
    for cpu in (0, 1):
        m2.call("bench_fib", FIB_N + 4, cpu=cpu)
    m2.tracefs.write("tracing_on", "0")
    text = m2.tracefs.read("trace")
    lines = text.count("\n")
    fmt = samples(lambda: m2.tracefs.read("trace"), 3)
    row(f"reading trace ({lines} lines), lines per second",
        mmm([lines / t for t in fmt], 1, "lines/s"))
    pages, t0 = 0, time.perf_counter()
    for c in range(2):
        h = m2.tracefs.open(f"per_cpu/cpu{c}/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                h.read(4096, 0)
                pages += 1
        except OSError:
            pass
    row(f"draining trace_pipe_raw ({pages} pages), pages per second",
        f"{pages / (time.perf_counter() - t0):,.0f} pages/s")


if __name__ == "__main__":
    main()
