"""What a callback can ask, under the kernel's names: smp_processor_id(), current,
trace_clock(), stack_trace_save(); and the public hooks on the int3 protocol's steps."""
from __future__ import annotations

from emu import Machine
from ftrace import FtraceOps
from ftrace.arch.x86.insn import call_insn

NOP5 = bytes.fromhex("0f1f440000")


def test_smp_processor_id_and_current_name_the_cpu_and_task(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    seen = set()

    def cb(ip, pip, op, regs):
        task = ft.current
        seen.add((ft.smp_processor_id(), task.comm, task.pid > 0 or task.comm.startswith("idle"),
                  task.state))
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "do_syscall_64", True)
    ft.register_ftrace_function(ops)
    m.run(ms=30)
    ft.unregister_ftrace_function(ops)
    assert {cpu for cpu, *_ in seen} == {0, 1}
    assert {(comm, ok, state) for _, comm, ok, state in seen} >= {("init", True, 0)}


def test_trace_clock_is_virtual_time_monotonic_per_cpu_and_deterministic(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    snap = m.snapshot()
    runs = []
    for _ in range(2):
        m.restore(snap)
        stamps: list[tuple[int, int]] = []
        ops = FtraceOps(lambda *a: stamps.append((ft.smp_processor_id(), ft.trace_clock())))
        ft.ftrace_set_filter(ops, "kstat_inc", True)
        ft.register_ftrace_function(ops)
        start = m.now
        m.run(ms=10)
        ft.unregister_ftrace_function(ops)
        runs.append(stamps)
        for cpu in (0, 1):
            mine = [t for c, t in stamps if c == cpu]
            assert mine == sorted(mine) and all(start <= t <= m.now for t in mine)
    assert runs[0] == runs[1] and len(runs[0]) > 10


def test_stack_trace_save_includes_the_traced_functions_caller(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    traces = []
    ops = FtraceOps(lambda ip, pip, op, regs: traces.append((ip, pip, ft.stack_trace_save())))
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    m.run(ms=10)
    ft.unregister_ftrace_function(ops)
    assert traces
    for ip, pip, stack in traces:
        assert stack[:2] == [ip + 5, pip]                # in kstat_inc, then in its caller
        assert m.lookup(stack[1]).split("+")[0] == m.image.containing(pip).name


def test_text_poke_hooks_show_the_three_steps_and_the_int3_hits():
    m = Machine(cpus=4, quantum=2000, cmdline="console=ttyS0 bench=4")
    m.boot()
    ft = m.ftrace
    site = ft.function_address("kstat_inc")
    steps, hits = [], []
    remove_step = ft.on_text_poke_step(lambda step, batch: steps.append(
        (step, site in batch, m.read(site, 5))))
    remove_int3 = ft.on_text_poke_int3(lambda cpu, ip, insn: hits.append((cpu, ip, insn)))
    ops = FtraceOps(lambda *a: None)
    ft.register_ftrace_function(ops)                 # every site: one big batch
    new = call_insn(site, ops.trampoline)
    assert m.read(site, 5) == new
    ours = [(step, code) for step, there, code in steps if there]   # the batch with the sites
    assert ours == [(1, b"\xcc" + NOP5[1:]), (2, b"\xcc" + new[1:]), (3, new)]
    assert hits and all(ip in {r.ip for r in ft.records} and insn[0] == 0xE8
                        for _, ip, insn in hits)
    remove_step()
    remove_int3()
    ft.unregister_ftrace_function(ops)
    assert len(steps) == 6                          # ftrace_call's round, then the sites'


def test_no_vcpu_clock_steps_back_around_registrations():
    # Between the int3 steps the other vCPUs run short bursts; each burst used to start
    # again from the machine's time, so a vCPU's clock went back by up to a burst.
    m = Machine(cpus=2, quantum=2000, cmdline="console=ttyS0 bench=2")
    m.boot()
    ft = m.ftrace
    stamps: list[tuple[int, int]] = []
    clock = FtraceOps(lambda *a: stamps.append((ft.smp_processor_id(), ft.trace_clock())))
    ft.register_ftrace_function(clock)                  # every function
    for name in ("kstat_inc", "schedule", "*lock*", "bench_fib"):
        ops = FtraceOps(lambda *a: None)
        ft.ftrace_set_filter(ops, name, True)
        ft.register_ftrace_function(ops)
        m.run(ms=0.2)
        ft.unregister_ftrace_function(ops)
    ft.unregister_ftrace_function(clock)
    for cpu in (0, 1):
        mine = [t for c, t in stamps if c == cpu]
        assert len(mine) > 100
        assert all(b >= a for a, b in zip(mine, mine[1:])), f"CPU {cpu}'s clock went back"
