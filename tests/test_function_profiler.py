"""The function profiler as ftrace.rst tells a user to run it: ``echo 1 >
function_profile_enabled``, let the guest run, ``cat trace_stat/function0``. Counting and
timing happen in guest code; these tests read what it counted."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from ftrace.ftrace_profile import HEADER, stat_line

GOLDEN = Path(__file__).parent / "golden"
FILTER = "kalloc kfree spin_lock_irqsave spin_unlock_irqrestore trace_selftest_dynamic_test_func"
ROW = re.compile(r"^  (.{30})  ([ \d]{10})    (.{12})    (.{12})    (.{12})$")


def profile_calls(m, rounds: int = 3) -> None:
    """kalloc on CPU 0 and kfree on CPU 1 ``rounds`` times, then the self-test function on
    CPU 1: guest calls with interrupts off, so the same run gives the same times."""
    for _ in range(rounds):
        page = m.call("kalloc", cpu=0)
        m.call("kfree", page, cpu=1)
    m.call("trace_selftest_dynamic_test_func", cpu=1)


def rows(text: str) -> dict[str, tuple[int, str, str, str]]:
    """trace_stat rows by function: hits, time, avg, s^2 (as printed)."""
    assert text.startswith(HEADER)
    out = {}
    for line in text[len(HEADER):].splitlines():
        m = ROW.match(line)
        assert m, f"not a profile row: {line!r}"
        out[m.group(1).rstrip()] = (int(m.group(2)), *(g.strip() for g in m.group(3, 4, 5)))
    return out


def us(text: str) -> float:
    return float(text.removesuffix(" us"))


@pytest.fixture
def m(machine_factory):
    return machine_factory(cpus=2)


def test_trace_stat_golden(m):
    """Header, columns, per-CPU files and the order (total time, largest first), byte for
    byte from a deterministic run (regenerate with FTEMU_REGEN_GOLDEN=1)."""
    t = m.tracefs
    t.write("set_ftrace_filter", FILTER)
    t.write("function_profile_enabled", "1")
    profile_calls(m)
    t.write("function_profile_enabled", "0")
    text = t.read("trace_stat/function0") + t.read("trace_stat/function1")
    if os.environ.get("FTEMU_REGEN_GOLDEN"):
        (GOLDEN / "trace_stat_functions.txt").write_text(text)
    assert text == (GOLDEN / "trace_stat_functions.txt").read_text()


def test_each_cpu_counts_its_own_hits(m):
    t = m.tracefs
    assert t.listdir("trace_stat") == ["function0", "function1"]
    assert t.read("function_profile_enabled") == "0\n"
    assert t.read("trace_stat/function0") == HEADER          # never enabled: the header only
    t.write("set_ftrace_filter", FILTER)
    t.write("function_profile_enabled", "1")
    assert t.read("function_profile_enabled") == "1\n"
    profile_calls(m, rounds=4)
    cpu0, cpu1 = rows(t.read("trace_stat/function0")), rows(t.read("trace_stat/function1"))
    assert {k: v[0] for k, v in cpu0.items()} == {
        "kalloc": 4, "spin_lock_irqsave": 4, "spin_unlock_irqrestore": 4}
    assert {k: v[0] for k, v in cpu1.items()} == {
        "kfree": 4, "spin_lock_irqsave": 4, "spin_unlock_irqrestore": 4,
        "trace_selftest_dynamic_test_fu": 1}        # %-30.30s cuts the name
    hits, total, avg, _var = cpu0["kalloc"]
    assert us(avg) == pytest.approx(us(total) / hits, abs=0.001)
    # A function's time holds its callees': kalloc takes the lock inside.
    assert us(total) > us(cpu0["spin_lock_irqsave"][1]) + us(cpu0["spin_unlock_irqrestore"][1])


def test_a_single_hit_has_no_variance_and_the_same_total_and_average(m):
    t = m.tracefs
    t.write("set_ftrace_filter", "trace_selftest_dynamic_test_func")
    t.write("function_profile_enabled", "1")
    m.call("trace_selftest_dynamic_test_func", cpu=0)
    (hits, total, avg, var), = rows(t.read("trace_stat/function0")).values()
    assert (hits, var) == (1, "0.000 us") and total == avg


def test_the_line_format_is_the_kernels():
    """function_stat_show: %-30.30s, %10lu, then trace_print_graph_duration three times;
    s^2 = (n*sum(x^2) - sum(x)^2) / (n*(n-1)*1000)."""
    line = stat_line("kalloc", 3, 140970, 3 * 46990 ** 2 + 126)
    assert line == f"  {'kalloc':<30}  {3:>10}    140.970 us      46.990 us       0.000 us    \n"
    assert stat_line("a" * 40, 2, 3000, 5_000_000).startswith("  " + "a" * 30 + "           2")
    assert stat_line("f", 2, 3000, 5_000_000).endswith("    1.500 us        0.500 us    \n")


def test_disabling_freezes_the_counts_and_enabling_starts_over(m):
    t = m.tracefs
    t.write("function_profile_enabled", "1")
    m.run(5)
    t.write("function_profile_enabled", "0")
    frozen = t.read("trace_stat/function0")
    assert len(rows(frozen)) > 10
    m.run(5)
    assert t.read("trace_stat/function0") == frozen
    assert "profile_graph_entry" not in t.read("enabled_functions")
    t.write("set_ftrace_filter", "trace_selftest_dynamic_test_func")
    t.write("function_profile_enabled", "1")
    assert t.read("trace_stat/function0") == HEADER
    m.call("trace_selftest_dynamic_test_func", cpu=0)
    assert list(rows(t.read("trace_stat/function0"))) == ["trace_selftest_dynamic_test_fu"]


def test_the_profiler_follows_set_ftrace_filter_while_it_runs(m):
    t = m.tracefs
    t.write("set_ftrace_filter", "kalloc")
    t.write("function_profile_enabled", "1")
    assert t.read("enabled_functions").splitlines()[0].startswith("kalloc (1) R ")
    profile_calls(m, rounds=1)
    assert list(rows(t.read("trace_stat/function0"))) == ["kalloc"]
    t.write("set_ftrace_filter", "kfree")
    profile_calls(m, rounds=1)
    assert list(rows(t.read("trace_stat/function0"))) == ["kalloc"]
    assert list(rows(t.read("trace_stat/function1"))) == ["kfree"]
    t.write("set_ftrace_notrace", "kfree")
    profile_calls(m, rounds=1)
    assert rows(t.read("trace_stat/function1"))["kfree"][0] == 1


def test_without_graph_time_a_function_leaves_out_its_profiled_childrens_time(m):
    t = m.tracefs
    t.write("set_ftrace_filter", "kalloc spin_lock_irqsave spin_unlock_irqrestore")
    t.write("function_profile_enabled", "1")
    m.call("kalloc", cpu=0)
    with_children = rows(t.read("trace_stat/function0"))
    t.write("function_profile_enabled", "0")
    t.write("options/graph-time", "0")
    t.write("function_profile_enabled", "1")
    m.call("kalloc", cpu=0)
    own = rows(t.read("trace_stat/function0"))
    children = us(own["spin_lock_irqsave"][1]) + us(own["spin_unlock_irqrestore"][1])
    # Within the few instructions the return handler spends handing a child's time up.
    assert us(own["kalloc"][1]) == pytest.approx(us(with_children["kalloc"][1]) - children, abs=0.5)
    assert [own[f][1] for f in ("spin_lock_irqsave", "spin_unlock_irqrestore")] == \
        [with_children[f][1] for f in ("spin_lock_irqsave", "spin_unlock_irqrestore")]


def test_function_graph_nests_the_same_with_the_profiler_on(m):
    """Both hijack returns on one shadow stack; the profiler's entries do not deepen the
    graph's nesting (fgraph-profiler.tc runs the two together)."""
    t = m.tracefs

    def graph_calls() -> list[str]:
        t.write("current_tracer", "function_graph")
        t.write("trace", "")
        page = m.call("kalloc", cpu=0)
        m.call("kfree", page, cpu=0)
        calls = [line.split("|  ", 1)[1] for line in t.read("trace").splitlines()
                 if not line.startswith("#")]
        t.write("current_tracer", "nop")
        return calls
    t.write("set_ftrace_filter", "kalloc kfree spin_lock_irqsave spin_unlock_irqrestore")
    alone = graph_calls()
    t.write("function_profile_enabled", "1")
    assert graph_calls() == alone == [
        "kalloc() {", "  spin_lock_irqsave();", "  spin_unlock_irqrestore();", "}",
        "kfree() {", "  spin_lock_irqsave();", "  spin_unlock_irqrestore();", "}"]
    assert {"kalloc", "kfree"} <= set(rows(t.read("trace_stat/function0")))


