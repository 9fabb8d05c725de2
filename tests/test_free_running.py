"""Free-running mode (``deterministic=False``): slices end on the host clock, and every launch
boots. The slice timer kicks the engine, which leaves at the next block start (emu/kick.py);
Unicorn's own emu_stop from the timer thread could be lost (a slice that never ends), end a
run mid-block with RIP rolled back, replaying instructions (a replayed ``sub`` on
preempt_count made the guest panic with "scheduling while atomic"), or skip the hooks of the
instructions it still ran (a lost hypercall)."""
from __future__ import annotations

import faulthandler
import struct

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn.x86_const import UC_X86_REG_RIP

from emu import BudgetExceeded, Machine
from emu.cpu import RUNNING
from emu.ticker import MIN_SLICE_NS

HANG_S = 120          # a hung launch ends the test run with a stack dump instead of hanging CI


@pytest.fixture
def no_hang():
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def test_twenty_free_running_launches_all_boot(no_hang):
    for i in range(20):
        cpus = (1, 2, 4)[i % 3]
        m = Machine(cpus=cpus, cmdline="console=ttyS0 bench=1", deterministic=False)
        m.boot()
        m.run(ms=10)
        assert "panic" not in m.console
        assert m.stats()["total"]["instructions"] > 0


def test_a_stop_from_the_timer_thread_never_replays_instructions(counting, no_hang):
    """Two counters incremented in turn: wherever a slice ends, they must agree with RIP.
    (The CPU runs this loop straight from reset, on the loader's identity map.)"""
    m = Machine(cpus=1, deterministic=False)
    cpu = m.cpus[0]
    loop, data = 0x100000, 0x180000
    # `add rax, -12` ends in the byte 0xf4 (hlt): a stop after it is still not a hlt.
    code, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm(
        f"mov rdi, {data}\n"
        "top: add qword ptr [rdi], 1\nadd qword ptr [rdi+8], 1\nadd rax, -12\njmp top", loop)
    m.ram[loop:loop + len(code)] = bytes(code)
    second_add = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(bytes(code), loop)][2]
    cpu.regs.write(UC_X86_REG_RIP, loop)
    for _ in range(200):
        cpu.run_slice(m.now, MIN_SLICE_NS // 10)
        a, b = struct.unpack_from("<QQ", m.ram, data)
        rip = cpu.rip()
        assert a - b == (1 if rip == second_add else 0), (hex(rip - loop), a, b)
        assert cpu.state == RUNNING
    assert a > 1000


def test_a_stop_from_the_timer_thread_never_skips_a_hook(counting, no_hang):
    """Two ``out``s and two counters per loop: wherever a slice ends, the port handler has
    seen exactly as many writes as the guest made (emu_stop would have skipped some)."""
    m = Machine(cpus=1, deterministic=False)
    cpu, port, seen = m.cpus[0], 0x3F0, []
    m.add_port(port, lambda c, p, v: seen.append(v))
    loop, data = 0x100000, 0x180000
    code, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm(
        f"mov rdi, {data}\nmov dx, {port}\n"
        "top: out dx, al\nadd qword ptr [rdi], 1\nout dx, al\nadd qword ptr [rdi+8], 1\njmp top", loop)
    m.ram[loop:loop + len(code)] = bytes(code)
    insns = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(bytes(code), loop)]
    after_an_out = {insns[3], insns[5]}           # the adds: one more write than a + b
    cpu.regs.write(UC_X86_REG_RIP, loop)
    for _ in range(100):
        cpu.run_slice(m.now, MIN_SLICE_NS // 10)
        a, b = struct.unpack_from("<QQ", m.ram, data)
        rip = cpu.rip()
        assert len(seen) == a + b + (rip in after_an_out), (hex(rip - loop), a, b, len(seen))
        assert cpu.state == RUNNING
    assert a > 1000


def test_a_call_runs_to_its_return_and_its_budget_is_time(no_hang):
    """Machine.call in free-running mode: the result is exact; nothing counts instructions,
    so ``max_insns`` bounds the call's host time (in instruction units) instead."""
    m = Machine(cpus=1, deterministic=False)
    m.boot()
    assert m.call("bench_fib", 20) == 6765
    assert m.last_call_instructions > 0
    with pytest.raises(BudgetExceeded):
        m.call("bench_fib", 40, max_insns=10_000)      # ~100 us of host time, far too little
    assert m.call("bench_fib", 10) == 55                # the machine is whole again
