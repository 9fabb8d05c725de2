"""ftrace benchmarks on a call-heavy guest workload (bench_fib: one traced call per call).

Per traced call, measured side by side in one run: NOP sites vs a kernel built without -pg;
a guest-native counting callback through its private trampoline; a Python callback with and
without SAVE_REGS; a plain Unicorn UC_HOOK_CODE on the function entry reading ip and the
return address (the naive peer); 1, 2, 10 and 100 ops on one site; one relevant ops among
1, 10 and 100 irrelevant ones; enabling and disabling every site.

Run: python tools/bench/bench_ftrace.py
"""
from __future__ import annotations

import struct

from common import row, timed, verdict
from unicorn import UC_HOOK_CODE
from unicorn.x86_const import UC_X86_REG_RIP, UC_X86_REG_RSP

from emu import Machine, kbuild
from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.asm import assemble

FIB_N = 18
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
    print(f"ftemu ftrace benchmarks: bench_fib({FIB_N}) = {CALLS} traced calls per run (medians)")
    nopg = booted(kbuild.kernel_path("kernel-nopg"))
    t_nop, t_nopg = run_fib(m), run_fib(nopg)
    ratio = t_nop / t_nopg
    row("NOP sites vs kernel without -pg", f"{ratio:.3f}", verdict(ratio <= 1.03) + " target <= 1.03")
    row("  (one bench_fib call per traced call)", f"{t_nop / CALLS * 1e9:.0f} ns/call")

    def only_fib(func, flags=0) -> FtraceOps:
        ops = FtraceOps(func, flags)
        m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
        return ops
    native = native_counter(m)
    t = per_call(m, t_nop, only_fib(native))
    row("guest-native counting callback, private trampoline", f"{t * 1e6:.3f} us/call", verdict(t <= 0.5e-6) + " target <= 0.5 us")
    t = per_call(m, t_nop, only_fib(lambda ip, pip, op, regs: None))
    row("Python callback, no regs", f"{t * 1e6:.3f} us/call")
    t = per_call(m, t_nop, only_fib(lambda ip, pip, op, regs: regs.di, FTRACE_OPS_FL_SAVE_REGS))
    row("Python callback with SAVE_REGS (reads regs.di)", f"{t * 1e6:.3f} us/call", verdict(t <= 3e-6) + " target <= 3 us")

    events = []
    fib = m.symbol_address("bench_fib")

    def naive(uc, address, size, ud):
        rsp = uc.reg_read(UC_X86_REG_RSP)
        events.append((uc.reg_read(UC_X86_REG_RIP), struct.unpack("<Q", m.read(rsp, 8))[0]))
    h = m.cpus[0].uc.hook_add(UC_HOOK_CODE, naive, None, fib, fib)
    m.cpus[0].uc.ctl_remove_cache(fib, fib + 1)
    t = (run_fib(m) - t_nop) / CALLS
    m.cpus[0].uc.hook_del(h)
    m.cpus[0].uc.ctl_remove_cache(fib, fib + 1)
    row("naive peer: UC_HOOK_CODE on entry reading ip + return address", f"{t * 1e6:.3f} us/call")

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
