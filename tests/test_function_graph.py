"""The function_graph tracer as its tutorials use it: nesting, leaf lines, durations, the
funcgraph options, max_graph_depth; return values survive the return hijack; tasks switch,
CPUs go offline and NMIs arrive while functions are hijacked."""
from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from emu import Machine
from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.ring_buffer_format import decode_page
from ftrace.trace_output import parse_entry

GOLDEN = Path(__file__).parent / "golden"


def graph_run(*options: str, depth: int = 0, **files: str) -> tuple[Machine, str]:
    """kalloc on CPU 0, kfree and the self-test function on CPU 1, every function traced,
    with the counter clock (the text depends on what runs, not on boot timing); ``files``
    (e.g. set_graph_function) are written first."""
    m = Machine(cpus=2)
    m.boot()
    tfs = m.tracefs
    for path, value in files.items():
        tfs.write(path, value)
    for opt in options:
        tfs.write("trace_options", opt)
    tfs.write("max_graph_depth", str(depth))
    tfs.write("trace_clock", "counter")
    tfs.write("current_tracer", "function_graph")
    tfs.write("trace", "")
    page = m.call("kalloc", cpu=0)
    m.call("kfree", page, cpu=1)
    m.call("trace_selftest_dynamic_test_func", cpu=1)
    tfs.write("tracing_on", "0")
    return m, tfs.read("trace")


@pytest.mark.parametrize("name,options", [
    ("trace_graph_default.txt", ()),
    ("trace_graph_proc_tail_noirq.txt", ("funcgraph-proc", "funcgraph-tail", "noirq-info",
                                         "nofuncgraph-overhead")),
])
def test_function_graph_golden_traces(name, options):
    """Header, CPU column, nesting, leaves and durations byte for byte (regenerate with
    FTEMU_REGEN_GOLDEN=1 after a deliberate guest change)."""
    _m, text = graph_run(*options)
    if os.environ.get("FTEMU_REGEN_GOLDEN"):
        (GOLDEN / name).write_text(text)
    assert text == (GOLDEN / name).read_text()


def test_nesting_leaves_and_the_header():
    _m, text = graph_run()
    assert text.startswith("# tracer: function_graph\n#\n"
                           "# CPU  DURATION                  FUNCTION CALLS\n"
                           "# |     |   |                     |   |   |   |\n")
    body = text.splitlines()[4:]
    assert body[0] == " 0)               |  kalloc() {"
    assert body[1].startswith(" 0)   0.001 us    |    spin_lock_irqsave();")
    assert body[3].startswith(" 0)   0.005 us    |  }")
    assert body[-1] == " 1)   0.001 us    |  trace_selftest_dynamic_test_func();"


def test_max_graph_depth_one_keeps_only_the_outermost_calls():
    m, text = graph_run(depth=1)
    assert m.tracefs.read("max_graph_depth") == "1\n"
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert [line.split("|  ")[1] for line in body] == [
        "kalloc();", "kfree();", "trace_selftest_dynamic_test_func();"]


def test_return_values_survive_the_hijack_and_are_recorded():
    m = Machine(cpus=1)
    m.boot()
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "kalloc", True)
    m.tracefs.write("current_tracer", "function_graph")
    page = m.call("kalloc")
    assert page >> 40 == 0xFFFF88                    # a direct-map page, as without tracing
    h = m.tracefs.open("per_cpu/cpu0/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    entries = [parse_entry(0, ev) for ev in decode_page(h.read(4096, 0)).events]
    assert [e.type for e in entries] == [11, 10]     # funcgraph_entry, funcgraph_exit
    func, retval, depth, overrun, calltime, rettime = struct.unpack_from("<QQiIQQ", entries[1].body)
    assert (func, retval, depth, overrun) == (m.symbol_address("kalloc"), page, 0, 0)
    assert calltime == entries[0].ts and rettime == entries[1].ts > calltime


def test_context_switches_hotplug_and_nmis_while_functions_are_hijacked():
    m = Machine(cpus=2, nmi_period_ms=1)
    m.boot()
    m.tracefs.write("current_tracer", "function_graph")
    m.run(ms=10)
    m.cpu_down(1)
    m.run(ms=3)
    m.cpu_up(1)
    m.run(ms=10)
    text = m.tracefs.read("trace")
    assert " => " in text and "schedule() {" in text
    m.tracefs.write("current_tracer", "nop")
    m.run(ms=20)                      # returns still hijacked come back through the handler
    assert m.stats()["total"]["nmis"] > 0 and "panic" not in m.console


def test_switching_tracers_starts_from_an_empty_buffer():
    m = Machine(cpus=1)
    m.boot()
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "kalloc", True)
    m.tracefs.write("current_tracer", "function")
    m.call("kalloc")
    m.tracefs.write("current_tracer", "function_graph")
    assert m.tracefs.read("trace").splitlines()[4:] == []
    m.call("kalloc")
    assert m.tracefs.read("trace").splitlines()[4].endswith("|  kalloc();")


FUNCS = ("kalloc", "kfree", "free_page")


