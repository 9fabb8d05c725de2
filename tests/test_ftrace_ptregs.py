"""The pt_regs a SAVE_REGS callback gets: a view of the trampoline's frame in guest memory.
What the callback writes is what the traced function runs with; what it keeps stays readable
as it was; nested callbacks each see their own frame; a frame across a page boundary works
the same."""
from __future__ import annotations

import pytest

from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.asm import assemble


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def on_bench_fib(m, callback) -> FtraceOps:
    ops = FtraceOps(callback, FTRACE_OPS_FL_SAVE_REGS)
    m.ftrace.ftrace_set_filter(ops, "bench_fib", True)
    m.ftrace.register_ftrace_function(ops)
    return ops


def test_writing_an_argument_register_changes_what_the_traced_function_runs_with(booted_snapshots):
    m = booted_snapshots(1)

    def callback(ip, parent_ip, op, regs):
        if regs.di == 20:
            regs.di = 7                    # only the outermost call: bench_fib(7) runs instead
    ops = on_bench_fib(m, callback)
    assert m.call("bench_fib", 20) == fib(7)
    m.ftrace.unregister_ftrace_function(ops)
    assert m.call("bench_fib", 20) == fib(20)


def test_a_kept_regs_reads_the_frame_as_its_callback_left_it_and_refuses_writes(booted_snapshots):
    m = booted_snapshots(1)
    kept, read_inside = [], []

    def callback(ip, parent_ip, op, regs):
        regs.si = 0x1234 + regs.di          # bench_fib has one argument: rsi is free
        kept.append(regs)
        read_inside.append((regs.di, regs.si, regs.ip))
    ops = on_bench_fib(m, callback)
    assert m.call("bench_fib", 6) == fib(6)
    m.ftrace.unregister_ftrace_function(ops)
    entry = m.symbol_address("bench_fib") + 5
    assert len(kept) > 6 and len(set(map(id, kept))) == len(kept)     # a view per call
    assert [(r.di, r.si, r.ip) for r in kept] == read_inside
    assert read_inside[0] == (6, 0x1234 + 6, entry)
    with pytest.raises(AttributeError, match="its callback returned"):
        kept[0].di = 1
    assert kept[0].di == 6


def test_a_nested_call_from_a_callback_leaves_the_outer_callback_its_own_frame(booted_snapshots):
    m = booted_snapshots(1)
    seen, nested = [], []

    def callback(ip, parent_ip, op, regs):
        if nested:
            return                              # a call traced inside the nested call
        before = (regs.di, regs.ip)
        nested.append(True)
        inner = m.call("bench_fib", 3)          # its calls come back here with frames of their own
        nested.pop()
        seen.append((before, (regs.di, regs.ip), inner))
    ops = on_bench_fib(m, callback)
    assert m.call("bench_fib", 6) == fib(6)
    m.ftrace.unregister_ftrace_function(ops)
    entry = m.symbol_address("bench_fib") + 5
    assert len(seen) > 6 and seen[0][0] == (6, entry)
    assert all(before == after and inner == fib(3) for before, after, inner in seen)


def test_a_frame_across_a_page_boundary_is_read_and_written_like_any_other(booted_snapshots):
    m = booted_snapshots(1)
    # A caller that lowers the stack by `pad` before calling bench_fib(10): the trampoline's
    # frame moves with it, so a first run finds where the frame is and a second puts it
    # across a page boundary.
    caller = m.execmem.alloc(64)

    def call_with_pad(pad: int) -> int:
        m.write(caller, assemble(f"sub rsp, {pad}\nmov edi, 10\ncall {m.symbol_address('bench_fib')}\n"
                                 f"add rsp, {pad}\nret", caller))
        m.invalidate_code(caller, 64)
        return m.call(caller)
    frames = []

    def callback(ip, parent_ip, op, regs):
        if regs.di == 10:
            frames.append((regs.address, regs.ip, regs.cs, regs.ss))
            regs.di = 8
    ops = on_bench_fib(m, callback)
    assert call_with_pad(0) == fib(8)
    at = frames[0][0]
    pad = ((at & 0xFFF) - 0xFA0) % 0x1000          # the frame then starts 0x60 before a page end
    assert call_with_pad(pad) == fib(8)
    m.ftrace.unregister_ftrace_function(ops)
    entry = m.symbol_address("bench_fib") + 5
    assert frames[1] == (at - pad, entry, 0x10, 0x18)
    assert (frames[1][0] & 0xFFF) + 168 > 0x1000
