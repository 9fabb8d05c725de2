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


def test_native_rdtsc_reads_what_the_host_clock_reads(monkeypatch):
    """The native helper answers rdtsc in C (the tracers' local clock reads it on every
    event); sending every read to VCpu.now() instead gives the same trace, byte for byte."""
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
        natives = sum(c.blocks.v.tsc_native for c in m.cpus)
        return m.tracefs.read("trace"), natives, sum(c.blocks.v.tsc_host for c in m.cpus)
    trace, natives, hosts = traced_run()
    monkeypatch.setattr(VCpu, "_set_clock", lambda cpu: cpu.blocks.set_clock(blockcount.TSC_PYTHON, 0))
    slow_trace, slow_natives, slow_hosts = traced_run()
    assert trace == slow_trace
    assert trace.count("\n") > 400
    assert natives > 10 * hosts and slow_natives == 0 and slow_hosts >= natives