def test_the_hijacked_return_is_found_through_every_kind_of_trampoline():
    """function_graph alone on its functions (a private trampoline without pt_regs), with a
    second ops on them (the list function) and with one that wants regs (ftrace_regs_caller,
    so the list function passes pt_regs): the return addresses are found each time and the
    trace is the same."""
    def graph(other_flags: int | None) -> str:
        m = Machine(cpus=1)
        m.boot()
        seen = []
        if other_flags is not None:
            ops = FtraceOps(lambda ip, parent, op, regs: seen.append(regs is not None), other_flags)
            for i, name in enumerate(FUNCS):
                m.ftrace.ftrace_set_filter(ops, name, i == 0)
            m.ftrace.register_ftrace_function(ops)
        for i, name in enumerate(FUNCS):
            m.ftrace.ftrace_set_filter(m.tracing.top.ops, name, i == 0)
        m.tracefs.write("trace_clock", "counter")
        m.tracefs.write("current_tracer", "function_graph")
        seen.clear()
        m.call("kfree", m.call("kalloc"))
        assert set(seen) == ({other_flags == FTRACE_OPS_FL_SAVE_REGS} if seen else set())
        assert len(seen) == (0 if other_flags is None else 3)
        return m.tracefs.read("trace")
    alone = graph(None)
    assert "kalloc();" in alone and "free_page();" in alone and "kfree() {" in alone
    assert graph(0) == alone
    assert graph(FTRACE_OPS_FL_SAVE_REGS) == alone


@pytest.mark.parametrize("clock", ["local", "counter"])
@pytest.mark.parametrize("graph_function", ["", "bench_fib"])
def test_a_hijacked_return_goes_to_the_handler_of_its_arrays_clock(clock, graph_function):
    """Each fast clock has its own return handler (it tests that clock, no branch on it);
    the fast entry and the general one (set_graph_function) both hijack returns to it."""
    m = Machine(cpus=1)
    m.boot()
    t = m.tracefs
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
    t.write("set_graph_function", graph_function)
    t.write("trace_clock", clock)
    t.write("current_tracer", "function_graph")
    symbols = {name: addr for addr, (name, _size) in m.tracing.ft.x86.symbols.items()}
    hits = {"local": 0, "counter": 0}
    hooks = [m.add_code_hook(symbols[name], lambda cpu, k=k: hits.__setitem__(k, hits[k] + 1))
             for k, name in (("local", "return_to_handler"), ("counter", "return_to_handler_counter"))]
    m.call("bench_fib", 6)
    for h in hooks:
        h.remove()
    calls = t.read("trace").count("bench_fib(")
    assert calls > 10 and hits == {clock: calls, ("counter" if clock == "local" else "local"): 0}


def test_a_cpus_trace_file_is_in_the_graph_format_too():
    """per_cpu/cpuN/trace under function_graph: the graph header and that CPU's lines, as
    the whole ``trace`` shows them."""
    m, text = graph_run()
    header = "".join(text.splitlines(keepends=True)[:4])
    for cpu in (0, 1):
        lines = [line for line in text.splitlines(keepends=True)[4:] if line.startswith(f" {cpu}) ")]
        assert lines
        assert m.tracefs.read(f"per_cpu/cpu{cpu}/trace") == header + "".join(lines)


def test_tracing_thresh_keeps_only_returns_that_took_at_least_that_long():
    """tracing_thresh in microseconds: function_graph writes no entries, and a return only
    for a call that lasted at least that long (printed ``} /* name */``, as its entry is
    not there); the profiler leaves out functions whose average is below it. Bad numbers
    are EINVAL; 0 turns it off."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    assert tfs.read("tracing_thresh") == "0\n"
    for bad in ("abc", "-1", "1.5"):
        with pytest.raises(OSError) as e:
            tfs.write("tracing_thresh", bad)
        assert e.value.errno == errno.EINVAL
    tfs.write("set_ftrace_filter", "bench_fib")
    tfs.write("current_tracer", "function_graph")
    tfs.write("tracing_thresh", "5\n")
    assert tfs.read("tracing_thresh") == "5\n"
    m.call("bench_fib", 6)
    lines = [line for line in tfs.read("trace").splitlines() if not line.startswith("#")]
    assert lines and all(line.endswith("} /* bench_fib */") for line in lines)
    durations = [float(line.split(")")[1].split("us")[0].strip(" +!")) for line in lines]
    assert min(durations) >= 5.0
    tfs.write("tracing_thresh", "0")
    tfs.write("trace", "")
    m.call("bench_fib", 6)
    every = [line for line in tfs.read("trace").splitlines() if not line.startswith("#")]
    assert len(every) > len(lines) and any(line.endswith("bench_fib() {") for line in every)
    tfs.write("current_tracer", "nop")
    tfs.write("function_profile_enabled", "1")
    m.call("bench_fib", 6)
    assert "bench_fib" in tfs.read("trace_stat/function0")
    tfs.write("tracing_thresh", "100000")
    assert tfs.read("trace_stat/function0").count("\n") == 2          # the header only
