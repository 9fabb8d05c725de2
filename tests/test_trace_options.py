"""``trace`` under the trace options a lab changes, byte for byte from deterministic runs: the
latency format (its header block, columns, time since the reset and gap marks), verbose,
symbol offsets and addresses, tgid, raw; for both tracers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_function_graph import graph_run
from test_tracers import golden_run

from ftrace.trace_output import IRQS_OFF, TRACE_FN, TraceEntry, TraceFormatter, format_trace

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
    ("trace_function_symaddr_tgid.txt", ("sym-offset", "sym-addr", "record-tgid")),
    ("trace_function_raw.txt", ("raw",)),
])
def test_function_tracer_golden_traces_under_options(name, options):
    check_golden(name, golden_run(*options))


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