def test_bad_writes_change_nothing(m):
    t = m.tracefs
    for text in ("abc", "-1", "0x1"):
        with pytest.raises(OSError) as e:
            t.write("function_profile_enabled", text)
        assert e.value.errno == errno.EINVAL
    assert t.read("function_profile_enabled") == "0\n"
    t.write("function_profile_enabled", "7")          # any non-zero number enables
    assert t.read("function_profile_enabled") == "1\n"
    with pytest.raises(OSError) as e:
        t.write("trace_stat/function0", "1")
    assert e.value.errno == errno.EACCES


def msleep_times(m, sleep_time: str) -> tuple[float, list[float]]:
    """60 ms of the guest's own kthreads sleeping in msleep (1 ms and 20 ms naps), with
    options/sleep-time as given: the profiler's average for msleep, and the durations
    function_graph printed for its msleep() leaves over the next 60 ms."""
    t = m.tracefs
    t.write("options/sleep-time", sleep_time)
    t.write("set_ftrace_filter", "msleep")
    t.write("function_profile_enabled", "1")
    m.run(ms=60)
    t.write("function_profile_enabled", "0")
    avg = us(rows(t.read("trace_stat/function0"))["msleep"][2])
    t.write("current_tracer", "function_graph")
    m.run(ms=60)
    t.write("tracing_on", "0")
    graph = [float(line.split("|")[0].split(")")[1].strip(" +!#*@$").removesuffix(" us"))
             for line in t.read("trace").splitlines() if line.endswith("msleep();")]
    return avg, graph


