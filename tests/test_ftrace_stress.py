"""Randomised scenarios: random machines (CPUs, slices, NMIs, busy threads), random ops
(flags, filters, notrace, Python or guest callbacks) registered, changed and unregistered
while vCPUs run and CPUs go down and up. Each seed here once found a bug; the scenario must
end with every site a NOP, ftrace alive, no callback after an unregister, no panic."""
from __future__ import annotations

import random

import pytest

from emu import Machine
from ftrace import (FTRACE_OPS_FL_RCU, FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_SAVE_REGS,
                    FtraceError, FtraceOps)
from ftrace.arch.x86.asm import assemble

NOP5 = bytes.fromhex("0f1f440000")
FLAGS = [0, FTRACE_OPS_FL_SAVE_REGS, FTRACE_OPS_FL_RECURSION, FTRACE_OPS_FL_RCU,
         FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION]


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
    native = m.execmem.alloc(32)
    m.write(native, assemble(f"mov rax, {data}\nlock inc qword ptr [rax]\nret", native))
    live = []
    for _ in range(rng.randint(3, 12)):
        act = rng.random()
        if act < 0.5 or not live:
            flags = rng.choice(FLAGS)
            seen: list[int] = []
            func = native if rng.random() < 0.3 else (lambda ip, pip, op, regs, s=seen: s.append(ip))
            ops = FtraceOps(func, flags)
            if rng.random() < 0.7:
                ft.ftrace_set_filter(ops, rng.choice(names + ["*lock*", "sched*", "*irq*", "k*"]), True)
            if rng.random() < 0.3:
                try:
                    ft.ftrace_set_notrace(ops, rng.choice(names), True)
                except FtraceError:
                    pass
            ft.register_ftrace_function(ops)
            live.append((ops, seen))
        elif act < 0.8:
            ops, seen = live.pop(rng.randrange(len(live)))
            ft.unregister_ftrace_function(ops)
            n = len(seen)
            m.run(ms=1)
            assert len(seen) == n, "a callback after unregister returned"
        else:
            ops, _ = rng.choice(live)
            try:
                ft.ftrace_set_filter(ops, rng.choice(names), rng.random() < 0.5)
            except FtraceError:
                pass
        m.run(ms=rng.choice([1, 5, 20]))
        if cpus > 1 and rng.random() < 0.2:
            c = rng.randrange(1, cpus)
            (m.cpu_down if c in m.online_cpus() else m.cpu_up)(c)
    for ops, _ in live:
        ft.unregister_ftrace_function(ops)
    assert all(m.read(r.ip, 5) == NOP5 for r in ft.records)
    assert not ft.ftrace_disabled


@pytest.mark.parametrize("seed", [
    765539262,     # every vCPU busy inside ftrace code: wait per task, not all at once
    961800237,     # Machine.call in the syscall exit window: user stack and GS
    801632908,     # a task preempted inside a trampoline came back to freed code
])
def test_randomised_scenario(seed):
    scenario(seed)
