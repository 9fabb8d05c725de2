"""A trace array's guest data outlives every vCPU that may still hold it: a vCPU stopped at
each instruction that reads it while the host replaces it, with freed memory poisoned as
KASAN does, runs on without a fault."""
from __future__ import annotations

from test_ftrace_lifetime import poison_free_code_area
from vcpu_pause import pause_at

POISON = 0x6B6B6B6B6B6B6B6B        # the slab poison: a non-canonical address, any use faults


def test_set_ftrace_pid_replaced_twice_while_a_vcpu_reads_the_old_list(booted_snapshots):
    # CPU 1 stops at each instruction of function_trace_call's pid check (trace_64.pid_gate),
    # holding the set_ftrace_pid array; the list is then replaced twice and freed memory
    # poisoned. The array CPU 1 holds lives until it is out (call_rcu): it was freed at the
    # second change before, and CPU 1 walked poison.
    from unicorn.x86_const import UC_X86_REG_R8
    m = booted_snapshots(2)
    t = m.tracefs
    tr = m.tracing.top
    start = next(a for a, (name, _n) in m.ftrace.x86.symbols.items() if name == "function_trace_call")
    body = m.read(start, 0x100)
    end = start + body.index(bytes.fromhex("4989f2"))          # mov r10, rsi: past the check
    t.write("set_ftrace_pid", "0 1 2 3 4 5 6 7 8")
    t.write("current_tracer", "function")
    stops = 0
    for pc in range(start, end):
        t.write("set_ftrace_pid", "0 1 2 3 4 5 6 7 8")
        cpu = pause_at(m, pc, 2, lambda c: c.index == 1 and c.regs.read(UC_X86_REG_R8) == tr.va)
        stops += cpu is not None and cpu.rip() == pc
        t.write("set_ftrace_pid", "1")
        t.write("set_ftrace_pid", "2")
        poison_free_code_area(m, POISON)
        m.run(ms=1)
    t.write("current_tracer", "nop")
    assert stops > 10