def test_nosleep_time_leaves_the_time_scheduled_out_out_of_the_times(machine_factory):
    """With sleep-time (the default) a call's time includes its naps; with it off the
    sched_switch probe takes the time a task was scheduled out off every call it is in, for
    the profiler and function_graph alike. One option for every trace array."""
    avg, graph = msleep_times(machine_factory(cpus=2), "1")
    assert avg > 1000 and graph and min(graph) > 1000
    m = machine_factory(cpus=2)
    m.tracefs.mkdir("instances/lab")
    avg, graph = msleep_times(m, "0")
    assert avg < 50 and graph and max(graph) < 50
    assert m.tracefs.read("instances/lab/options/sleep-time") == "0\n"


def test_nosleep_time_moves_only_nanosecond_calltimes(machine_factory):
    """A function_graph array on the counter clock counts events, not time: the probe leaves
    its calltimes alone, so its msleep() durations stay small counts."""
    m = machine_factory(cpus=2)
    t = m.tracefs
    t.write("options/sleep-time", "0")
    t.write("trace_clock", "counter")
    t.write("set_ftrace_filter", "msleep")
    t.write("current_tracer", "function_graph")
    m.run(ms=60)
    t.write("tracing_on", "0")
    counts = [float(line.split("|")[0].split(")")[1].strip(" +!#*@$").removesuffix(" us"))
              for line in t.read("trace").splitlines() if line.endswith("msleep();")]
    assert counts and max(counts) < 1
