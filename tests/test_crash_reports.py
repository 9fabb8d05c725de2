"""Crash reports a kernel engineer can read, on a 4-CPU guest: every EmuError names the CPU
and the RIP where the fault happened (not where the panic ended), its backtrace crosses the
exception entry into the faulting frame as the kernel's unwinder does, every other CPU is
described in one line, and the guest's own Call Trace is symbolised on the console.
The faults come from guest/crashme.c, called through Machine.call."""
from __future__ import annotations

import capstone
import pytest
from unicorn.x86_const import UC_X86_REG_RBP

from emu import BudgetExceeded, GuestPanic, Machine, TripleFault

IDLE_OTHERS = [f"CPU {n} halted: arch_safe_halt+0x2/0x3 [swapper/{n} 0]" for n in (1, 2, 3)]


def at_insn(m: Machine, func: str, mnemonic: str) -> str:
    """``func+0xoff/0xsize`` of the first ``mnemonic`` instruction in ``func``."""
    sym = m.image.symbol(func)
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insn = next(i for i in cs.disasm(m.read(sym.addr, sym.size), sym.addr) if i.mnemonic == mnemonic)
    return f"{func}+0x{insn.address - sym.addr:x}/0x{sym.size:x}"


def names(frames: list[str]) -> list[str]:
    return [f.split("+")[0] for f in frames]


def crash(booted_snapshots, func: str, *args: int):
    m = booted_snapshots(4)
    with pytest.raises((GuestPanic, TripleFault)) as e:
        m.call(func, *args)
    return m, e.value


def test_a_divide_error_names_the_idiv_and_walks_through_the_exception(booted_snapshots):
    m, e = crash(booted_snapshots, "crash_divide", 1, 0)
    where = at_insn(m, "crash_divide", "idiv")
    assert (type(e), e.cpu, e.rip) == (GuestPanic, 0, where)
    assert e.message == f"guest panic: divide error at ip {where}"
    assert names(e.backtrace) == ["poweroff", "panic", "do_divide_error", "asm_exc_divide_error",
                                  "<#DE>", "crash_divide", "machine_call_return"]
    assert e.backtrace[5] == where
    assert e.others == IDLE_OTHERS
    assert str(e).splitlines()[0] == f"guest panic: divide error at ip {where} (CPU 0 at {where})"


def test_a_page_fault_in_a_callee_shows_the_callee_and_its_caller(booted_snapshots):
    m, e = crash(booted_snapshots, "crash_fault_in_callee", 0xDEAD000)
    where = at_insn(m, "crash_load", "mov")
    assert e.rip == where
    assert e.message == f"guest panic: page fault at 0xdead000 ip {where} error 0x0"
    assert names(e.backtrace) == ["poweroff", "panic", "do_page_fault", "asm_exc_page_fault",
                                  "<#PF>", "crash_load", "crash_fault_in_callee", "machine_call_return"]
    assert e.others == IDLE_OTHERS


def test_an_invalid_opcode_is_symbolised(booted_snapshots):
    m, e = crash(booted_snapshots, "crash_invalid_op")
    where = at_insn(m, "crash_invalid_op", "ud2")
    assert e.rip == where and e.message == f"guest panic: invalid opcode at ip {where}"
    assert names(e.backtrace)[4:] == ["<#UD>", "crash_invalid_op", "machine_call_return"]


def test_the_guests_call_trace_is_symbolised_on_the_console(booted_snapshots):
    m, e = crash(booted_snapshots, "crash_invalid_op")
    lines = m.console.splitlines()
    trace = lines[lines.index("Call Trace:") + 1:]
    assert names([t.strip() for t in trace[:3]]) == ["panic", "do_invalid_op", "asm_exc_invalid_op"]
    assert all("[<" not in t and t.startswith("  ") and "+0x" in t for t in trace)


def test_a_triple_fault_names_the_instruction_that_started_it(booted_snapshots):
    m, e = crash(booted_snapshots, "crash_triple_fault")
    where = at_insn(m, "crash_triple_fault", "ud2")
    assert (type(e), e.cpu, e.rip) == (TripleFault, 0, where)
    assert e.backtrace == [where, "machine_call_return+0x0/0x1"]
    assert e.others == IDLE_OTHERS


def test_a_budget_overrun_describes_every_cpu():
    m = Machine(cpus=4, cmdline="console=ttyS0 bench=4")
    m.boot()
    with pytest.raises(BudgetExceeded) as e:
        m.run_until(lambda: False, budget_ms=1)
    assert e.value.cpu == 0 and e.value.backtrace[0] == e.value.rip
    assert [line.split(":")[0] for line in e.value.others] == [f"CPU {n} running" for n in (1, 2, 3)]
    for line in e.value.others:
        task = line.rsplit("[", 1)[1]
        assert " bench_fib+0x" in line and task.startswith("benchd ") and task.endswith("]")
    assert str(e.value).splitlines()[-3:] == [" " + line for line in e.value.others]


def test_an_interrupted_context_is_crossed_into(booted_snapshots):
    """Stopped at the entry of the timer interrupt's C handler (no frame of its own yet), the
    backtrace goes through the IRQ entry into the code the interrupt came in."""
    m = booted_snapshots(4)
    seen = []
    hook = m.add_code_hook(m.symbol_address("sysvec_apic_timer_interrupt"),
                           lambda cpu: seen.append(m.backtrace(cpu, cpu.rip(), cpu.regs.read(UC_X86_REG_RBP))))
    m.run(ms=3)
    hook.remove()
    frames = seen[0]
    assert frames[0] == "sysvec_apic_timer_interrupt+0x0/" + frames[0].rsplit("/", 1)[1]
    assert names(frames)[1:3] == ["asm_sysvec_apic_timer_interrupt", "<IRQ>"]
    assert frames[3] != "" and not frames[3].startswith("<")
