"""ftrace benchmarks on a call-heavy guest workload (bench_fib: one traced call per call).

Per traced call, measured side by side in one run (headline figures as min / median / max of
interleaved samples, each a run without beside a run with): NOP sites vs a kernel built
without -pg; a guest-native counting callback through its private trampoline; a Python
callback with and without SAVE_REGS; a fair naive peer (a Unicorn code hook on the function
entry taking ip from its address argument and parent_ip from the stack through raw register
reads and a cached translation); 1, 2, 10 and 100 ops on one site; one relevant ops among 1,
10 and 100 irrelevant ones; enabling and disabling every site.

Run: python tools/bench/bench_ftrace.py
"""
from __future__ import annotations

import struct
from statistics import median

from common import clock, min_med_max, row, timed, verdict
from unicorn import UC_HOOK_CODE
from unicorn.x86_const import UC_X86_REG_RSP

from emu import Machine, kbuild
from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.asm import assemble

FIB_N = 18
SAMPLES = 9
CALLS = 0                       # bench_fib calls per run, counted by ftrace itself below


def booted(kernel=None) -> Machine:
    m = Machine(cpus=1, kernel=kernel)
    m.boot()
    return m


def run_fib(m: Machine) -> float:
    return timed(lambda: m.call("bench_fib", FIB_N), 5)


def native_counter(m: Machine) -> int:
    """A guest function that counts its calls: the cheapest possible callback."""
    counter = m.execmem.alloc(8, executable=False)   # data in an NX page
    func = m.execmem.alloc(32)
    m.write(func, assemble(f"mov rax, {counter}\nlock inc qword ptr [rax]\nret", func))
    return func


def per_call(m: Machine, base: float, *ops_list: FtraceOps) -> float:
    ft = m.ftrace
    for ops in ops_list:
        ft.register_ftrace_function(ops)
    t = run_fib(m)
    for ops in ops_list:
        ft.unregister_ftrace_function(ops)
    return (t - base) / CALLS


def fib(m: Machine):
    return lambda: m.call("bench_fib", FIB_N)


def us(per_call: list[float]) -> str:
    return min_med_max([t * 1e6 for t in per_call], "{:.3f}") + " us/call"


def paired_per_call(m: Machine, make_ops, hook=None) -> list[float]:
    """Per traced call, SAMPLES times: a run without, then one with the ops (made fresh by
    ``make_ops()``) or the (install, remove) ``hook``; the difference over CALLS."""
    out = []
    for _ in range(SAMPLES):
        base = clock(fib(m))
        if hook is not None:
            hook[0]()
        else:
            ops = make_ops()
            m.ftrace.register_ftrace_function(ops)
        t = clock(fib(m))
        if hook is not None:
            hook[1]()
        else:
            m.ftrace.unregister_ftrace_function(ops)
        out.append((t - base) / CALLS)
    return out


def fair_peer(m: Machine):
    """The naive tracer done well: a Unicorn code hook on the function entry that takes ip from
    its own address argument, reads RSP with a raw register read and the return address
    (parent_ip) from RAM through a cached translation of the stack page, and records both."""
    cpu, fib_va = m.cpus[0], m.symbol_address("bench_fib")
    regs, ram, events, pages = cpu.regs, m.ram, [], {}
    u64 = struct.Struct("<Q").unpack_from

    def entry(uc, address, size, ud):
        rsp = regs.read(UC_X86_REG_RSP)
        page = rsp & ~0xFFF
        pa = pages.get(page)
        if pa is None:
            pa = pages[page] = m.walker.translate(cpu.cr3(), page)
        events.append((address, u64(ram, pa + (rsp & 0xFFF))[0]))
    handle = []

    def install() -> None:
        handle.append(cpu.uc.hook_add(UC_HOOK_CODE, entry, None, fib_va, fib_va))
        cpu.remove_cache(fib_va, fib_va + 1)

    def remove() -> None:
        cpu.uc.hook_del(handle.pop())
        cpu.remove_cache(fib_va, fib_va + 1)
        events.clear()
    return install, remove


