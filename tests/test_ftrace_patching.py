"""Changing text while vCPUs run: the int3 protocol under load, unregister's guarantee with a
vCPU paused inside the trampoline, and the ftrace_enabled sysctl."""
from __future__ import annotations

import errno

import pytest

from emu import Machine
from ftrace import FTRACE_OPS_FL_PERMANENT, FTRACE_OPS_FL_SAVE_REGS, FtraceError, FtraceOps
from ftrace.arch.x86.text_poke import MAX_RUN, code_runs

NOP5 = bytes.fromhex("0f1f440000")


def kstat_total(m: Machine) -> int:
    t = m.stats()["total"]
    return sum(v for k, v in t.items() if k != "instructions")


def inside(m: Machine, cpu, start: int, end: int) -> bool:
    """Is ``cpu`` executing in [start, end), or in something that will return there?"""
    from unicorn.x86_const import UC_X86_REG_RBP
    name = m.image.containing(start).name
    frames = m.backtrace(cpu, cpu.rip(), cpu.regs.read(UC_X86_REG_RBP))
    return any(f.startswith(name + "+") for f in frames)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_patching_every_site_while_four_vcpus_run_loses_and_invents_nothing(seed):
    m = Machine(cpus=4, slice_seed=seed, quantum=2000, cmdline="console=ttyS0 bench=4")
    m.boot()
    ft = m.ftrace
    kstat = m.symbol_address("kstat_inc")
    ksize = m.image.symbol("kstat_inc").size
    sites = {r.ip for r in ft.records}
    calls: list[int] = []
    int3_hits = 0
    for _ in range(3):
        ops = FtraceOps(lambda ip, pip, op, regs: calls.append(ip))
        ft.register_ftrace_function(ops)                 # every site: the biggest batch
        quiet = lambda: not any(inside(m, c, kstat, kstat + ksize) for c in m.cpus)  # noqa: E731
        m.run_until(quiet, 50)
        base_calls, base_k = calls.count(kstat), kstat_total(m)
        m.run(ms=3)
        m.run_until(quiet, 50)
        assert calls.count(kstat) - base_calls == kstat_total(m) - base_k   # none lost
        ft.unregister_ftrace_function(ops)
        n = len(calls)
        m.run(ms=3)
        assert len(calls) == n                            # none after unregister returned
        int3_hits = ft.x86.poker.int3_hits
    assert set(calls) <= sites                            # none invented
    assert all(m.read(ip, 5) == NOP5 for ip in sites)
    assert int3_hits > 0                                  # vCPUs did meet half-patched sites
    assert "ALL TESTS PASSED" in m.console


def test_a_batch_drops_translations_by_ranges_contiguous_virtually_and_physically():
    k = 0xFFFFFFFF81000000            # (site ip, its physical address)
    sites = [(k + 0x3010, 0x5000010), (k + 0x10, 0x1000010), (k + 0x2000, 0x1002000),
             (k + 0x3000, 0x5000000), (k + 0x3000 + MAX_RUN, 0x5000000 + MAX_RUN),
             (k + 0x40000, 0x1040000)]
    assert code_runs(sites) == [
        (k + 0x10, 0x1FF5),           # two pages apart virtually and physically: one range
        (k + 0x3000, 0x15),           # the next page lies elsewhere physically: its own range
        (k + 0x3000 + MAX_RUN, 5),    # in step, but MAX_RUN past its range's start
        (k + 0x40000, 5)]             # in step with the first range only: ranges grow at the end


