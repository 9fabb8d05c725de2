"""ftrace benchmarks on a call-heavy guest workload (bench_fib: one traced call per call).

Per traced call, measured side by side in one run (headline figures as min / median / max of
interleaved samples; in each sample every variant is timed right after a run without it):
the untraced call (NOP sites against a kernel without -pg: bench_nop_sites.py); a
guest-native counting callback through its
private trampoline; a Python callback with and without SAVE_REGS; a fair naive peer (a lean
Unicorn code hook on the function entry, a raw ctypes callback as ftemu's own hooks are,
taking ip from its address argument and parent_ip from the stack through a raw RSP read and
a cached translation, recording both); 1, 2, 10 and 100 ops on one site; one relevant ops
among 1, 10 and 100 irrelevant ones; enabling and disabling every site.

Times are the CPU time of the emulating thread (``time.thread_time``): the host is shared,
and wall time would also measure whoever else runs; the peer runs on the same thread.

Run: python tools/bench/bench_ftrace.py
"""
from __future__ import annotations

import ctypes
import struct
import time
from statistics import median

from common import clock, min_med_max, row, timed, verdict
from unicorn import UC_HOOK_CODE, UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_RSP

from emu import Machine, hypercall
from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.asm import assemble

FIB_N = 20
SAMPLES = 11
SAMPLES_MORE = 5                # for the many-ops and registration rows
CALLS = 0                       # bench_fib calls per run, counted by ftrace itself below
_uc = ctypes.CDLL(uclib._name)                     # our own handle: the binding's prototypes stay
_uc.uc_reg_read.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
CODE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)


def booted() -> Machine:
    m = Machine(cpus=1)
    m.boot()
    return m


def cpu_clock(fn) -> float:
    """CPU time of this thread spent in one ``fn()``, in seconds."""
    return clock(fn, time.thread_time)


def run_fib(m: Machine) -> float:
    return timed(fib(m), 5, time.thread_time)


def native_counter(m: Machine) -> int:
    """A guest function that counts its calls: the cheapest possible callback."""
    counter = m.execmem.alloc(8, executable=False)   # data in an NX page
    func = m.execmem.alloc(32)
    m.write(func, assemble(f"mov rax, {counter}\nlock inc qword ptr [rax]\nret", func))
    return func


def fib(m: Machine):
    return lambda: m.call("bench_fib", FIB_N, max_insns=1 << 30)


def us(per_call: list[float]) -> str:
    return min_med_max([t * 1e6 for t in per_call], "{:.3f}") + " us/call"


def interleaved(m: Machine, variants: dict, samples: int = SAMPLES) -> dict[str, list[float]]:
    """Per traced call, ``samples`` rounds of every variant in turn: a run without, then one
    with it; the difference over CALLS. A variant is ``make_ops()`` (fresh ops registered for
    the run: one, or a list) or an (install, remove) pair of a hook."""
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(samples):
        for name, v in variants.items():
            base = cpu_clock(fib(m))
            if isinstance(v, tuple):
                install, remove = v
            else:
                made = v()
                ops_list = made if isinstance(made, list) else [made]
                install = lambda: [m.ftrace.register_ftrace_function(o) for o in ops_list]  # noqa: E731
                remove = lambda: [m.ftrace.unregister_ftrace_function(o) for o in ops_list]  # noqa: E731
            install()
            t = cpu_clock(fib(m))
            remove()
            out[name].append((t - base) / CALLS)
    return out


