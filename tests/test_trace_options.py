"""``trace`` under the trace options a lab changes, byte for byte from deterministic runs: the
latency format (its header block, columns, time since the reset and gap marks), verbose,
symbol offsets and addresses, tgid, raw; for both tracers."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from test_function_graph import graph_run
from test_tracers import golden_run

from emu import Machine
from ftrace.ring_buffer_format import decode_page
from ftrace.trace_output import (IRQS_OFF, TRACE_FN, TRACE_STACK, TraceEntry, TraceFormatter, format_trace,
                                 parse_entry)

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare with the golden file (FTEMU_REGEN_GOLDEN=1 rewrites it after a deliberate
    change)."""
    if os.environ.get("FTEMU_REGEN_GOLDEN"):
        (GOLDEN / name).write_text(text)
    assert text == (GOLDEN / name).read_text()


@pytest.mark.parametrize("name,options", [
    ("trace_function_latency.txt", ("latency-format",)),
    ("trace_function_latency_verbose.txt", ("latency-format", "verbose")),
    ("trace_function_tgid_noparent.txt", ("record-tgid", "noprint-parent")),
])
def test_function_tracer_golden_traces_under_options(name, options):
    check_golden(name, golden_run(*options))


def test_symbol_offsets_addresses_and_raw_lines_name_the_same_calls():
    """Addresses move whenever the guest changes, so these are checked against its symbols
    rather than a golden file: ``kalloc+0x0/0x75 <ffffffff81001fe0>``, ``<pid> <cpu> <ts>
    <ip> <parent>``."""
    plain = [line.split(": ", 1)[1] for line in golden_run().splitlines() if not line.startswith("#")]
    m_lines = [line for line in golden_run("sym-offset", "sym-addr").splitlines() if not line.startswith("#")]
    raw = [line for line in golden_run("raw").splitlines() if not line.startswith("#")]
    m = Machine(cpus=1)
    for name_line, sym_line, raw_line in zip(plain, m_lines, raw, strict=True):
        func = name_line.split(" <-")[0]
        addr, size = m.image.symbol(func).addr, m.image.symbol(func).size
        assert sym_line.split(": ", 1)[1].startswith(f"{func}+0x0/0x{size:x} <{addr:016x}> <-")
        pid, cpu, ts, ip, parent = raw_line.split()
        assert (int(ip, 16), sym_line.split("] ")[0].split("-")[-1].split()[0]) == (addr, pid)
        assert f"<{int(parent, 16):016x}>" in sym_line and int(ts) > 0 and cpu in "01"


def test_function_graph_golden_trace_in_latency_format():
    _m, text = graph_run("latency-format", "funcgraph-proc")
    check_golden("trace_graph_latency_proc.txt", text)


def entry(cpu: int, ts: int, pid: int = 7, flags: int = 0, pc: int = 0) -> TraceEntry:
    return TraceEntry(cpu, ts, TRACE_FN, flags, pc, pid, (0x1000).to_bytes(8, "little") + bytes(8))


def formatter(*options: str, in_ns: bool = True, time_start: int = 0) -> TraceFormatter:
    return TraceFormatter(lambda ip: ("schedule", 0, 0x80) if ip == 0x1000 else None,
                          {7: "kworker/u8:1", 0: "<idle>"}.get,
                          {"context-info", "print-parent", "irq-info", *options}, in_ns, time_start)


def test_latency_lines_count_from_the_reset_and_mark_the_gap_to_the_next_entry():
    fmt = formatter("latency-format", time_start=1_000_000)
    entries = [entry(0, 1_004_400, flags=IRQS_OFF, pc=0x12), entry(1, 1_020_000),
               entry(1, 1_200_000), entry(0, 2_500_000_000)]
    assert list(fmt.lines(entries)) == [
        "kworker/-7         0d..21    4us+: schedule\n",          # next one 15.6 us later
        "kworker/-7         1.....   20us!: schedule\n",          # 180 us
        "kworker/-7         1.....  200us$: schedule\n",          # 2.5 s
        "kworker/-7         0..... 2499000us : schedule\n",       # the last: no gap
    ]


