"""Randomised scenarios: random machines (CPUs, slices, NMIs, busy threads), random ops
(flags, filters, notrace, Python or guest callbacks) registered, changed and unregistered
while vCPUs run and CPUs go down and up, changes often made while a vCPU stands inside the
list function, and a callback calling every API meanwhile. Each seed here once found a bug;
the scenario must end with every site a NOP, ftrace alive, no callback (Python or guest)
after an unregister, every mutating call EDEADLK from the callback, no panic."""
from __future__ import annotations

import errno
import random

import pytest
from vcpu_pause import pause_at

from emu import Machine
from ftrace import (FTRACE_OPS_FL_RCU, FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_SAVE_REGS,
                    FtraceError, FtraceOps)
from ftrace.arch.x86.asm import assemble

NOP5 = bytes.fromhex("0f1f440000")
FLAGS = [0, FTRACE_OPS_FL_SAVE_REGS, FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_RCU,
         FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION]


def every_api_call(m, op) -> list:
    """A callback's view of the API: (name, call, mutating). Mutating calls must be EDEADLK
    from a callback, the others must work."""
    ft = m.ftrace
    site = ft.records[0].ip
    return [
        ("register", lambda: ft.register_ftrace_function(FtraceOps(lambda *a: None)), True),
        ("unregister", lambda: ft.unregister_ftrace_function(op), True),
        ("set_filter", lambda: ft.ftrace_set_filter(op, "schedule", False), True),
        ("set_notrace", lambda: ft.ftrace_set_notrace(op, "schedule", False), True),
        ("set_filter_ip", lambda: ft.ftrace_set_filter_ip(op, site, False, False), True),
        ("set_filter_ips", lambda: ft.ftrace_set_filter_ips(op, [site], True, False), True),
        ("ftrace_enabled", lambda: setattr(ft, "ftrace_enabled", 1), True),
        ("enabled_functions", lambda: ft.enabled_functions, False),
        ("available_filter_functions", lambda: ft.available_filter_functions, False),
        ("smp_processor_id", ft.smp_processor_id, False),
        ("current", lambda: ft.current, False),
        ("trace_clock", ft.trace_clock, False),
        ("stack_trace_save", ft.stack_trace_save, False),
        ("preempt_count", ft.preempt_count, False),
        ("rcu_is_watching", ft.rcu_is_watching, False),
        ("current_context", ft.current_context, False),
        ("function_address", lambda: ft.function_address("schedule"), False),
        ("lookup", lambda: m.lookup(site), False),
        ("defer", lambda: m.defer(lambda: None), False),
    ]


def api_prober(m, wrong: list):
    """An ops whose callback calls every API and notes each call that did not behave."""
    def probe(ip, pip, op, regs):
        for name, call, mutating in every_api_call(m, op):
            try:
                call()
                if mutating:
                    wrong.append(f"{name} worked from a callback")
            except FtraceError as e:
                if not (mutating and e.errno == errno.EDEADLK):
                    wrong.append(f"{name}: {e!r}")
    return FtraceOps(probe)


def pause_in_list_func(m, rng) -> None:
    """Stop some vCPU at a random instruction of the list function (if it gets there soon),
    so the next change happens while it stands there."""
    x86 = m.ftrace.x86
    start = x86.ftrace_ops_list_func
    pause_at(m, rng.randrange(start, start + x86.symbols[start][1]), 2)