def count_calls(m: Machine) -> int:
    """gcc turns one of fib's two recursive calls into a loop: count the real calls."""
    seen = []
    ops = FtraceOps(lambda *a: seen.append(1))
    m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
    m.ftrace.register_ftrace_function(ops)
    m.call("bench_fib", FIB_N)
    m.ftrace.unregister_ftrace_function(ops)
    return len(seen)


def main() -> None:
    global CALLS
    m = booted()
    CALLS = count_calls(m)
    print(f"ftemu ftrace benchmarks: bench_fib({FIB_N}) = {CALLS} traced calls per run; "
          f"headline figures are min / median / max of {SAMPLES} interleaved samples")
    nopg = booted(kbuild.kernel_path("kernel-nopg"))
    ratios = [clock(fib(m)) / clock(fib(nopg)) for _ in range(SAMPLES)]
    row("NOP sites vs kernel without -pg", min_med_max(ratios, "{:.3f}"),
        verdict(median(ratios) <= 1.02) + " goal <= 1.02")
    t_nop = run_fib(m)
    row("  (one bench_fib call per traced call)", f"{t_nop / CALLS * 1e9:.0f} ns/call")

    def only_fib(func, flags=0) -> FtraceOps:
        ops = FtraceOps(func, flags)
        m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
        return ops
    native = native_counter(m)
    t_native = paired_per_call(m, lambda: only_fib(native))
    row("guest-native counting callback, private trampoline", us(t_native),
        verdict(median(t_native) <= 0.15e-6) + " goal <= 0.15 us")
    t = paired_per_call(m, lambda: only_fib(lambda ip, pip, op, regs: None))
    row("Python callback, no regs", us(t), verdict(median(t) <= 1e-6) + " goal <= 1 us")
    t = paired_per_call(m, lambda: only_fib(lambda ip, pip, op, regs: regs.di, FTRACE_OPS_FL_SAVE_REGS))
    row("Python callback with SAVE_REGS (reads regs.di)", us(t), verdict(median(t) <= 1.5e-6) + " goal <= 1.5 us")
    t_peer = paired_per_call(m, None, fair_peer(m))
    row("fair naive peer: code hook on entry recording ip, parent_ip", us(t_peer))
    r = [p / n for p, n in zip(t_peer, t_native)]
    row("  peer / native counting callback", min_med_max(r, "{:.1f}"),
        verdict(median(r) >= 8) + " goal >= 8")

    for n in (1, 2, 10, 100):
        t = per_call(m, t_nop, *[only_fib(native) for _ in range(n)])
        row(f"{n} native ops on one site", f"{t * 1e6:.3f} us/call")
    for n in (1, 10, 100):
        irrelevant = []
        for _ in range(n):
            ops = FtraceOps(native)
            m.ftrace.ftrace_set_filter(ops, "trace_selftest_dynamic_test_func", True)
            irrelevant.append(ops)
        t = per_call(m, t_nop, only_fib(native), *irrelevant)
        row(f"1 relevant ops among {n} irrelevant", f"{t * 1e6:.3f} us/call")

    sites = len(m.ftrace.records)
    everything = FtraceOps(native)
    t_all = timed(lambda: (m.ftrace.register_ftrace_function(everything),
                           m.ftrace.unregister_ftrace_function(everything)), 5)
    single = only_fib(native)
    t_one = timed(lambda: (m.ftrace.register_ftrace_function(single),
                           m.ftrace.unregister_ftrace_function(single)), 5)
    per_site = t_all / sites / 2
    marginal = (t_all - t_one) / (sites - 1) / 2
    row(f"enable + disable every site ({sites} sites), per site", f"{per_site * 1e6:.2f} us/site",
        verdict(per_site <= 5e-6) + " target <= 5 us")
    row("  the same without the fixed cost of one registration", f"{marginal * 1e6:.2f} us/site")


if __name__ == "__main__":
    main()