def test_verbose_latency_lines_and_a_counter_clock():
    fmt = formatter("latency-format", "verbose", time_start=1_000_000)
    assert fmt.line(entry(1, 1_004_400, flags=IRQS_OFF, pc=0x12), 1_006_000, 3) == (
        "    kworker/u8:1       7   1 1 00000002 00000003 [000003ec] 0.004ms (+0.002ms): schedule\n")
    counter = formatter("latency-format", in_ns=False, time_start=10)
    assert counter.line(entry(0, 17), 20) == "kworker/-7         0.....    7: schedule\n"


def test_an_empty_buffer_prints_no_latency_header():
    fmt = formatter("latency-format")
    assert format_trace("function", fmt, [], (0, 0), 2) == "# tracer: function\n#\n"
    text = format_trace("function", fmt, [entry(0, 5000)], (1, 3), 2)
    assert text.startswith("# tracer: function\n#\n# function latency trace v1.1.5 on 6.12.0-ftemu\n"
                           "# " + "-" * 68 + "\n"
                           "# latency: 0 us, #1/3, CPU#0 | (M:preempt VP:0, KP:0, SP:0 HP:0 #P:2)\n"
                           "#    -----------------\n"
                           "#    | task: -0 (uid:0 nice:0 policy:0 rt_prio:0)\n"
                           "#    -----------------\n#\n"
                           "#                    _------=> CPU#            \n")
    assert text.endswith("#     \\   /        ||||||  \\    |    /       \n"
                         "kworker/-7         0.....    5us : schedule\n")


def test_func_stack_trace_follows_each_function_with_its_call_chain():
    """The function tracer's own option: each event is followed by a ``<stack trace>`` of
    the traced function and its callers, written by guest code; switching it while the
    tracer runs swaps the callback (func_set_flag)."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    assert "func_stack_trace" not in tfs.read("trace_options")       # not the current tracer's
    tfs.write("set_ftrace_filter", "spin_lock_irqsave")
    tfs.write("current_tracer", "function")
    assert tfs.read("trace_options").endswith("nostacktrace\nnofunc_stack_trace\n")
    tfs.write("options/func_stack_trace", "1")
    m.run(ms=5)
    lines = [line for line in tfs.read("trace").splitlines() if not line.startswith("#")]
    events = [i for i, line in enumerate(lines) if not line.startswith(" => ")]
    assert len(events) >= 4 and len(events) % 2 == 0
    for fn, stack in zip(events[::2], events[1::2]):
        task, caller = lines[fn].split("[")[0], lines[fn].split(" <-")[1]
        assert lines[stack].split("[")[0] == task and lines[stack].endswith(": <stack trace>")
        assert lines[stack + 1:stack + 3] == [" => spin_lock_irqsave", f" => {caller}"]
    assert "down" in {lines[fn].split(" <-")[1] for fn in events[::2]}   # ping/pong's semaphores
    tfs.write("trace_options", "nofunc_stack_trace")
    tfs.write("trace", "")
    m.run(ms=5)
    text = tfs.read("trace")
    assert "spin_lock_irqsave <-" in text and "<stack trace>" not in text


def test_func_stack_trace_records_a_deep_chain_whole_in_an_event_of_its_size():
    """Deeper than the 12 callers a small event holds: bench_fib(16) nests 16 deep, and its
    innermost call's stack has every frame; each TRACE_STACK event is as long as the kernel
    makes it (16 bytes, then 8 per caller), read back from trace_pipe_raw."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.write("set_ftrace_filter", "bench_fib")
    tfs.write("current_tracer", "function")
    tfs.write("options/func_stack_trace", "1")
    m.call("bench_fib", 16)
    tail = [" => 0xffffffffa0000010", " => cpu_startup_entry", " => main", " => _text"]
    stacks = tfs.read("trace").split("<stack trace>\n")[1:]
    deepest = max(([line for line in s.splitlines() if line.startswith(" => ")] for s in stacks), key=len)
    assert deepest == [" => bench_fib"] * 16 + tail
    h = tfs.open("per_cpu/cpu0/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    sizes = []
    try:
        while True:
            try:
                page = h.read(4096, 0)
            except BlockingIOError:
                break
            for ev in decode_page(page).events:
                e = parse_entry(0, ev)
                if e.type == TRACE_STACK:
                    n = struct.unpack_from("<i", e.body)[0]
                    assert len(ev.data) == 16 + 8 * n
                    sizes.append(n)
    finally:
        h.release()
    assert len(sizes) == len(stacks) and max(sizes) == 20 and min(sizes) == 5