def fair_peer(m: Machine):
    """The naive tracer done well: a code hook on the function entry, called straight from C
    (a raw ctypes callback, no binding wrapper), that takes ip from its own address argument,
    reads RSP with one raw register read and the return address (parent_ip) from RAM through
    a cached translation of the stack page, and records both."""
    cpu, fib_va = m.cpus[0], m.symbol_address("bench_fib")
    uch, ram, events, pages = cpu.uc._uch, m.ram, [], {}
    u64 = struct.Struct("<Q").unpack_from
    rsp_value = ctypes.c_uint64()
    rsp_ref, reg_read = ctypes.byref(rsp_value), _uc.uc_reg_read

    def entry(_uch, address, _size, _ud):
        reg_read(uch, UC_X86_REG_RSP, rsp_ref)
        rsp = rsp_value.value
        pa = pages.get(rsp >> 12)
        if pa is None:
            pa = pages[rsp >> 12] = m.walker.translate(cpu.cr3(), rsp & ~0xFFF)
        events.append((address, u64(ram, pa + (rsp & 0xFFF))[0]))
    callback = CODE_CB(entry)
    handle = ctypes.c_size_t()
    keep = []            # a deleted hook's callback may still be named by a translated block

    def install() -> None:
        err = _uc.uc_hook_add(uch, ctypes.byref(handle), UC_HOOK_CODE, callback, None,
                              ctypes.c_uint64(fib_va), ctypes.c_uint64(fib_va))
        if err:
            raise UcError(err)
        keep.append(callback)
        cpu.remove_cache(fib_va, fib_va + 1)

    def remove() -> None:
        _uc.uc_hook_del(uch, handle)
        cpu.remove_cache(fib_va, fib_va + 1)
        if len(events) != CALLS:
            raise RuntimeError(f"the peer saw {len(events)} calls, not {CALLS}")
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
          f"headline figures are min / median / max of {SAMPLES} interleaved samples "
          f"({SAMPLES_MORE} for the many-ops and registration rows; NOP sites: "
          f"bench_nop_sites.py)")
    t_nop = run_fib(m)
    row("untraced bench_fib call (NOP sites)", f"{t_nop / CALLS * 1e9:.0f} ns/call")

    def only_fib(func, flags=0, machine: Machine = m) -> FtraceOps:
        ops = FtraceOps(func, flags)
        machine.ftrace.ftrace_set_filter(ops, "bench_fib", True)
        return ops
    native = native_counter(m)
    t = interleaved(m, {
        "native": lambda: only_fib(native),
        "python": lambda: only_fib(lambda ip, pip, op, regs: None),
        "regs": lambda: only_fib(lambda ip, pip, op, regs: regs.di, FTRACE_OPS_FL_SAVE_REGS),
        "peer": fair_peer(m)})
    row("guest-native counting callback, private trampoline", us(t["native"]),
        verdict(median(t["native"]) <= 0.15e-6) + " goal <= 0.15 us")
    row("Python callback, no regs", us(t["python"]), verdict(median(t["python"]) <= 1e-6) + " goal <= 1 us")
    row("Python callback with SAVE_REGS (reads regs.di)", us(t["regs"]),
        verdict(median(t["regs"]) <= 1.5e-6) + " goal <= 1.5 us")
    row("fair naive peer: code hook on entry recording ip, parent_ip", us(t["peer"]))
    r = [p / n for p, n in zip(t["peer"], t["native"])]
    row("  peer / native counting callback (same sample)", min_med_max(r, "{:.1f}"),
        verdict(median(r) >= 8) + " goal >= 8")
    r = [p / n for p, n in zip(t["peer"], t["python"])]
    row("  peer / Python callback without regs (same sample)", min_med_max(r, "{:.2f}"))
    native_hook, hypercall.available = hypercall.available, lambda: False
    try:
        fallback = booted()                  # its vCPUs get the ctypes out hook
    finally:
        hypercall.available = native_hook
    t = interleaved(fallback, {"python": lambda: only_fib(lambda ip, pip, op, regs: None, 0, fallback)})
    row("  the same through the ctypes out hook (no native helper)", us(t["python"]))

    def irrelevant(n: int) -> list[FtraceOps]:
        out = []
        for _ in range(n):
            ops = FtraceOps(native)
            m.ftrace.ftrace_set_filter(ops, "trace_selftest_dynamic_test_func", True)
            out.append(ops)
        return out
    variants = {f"{n} native ops on one site (list function past 1)":
                (lambda n=n: [only_fib(native) for _ in range(n)]) for n in (1, 2, 10, 100)}
    variants.update({f"1 relevant ops among {n} irrelevant":
                     (lambda n=n: [only_fib(native)] + irrelevant(n)) for n in (1, 10, 100)})
    for name, per in interleaved(m, variants, SAMPLES_MORE).items():
        row(name, us(per))

    sites = len(m.ftrace.records)
    everything, single = FtraceOps(native), only_fib(native)

    def on_off(ops: FtraceOps) -> float:
        return cpu_clock(lambda: (m.ftrace.register_ftrace_function(ops),
                                  m.ftrace.unregister_ftrace_function(ops)))
    pairs = [(on_off(everything), on_off(single)) for _ in range(SAMPLES_MORE)]
    per_site = [a / sites / 2 for a, _ in pairs]
    marginal = [(a - b) / (sites - 1) / 2 for a, b in pairs]
    row(f"enable + disable every site ({sites} sites), per site",
        min_med_max([t * 1e6 for t in per_site]) + " us/site",
        verdict(median(per_site) <= 5e-6) + " target <= 5 us")
    row("  the same without the fixed cost of one registration",
        min_med_max([t * 1e6 for t in marginal]) + " us/site")


if __name__ == "__main__":
    main()
