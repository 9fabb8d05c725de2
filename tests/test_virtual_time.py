"""Virtual time is instructions retired x NS_PER_INSN, counted by the native block hook
(emu/native/blockcount.c) or, where it cannot be built (or FTEMU_NATIVE=0), by Unicorn's
count=. Counts are exact on faults, after code patching, and identical run to run."""
from __future__ import annotations

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn.x86_const import UC_X86_REG_RIP

from emu import Machine, blockcount
from emu.cpu import VCpu
from emu import memlayout as L
from ftrace import FtraceOps
from ftrace.arch.x86 import fgraph_64, trace_64


def guest_code(m: Machine, src: str) -> int:
    addr = m.execmem.alloc(128)
    code, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm(src, addr)
    m.write(addr, bytes(code))
    return addr


def test_the_fallback_is_what_the_environment_asks_for(counting):
    m = Machine(cpus=1)
    assert (m.cpus[0].blocks is not None) == (counting == "native")


def test_both_counters_agree_on_a_call_before_during_and_after_patching(monkeypatch):
    if not blockcount.available():
        pytest.skip(f"native block counter unavailable: {blockcount.why_unavailable()}")
    counts = {}
    for mode in ("native", "count"):
        if mode == "count":
            monkeypatch.setenv(blockcount.ENV_SWITCH, "0")
            monkeypatch.setattr(blockcount, "_lib", None)
        m = Machine(cpus=1)
        m.boot()
        seen = []
        ops = FtraceOps(lambda *a: seen.append(1))
        m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
        m.call("bench_fib", 12)
        plain = m.last_call_instructions
        m.ftrace.register_ftrace_function(ops)        # rewrites code the counter has seen
        m.call("bench_fib", 12)
        traced = m.last_call_instructions
        m.ftrace.unregister_ftrace_function(ops)
        m.call("bench_fib", 12)
        counts[mode] = (plain, traced, m.last_call_instructions)
        assert seen and counts[mode][2] == plain and traced > plain
    assert counts["native"] == counts["count"]


def test_a_fault_or_trap_in_the_middle_of_a_block_counts_what_retired():
    """Native: the faulting load never retires; int3 does. (count= also counts the faulting
    attempt: 8 here.)"""
    if not blockcount.available():
        pytest.skip(f"native block counter unavailable: {blockcount.why_unavailable()}")
    m = Machine(cpus=1)
    m.boot()
    f = guest_code(m, "mov eax, 1\nmovabs rbx, 0x700000000000\nmov rbx, [rbx]\nmov ecx, 2\n"
                      "int3\nnop\nmov edx, 3\nret")
    load = f + 5 + 10

    def skip_the_load(cpu) -> bool:
        if cpu.rip() != load:
            return False
        cpu.regs.write(UC_X86_REG_RIP, load + 3)
        return True
    m.add_trap_hook(14, skip_the_load)
    m.add_trap_hook(3, lambda cpu: f <= cpu.rip() < f + 128)
    assert m.call(f) == 1
    assert m.last_call_instructions == 7


def test_rdtsc_reads_time_to_the_instruction(counting):
    m = Machine(cpus=1)
    m.boot()
    f = guest_code(m, "rdtsc\nshl rdx, 32\nor rax, rdx\nmov rcx, rax\nnop\nnop\nnop\n"
                      "rdtsc\nshl rdx, 32\nor rax, rdx\nsub rax, rcx\nret")
    assert m.call(f) == 7 * L.NS_PER_INSN


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_runs_are_identical_across_fresh_machines_and_restores(cpus, counting):
    def run(m: Machine) -> tuple:
        m.run(ms=40)
        return m.console, m.now, m.stats()
    first = Machine(cpus=cpus)
    first.boot()
    snap = first.snapshot()
    a = run(first)
    second = Machine(cpus=cpus)
    second.boot()
    assert run(second) == a
    first.restore(snap)
    assert run(first) == a
    assert a[2]["total"]["instructions"] > 0


def test_the_local_clock_reads_what_rdtsc_in_c_and_the_host_clock_read(monkeypatch):
    """The tracers' local clock is the TSC. Their fast paths read it from the vCPU's pvclock
    (no rdtsc); with rdtsc in the same places instead, answered by the native helper in C,
    or with every read sent to VCpu.now(), the trace is the same, byte for byte."""
    if not blockcount.available():
        pytest.skip(f"native block counter unavailable: {blockcount.why_unavailable()}")

    def traced_run() -> tuple[str, int, int]:
        m = Machine(cpus=2)
        m.boot()
        m.tracefs.write("trace_clock", "local")
        m.tracefs.write("set_ftrace_filter", "*lock*")
        m.tracefs.write("current_tracer", "function")
        m.run(ms=20)
        m.call("bench_fib", 8)
        function = m.tracefs.read("trace")
        m.tracefs.write("set_ftrace_filter", "kalloc spin_lock_irqsave spin_unlock_irqrestore")
        m.tracefs.write("current_tracer", "function_graph")
        m.run(ms=5)
        natives = sum(c.blocks.v.tsc_native for c in m.cpus)
        return function + m.tracefs.read("trace"), natives, sum(c.blocks.v.tsc_host for c in m.cpus)
    trace, pv_natives, _ = traced_run()

    def by_rdtsc(clock: int, clock_data: int, position: int) -> str:
        return trace_64.RDTSC if clock == trace_64.CLOCK_LOCAL else clock_read(clock, clock_data, position)
    clock_read = trace_64.clock_read
    monkeypatch.setattr(trace_64, "clock_read", by_rdtsc)
    monkeypatch.setattr(fgraph_64, "clock_read", by_rdtsc)
    rdtsc_trace, natives, hosts = traced_run()
    monkeypatch.setattr(VCpu, "_set_clock", lambda cpu: cpu.blocks.set_clock(blockcount.TSC_PYTHON, 0))
    slow_trace, slow_natives, slow_hosts = traced_run()
    assert trace == rdtsc_trace == slow_trace
    assert trace.count("\n") > 500 and trace.count("spin_lock_irqsave();") > 20
    assert natives > 10 * hosts and slow_natives == 0 and slow_hosts >= natives
    assert natives > 400 + pv_natives          # the guest's own sched_clock still rdtscs


@pytest.mark.parametrize("precise", [False, True])
def test_the_local_clock_is_the_tsc_wherever_the_pvclock_is_not_kept(counting, precise):
    """Under the count= fallback, and in set_precise mode (a debugger's), no pvclock is kept:
    the tracers' fast paths see an invalid time and take the TSC instead, so every event's
    time still lies within the call that recorded it."""
    m = Machine(cpus=1)
    m.boot()
    cpu, t = m.cpus[0], m.tracefs
    if precise:
        cpu.set_precise(True)
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
    for tracer in ("function", "function_graph"):
        t.write("current_tracer", tracer)
        t.write("trace", "")
        start = cpu.now()
        m.call("bench_fib", 10)
        end = start + m.last_call_instructions * L.NS_PER_INSN
        t.write("options/funcgraph-abstime", "1")
        stamps = [float(line.split()[0 if tracer == "function_graph" else 3].rstrip(":"))
                  for line in t.read("trace").splitlines() if "bench_fib" in line]
        assert len(stamps) >= 89 and stamps == sorted(stamps)
        assert start // 1000 <= stamps[0] * 1e6 and stamps[-1] * 1e6 <= end // 1000 + 1