def scenario(seed: int) -> None:
    rng = random.Random(seed)
    cpus = rng.choice([1, 2, 3, 4, 8])
    m = Machine(cpus=cpus, slice_seed=seed, quantum=rng.choice([500, 2000, 20000]),
                nmi_period_ms=rng.choice([None, 0.3, 2]),
                cmdline="console=ttyS0 bench=%d" % rng.randint(0, cpus))
    m.boot()
    ft = m.ftrace
    names = ft.available_filter_functions.splitlines()
    data = m.execmem.alloc(4096, align=4096)

    def native_counter() -> tuple[int, object]:
        """A guest-native callback counting its own calls in a slot of its own."""
        slot = data + 8 * native_counter.n
        native_counter.n += 1
        func = m.execmem.alloc(32)
        m.write(func, assemble(f"mov rax, {slot}\nlock inc qword ptr [rax]\nret", func))
        return func, lambda: m.read_u64(slot)
    native_counter.n = 0
    wrong: list[str] = []
    prober = api_prober(m, wrong)
    ft.ftrace_set_filter(prober, rng.choice(["kstat_inc", "schedule", "timer_interrupt"]), True)
    ft.register_ftrace_function(prober)
    live = []
    for _ in range(rng.randint(3, 12)):
        act = rng.random()
        if act < 0.5 or not live:
            flags = rng.choice(FLAGS)
            seen: list[int] = []
            if rng.random() < 0.4:
                func, count = native_counter()
            else:
                func, count = (lambda ip, pip, op, regs, s=seen: s.append(ip)), seen.__len__
            ops = FtraceOps(func, flags)
            if rng.random() < 0.7:
                ft.ftrace_set_filter(ops, rng.choice(names + ["*lock*", "sched*", "*irq*", "k*"]), True)
            if rng.random() < 0.3:
                try:
                    ft.ftrace_set_notrace(ops, rng.choice(names), True)
                except FtraceError:
                    pass
            ft.register_ftrace_function(ops)
            live.append((ops, count))
        elif act < 0.8:
            ops, count = live.pop(rng.randrange(len(live)))
            pause_in_list_func(m, rng)
            ft.unregister_ftrace_function(ops)
            n = count()
            m.run(ms=1)
            assert count() == n, "a callback after unregister returned"
        else:
            ops, _ = rng.choice(live)
            pause_in_list_func(m, rng)
            try:
                ft.ftrace_set_filter(ops, rng.choice(names), rng.random() < 0.5)
            except FtraceError:
                pass
        m.run(ms=rng.choice([1, 5, 20]))
        if cpus > 1 and rng.random() < 0.2:
            c = rng.randrange(1, cpus)
            (m.cpu_down if c in m.online_cpus() else m.cpu_up)(c)
    for ops, _ in live + [(prober, None)]:
        ft.unregister_ftrace_function(ops)
    assert all(m.read(r.ip, 5) == NOP5 for r in ft.records)
    assert not ft.ftrace_disabled and not wrong


@pytest.mark.parametrize("seed", [
    765539262,     # every vCPU busy inside ftrace code: wait per task, not all at once
    961800237,     # Machine.call in the syscall exit window: user stack and GS
    801632908,     # a task preempted inside a trampoline came back to freed code
])
def test_randomised_scenario(seed):
    scenario(seed)


def test_100000_filter_changes_on_a_live_ops_keep_the_code_area_at_its_baseline():
    m = Machine(cpus=2, cmdline="console=ttyS0 bench=1")
    m.boot()
    ft = m.ftrace
    ops = FtraceOps(lambda *a: None)
    sched, kstat = ft.function_address("schedule"), ft.function_address("kstat_inc")
    ft.ftrace_set_filter_ip(ops, sched, False, True)
    baseline = sum(m.execmem.used.values())
    ft.register_ftrace_function(ops)
    live = sum(m.execmem.used.values())
    peak = 0
    for i in range(100_000):
        if i % 1000 == 999:                           # now and then a site changes too
            ft.ftrace_set_filter_ip(ops, kstat, False, False)
            m.run(ms=0.1)
        ft.ftrace_set_filter_ip(ops, sched, False, True)
        if i % 97 == 0:
            peak = max(peak, sum(m.execmem.used.values()))
    assert peak - live <= 80 * 1024                   # call_rcu drains under pressure
    ft.unregister_ftrace_function(ops)
    m.run(ms=1)
    ft.ftrace_set_filter_ip(ops, sched, False, True)  # any API call polls the call_rcu queue
    assert sum(m.execmem.used.values()) == baseline
    assert "schedule" not in ft.enabled_functions and not ft.ftrace_disabled
