"""Free-running mode (``deterministic=False``): slices end on the host clock, and every launch
boots. The slice stop is a flag the native block hook acts on at a block start; Unicorn's own
emu_stop from the timer thread could be lost (a slice that never ends) or end a run mid-block
with RIP rolled back, replaying instructions (a replayed ``sub`` on preempt_count made the
guest panic with "scheduling while atomic")."""
from __future__ import annotations

import faulthandler
import struct

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn.x86_const import UC_X86_REG_RIP

from emu import Machine
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
