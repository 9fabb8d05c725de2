"""NMIs at awkward moments and each vCPU's clock: an NMI raised while the guest is still
building its IDT is taken once the NMI gate exists (never a triple fault), and no vCPU's
clock ever steps back, whatever the host does between slices (sync_cores bursts during a
registration, calls)."""
from __future__ import annotations

from collections import defaultdict

from emu import Machine
from ftrace import FtraceOps


def nmi_on_first_visit(m: Machine, symbol: str) -> None:
    """Raise an NMI on CPU 0 the first time it reaches ``symbol`` (and end its slice there)."""
    def fire(cpu) -> None:
        hook.remove()
        m.nmi(0)
        cpu.request_stop()
    hook = m.add_code_hook(m.symbol_address(symbol), fire)


def test_an_nmi_while_the_boot_cpu_sets_up_its_idt_is_taken_later():
    m = Machine(cpus=1)
    for symbol in ("idt_init", "idt_load", "uart_init"):
        nmi_on_first_visit(m, symbol)
    m.boot()
    assert m.stats()["total"]["nmis"] >= 1            # held NMIs latch into one, as on hardware


def test_an_nmi_before_the_nmi_gate_is_filled_waits_for_it(tiny_kernel):
    m = Machine(kernel=tiny_kernel("LIDT_FIRST"))     # lidt, then fill the table
    nmi_on_first_visit(m, "idt_fill")
    m.run(ms=50)
    assert m.exit_code == 42 + 5
    assert m.read_u64(m.symbol_address("nmi_count")) == 1


def test_no_vcpu_clock_steps_back_around_registrations():
    m = Machine(cpus=2, cmdline="console=ttyS0 bench=2")
    m.boot()
    seen = defaultdict(list)
    hook = m.add_code_hook(m.symbol_address("bench_fib"), lambda cpu: seen[cpu.index].append(cpu.now()))
    ops = FtraceOps(lambda ip, pip, op, regs: None)
    m.run(ms=0.3)
    m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
    m.ftrace.register_ftrace_function(ops)            # three sync_cores rounds of bursts
    m.run(ms=0.3)
    m.ftrace.unregister_ftrace_function(ops)
    m.run(ms=0.3)
    hook.remove()
    assert set(seen) >= {0, 1}
    for cpu in (0, 1):
        assert seen[cpu] == sorted(seen[cpu]), f"CPU {cpu}'s clock stepped back"
