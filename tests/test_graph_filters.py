"""set_graph_function and set_graph_notrace as a tutorial uses them: graph one function and
everything it calls (depths counted from it), leave a subtree out, list and edit the files,
and ``ftemu record -g``."""
from __future__ import annotations

import errno
import re

import pytest
from cli_helpers import ftemu
from test_cli_record import live_trace
from test_function_graph import graph_run

from emu import Machine

HEADER = ("# tracer: function_graph\n#\n"
          "# CPU  DURATION                  FUNCTION CALLS\n"
          "# |     |   |                     |   |   |   |\n")


def test_set_graph_function_graphs_only_that_function_and_its_callees():
    m, text = graph_run(set_graph_function="kfree")
    assert text == HEADER + (
        " 1)               |  kfree() {\n"
        " 1)               |    free_page() {\n"
        " 1)   0.001 us    |      spin_lock_irqsave();\n"
        " 1)   0.001 us    |      spin_unlock_irqrestore();\n"
        " 1)   0.005 us    |    }\n"
        " 1)   0.007 us    |  }\n")
    assert m.tracefs.read("set_graph_function") == "kfree\n"


def test_depth_counts_from_the_matched_function():
    _m, text = graph_run(set_graph_function="free_page")
    assert text == HEADER + (
        " 1)               |  free_page() {\n"
        " 1)   0.001 us    |    spin_lock_irqsave();\n"
        " 1)   0.001 us    |    spin_unlock_irqrestore();\n"
        " 1)   0.005 us    |  }\n")


def test_set_graph_notrace_leaves_out_the_function_and_everything_it_calls():
    m, text = graph_run(set_graph_notrace="free_page")
    # kfree's one callee is gone with its own callees: kfree prints as a leaf.
    assert text == HEADER + (
        " 0)               |  kalloc() {\n"
        " 0)   0.001 us    |    spin_lock_irqsave();\n"
        " 0)   0.001 us    |    spin_unlock_irqrestore();\n"
        " 0)   0.005 us    |  }\n"
        " 1)   0.002 us    |  kfree();\n"
        " 1)   0.001 us    |  trace_selftest_dynamic_test_func();\n")
    assert m.tracefs.read("set_graph_notrace") == "free_page\n"


def test_both_filters_together_and_the_notrace_list_wins_below():
    _m, text = graph_run(set_graph_function="kalloc kfree", set_graph_notrace="spin_lock_irqsave")
    calls = re.findall(r"\|( *)(\w+)\(\)", text)
    assert [(len(ind) // 2 - 1, name) for ind, name in calls] == [
        (0, "kalloc"), (1, "spin_unlock_irqrestore"),
        (0, "kfree"), (1, "free_page"), (2, "spin_unlock_irqrestore")]


def test_listing_appending_truncating_and_removing():
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    assert tfs.read("set_graph_function") == "#### all functions enabled ####\n"
    assert tfs.read("set_graph_notrace") == "#### no functions disabled ####\n"
    tfs.write("set_graph_function", "kfree")
    tfs.write("set_graph_function", "kalloc", append=True)
    assert tfs.read("set_graph_function") == "kalloc\nkfree\n"       # in address order
    tfs.write("set_graph_function", "!kalloc", append=True)
    assert tfs.read("set_graph_function") == "kfree\n"
    tfs.write("set_graph_function", "spin_*lock_irq*")
    assert tfs.read("set_graph_function") == "spin_lock_irqsave\nspin_unlock_irqrestore\n"
    tfs.write("set_graph_function", "")
    assert tfs.read("set_graph_function") == "#### all functions enabled ####\n"


def test_a_pattern_matching_nothing_is_einval_and_changes_nothing():
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.write("set_graph_notrace", "kfree")
    for path in ("set_graph_function", "set_graph_notrace"):
        with pytest.raises(OSError) as e:
            tfs.write(path, "no_such_function_xyz", append=True)
        assert e.value.errno == errno.EINVAL
    assert tfs.read("set_graph_function") == "#### all functions enabled ####\n"
    assert tfs.read("set_graph_notrace") == "kfree\n"
    with pytest.raises(OSError) as e:
        tfs.write("set_graph_function", "kfree:mod:foo")
    assert e.value.errno == errno.EINVAL


def test_the_files_are_top_level_only():
    m = Machine(cpus=1)
    m.boot()
    m.tracefs.mkdir("instances/foo")
    assert "set_graph_function" in m.tracefs.listdir("")
    assert "set_graph_function" not in m.tracefs.listdir("instances/foo")


def test_ftemu_record_g_graphs_under_that_function(tmp_path):
    path = tmp_path / "g.dat"
    r = ftemu("record", "-p", "function_graph", "-g", "timer_interrupt", "--ms", "3",
              "-o", str(path))
    assert r.returncode == 0, r.stderr
    report = ftemu("report", str(path)).stdout
    m = live_trace(("set_graph_function", "timer_interrupt"),
                   ("current_tracer", "function_graph"), ms=3.0)
    assert report == m.tracefs.read("trace")
    outer = re.findall(r"\|  (\w+)\(\)", report)
    assert outer and set(outer) == {"timer_interrupt"}
    assert re.search(r"\|    \w+\(\)", report)          # its callees, one level in


def test_a_snapshot_restores_the_graph_filters_with_the_guest():
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.write("set_graph_function", "kfree")
    snap = m.snapshot()
    tfs.write("set_graph_function", "kalloc")
    tfs.write("set_graph_notrace", "free_page")
    m.restore(snap)
    assert tfs.read("set_graph_function") == "kfree\n"
    assert tfs.read("set_graph_notrace") == "#### no functions disabled ####\n"
    tfs.write("trace_clock", "counter")
    tfs.write("current_tracer", "function_graph")
    m.call("kfree", m.call("kalloc"))
    tfs.write("tracing_on", "0")
    assert re.findall(r"\|( *\w+)\(\)", tfs.read("trace")) == [
        "  kfree", "    free_page", "      spin_lock_irqsave", "      spin_unlock_irqrestore"]