def test_no_callback_after_unregister_even_with_a_vcpu_paused_in_the_trampoline(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    seen = []
    ops = FtraceOps(lambda ip, pip, op, regs: seen.append(ip))
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    paused = []

    def pause(cpu):
        if not paused:
            paused.append(cpu.index)
            cpu.request_stop()
    hook = m.add_code_hook(ops.trampoline + 1, pause)     # inside, before the callback ran
    m.run_until(lambda: bool(paused), 100)
    hook.remove()
    cpu = m.cpus[paused[0]]
    assert ops.trampoline <= cpu.rip() < ops.trampoline + ops.trampoline_size
    assert ft.x86.rcu._cpu_inside(cpu, set())
    n = len(seen)
    ft.unregister_ftrace_function(ops)                    # waits for the paused vCPU to leave
    assert len(seen) == n + 1                             # its pending callback was not lost
    assert not any(ft.x86.rcu._cpu_inside(c, set()) for c in m.cpus)
    m.run(ms=20)
    assert len(seen) == n + 1


def test_ftrace_enabled_0_nops_every_site_and_keeps_ops_registered(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    seen = []
    ops = FtraceOps(lambda *a: seen.append(1))
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    site = ft.function_address("schedule")
    assert m.read(site, 1) == b"\xe8"
    ft.ftrace_enabled = 0
    assert m.read(site, 5) == NOP5 and ft.ops_list == [ops]
    n = len(seen)
    m.run(ms=30)
    assert len(seen) == n
    ft.ftrace_enabled = 1
    assert m.read(site, 1) == b"\xe8"
    m.run(ms=30)
    assert len(seen) > n
    ft.unregister_ftrace_function(ops)


def test_permanent_ops_block_ftrace_enabled_0_and_need_it_on(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    perm = FtraceOps(lambda *a: None, FTRACE_OPS_FL_PERMANENT)
    ft.ftrace_set_filter(perm, "schedule", True)
    ft.register_ftrace_function(perm)
    with pytest.raises(FtraceError) as e:
        ft.ftrace_enabled = 0
    assert e.value.errno == errno.EBUSY and ft.ftrace_enabled == 1
    ft.unregister_ftrace_function(perm)
    ft.ftrace_enabled = 0
    other = FtraceOps(lambda *a: None, FTRACE_OPS_FL_PERMANENT)
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(other)
    assert e.value.errno == errno.EBUSY
    ft.ftrace_enabled = 1


def test_filter_reset_swaps_atomically_never_tracing_everything(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    seen = set()
    ops = FtraceOps(lambda ip, *a: seen.add(m.image.containing(ip).name))
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    m.run(ms=20)
    ft.ftrace_set_filter(ops, "try_to_wake_up", True)    # other vCPUs run during the swap
    m.run(ms=20)
    ft.unregister_ftrace_function(ops)
    assert seen == {"schedule", "try_to_wake_up"}


def test_unregister_waits_for_a_vcpu_paused_in_a_leaf_guest_callback(booted_snapshots):
    from ftrace.arch.x86.asm import assemble
    m = booted_snapshots(2)
    ft = m.ftrace
    data = m.execmem.alloc(4096, align=4096)
    func = m.execmem.alloc(32)
    m.write(func, assemble(f"mov rax, {data}\nlock inc qword ptr [rax]\nret", func))  # no frame
    ops = FtraceOps(func)
    ft.ftrace_set_filter(ops, "kstat_inc", True)
    ft.register_ftrace_function(ops)
    paused = []

    def pause(cpu):
        if not paused:
            paused.append(cpu)
            cpu.request_stop()
    hook = m.add_code_hook(func + 7, pause)                 # at the lock inc, RIP not in ftrace code
    m.run_until(lambda: bool(paused), 100)
    hook.remove()
    assert paused[0].rip() == func + 7
    assert ft.x86.rcu._cpu_inside(paused[0], set())      # its return address into the trampoline is seen
    count = m.read_u64(data)
    ft.unregister_ftrace_function(ops)                       # must let it return first
    assert m.read_u64(data) == count + 1
    assert not any(ft.x86.rcu._cpu_inside(c, set()) for c in m.cpus)


@pytest.mark.parametrize("flags", [0, FTRACE_OPS_FL_SAVE_REGS])
def test_unregister_returns_while_other_ops_keep_every_vcpu_busy_in_ftrace_code(flags):
    m = Machine(cpus=8, cmdline="console=ttyS0 bench=8")
    m.boot()
    ft = m.ftrace
    busy = FtraceOps(lambda *a: None, flags)           # every bench_fib call, on every CPU
    ft.ftrace_set_filter(busy, "bench_fib", True)
    ft.register_ftrace_function(busy)
    calls = []
    other = FtraceOps(lambda *a: calls.append(1))
    ft.ftrace_set_filter(other, "bench_fib", True)
    ft.register_ftrace_function(other)
    m.run(ms=2)
    sites = {r.ip + 5 for r in ft.records}
    inside = [c.index for c in m.cpus if ft.x86.rcu._cpu_inside(c, sites)]
    assert len(inside) >= 4                           # most vCPUs are inside ftrace code now
    blocks = ft.x86._guest[id(other)].blocks()
    ft.unregister_ftrace_function(other)              # quiescent per vCPU, not all at once
    assert not any(b in m.execmem.used for b in blocks)   # the wait completed: freed at once
    assert not [line for line in ft.log_lines if "still inside" in line]
    n = len(calls)
    m.run(ms=2)
    assert calls and len(calls) == n
    ft.unregister_ftrace_function(busy)


@pytest.mark.parametrize("seed", [7, 8])
def test_tasks_preempted_inside_trampolines_are_waited_for(seed):
    # One CPU, two busy threads time-sliced on it: the one waiting was preempted, often in
    # the middle of a trampoline while every function is traced.
    m = Machine(cpus=1, slice_seed=seed, quantum=3000, cmdline="console=ttyS0 bench=2")
    m.boot()
    ft = m.ftrace
    for _ in range(4):
        ops = FtraceOps(lambda *a: None)
        ft.register_ftrace_function(ops)
        m.run(ms=6)
        waiting = [t for t in m.kernel.tasks() if m.kernel.on_rq(t)]
        assert waiting                                    # a preempted benchd is a holdout
        ft.unregister_ftrace_function(ops)
        m.run(ms=6)                                       # it resumes into valid code
    assert not [line for line in ft.log_lines if "still inside" in line]
    assert "panic" not in m.console
