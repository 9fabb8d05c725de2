"""``ftemu record`` then ``ftemu report`` and Debian's ``trace-cmd report``: the same events
as the live ``trace`` file of the same deterministic run, line for line."""
from __future__ import annotations

import re
import subprocess

import pytest
from cli_helpers import ftemu, ftemu_into_closed_pipe

from emu import Machine

MS = "5"


def live_trace(*writes: tuple[str, str], cpus: int = 2, ms: float = float(MS)) -> Machine:
    """The run ``ftemu record`` makes, done through the Python API: boot, the same tracing
    file writes in the same order, run, stop."""
    m = Machine(cpus=cpus)
    m.boot()
    for path, value in (("trace_clock", "local"), *writes, ("tracing_on", "1")):
        m.tracefs.write(path, value, append=path.startswith("set_"))
    m.run(ms)
    m.tracefs.write("tracing_on", "0")
    return m


@pytest.fixture(scope="module")
def function_run(tmp_path_factory):
    """One function-tracer recording and the live machine of the same run."""
    path = tmp_path_factory.mktemp("rec") / "trace.dat"
    r = ftemu("record", "-p", "function", "--ms", MS, "-o", str(path))
    assert r.returncode == 0, r.stderr
    m = live_trace(("current_tracer", "function"))
    return path, m, r.stderr


def test_record_says_what_each_cpu_recorded(function_run):
    path, m, stderr = function_run
    counts = [int(re.search(r"entries: (\d+)", m.tracefs.read(f"per_cpu/cpu{c}/stats"))[1])
              for c in (0, 1)]
    lines = stderr.splitlines()
    assert [int(re.match(r"CPU(\d): (\d+) events", ln)[2]) for ln in lines[:2]] == counts
    assert lines[-1] == f"wrote {path}"


def test_ftemu_report_prints_the_live_trace_text(function_run):
    path, m, _ = function_run
    r = ftemu("report", str(path))
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == m.tracefs.read("trace")
    assert r.stdout.count("\n") > 500


def test_ftemu_report_cpu_shows_that_cpus_trace(function_run):
    path, m, _ = function_run
    r = ftemu("report", "--cpu", "1", str(path))
    assert r.stdout == m.tracefs.read("per_cpu/cpu1/trace")


def test_ftemu_report_filters_by_function_glob(function_run):
    path, m, _ = function_run
    r = ftemu("report", "-F", "spin_*", "-F", "kalloc", str(path))
    body = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")]
    live = [ln for ln in m.tracefs.read("trace").splitlines()
            if re.search(r": (spin_\w+|kalloc) <-", ln)]
    assert body == live and body


def test_ftemu_report_stat_gives_each_cpus_buffer_statistics(function_run):
    path, _m, _ = function_run
    r = ftemu("report", "--stat", str(path))
    assert r.stdout.startswith("CPU: 0\nentries: 0\noverrun: 0\n")
    assert "CPU: 1\n" in r.stdout and "read events: " in r.stdout


def test_trace_cmd_reports_the_same_events(function_run, require_tool):
    trace_cmd = require_tool("trace-cmd")
    path, m, _ = function_run
    out = subprocess.run([trace_cmd, "report", "-i", str(path)], capture_output=True,
                         text=True, check=True)
    assert out.stderr == ""
    ours = [re.match(r"\s*(\S+)\s+\[(\d+)\] \S+\s+([\d.]+): (\w+) <-", ln).groups()
            for ln in m.tracefs.read("trace").splitlines() if not ln.startswith("#")]
    theirs = [re.match(r"\s*(\S+)\s+\[(\d+)\]\s+([\d.]+): function:\s+(\w+)$", ln).groups()
              for ln in out.stdout.splitlines()[1:]]
    assert out.stdout.startswith("cpus=2\n")
    assert sorted(theirs) == sorted(ours)


def test_record_filters_as_trace_cmd_spells_them(tmp_path):
    path = tmp_path / "f.dat"
    r = ftemu("record", "-l", "kalloc", "-l", "kfree", "-n", "kfree", "--ms", "3", "-o", str(path))
    assert r.returncode == 0, r.stderr
    report = ftemu("report", str(path)).stdout
    functions = {re.search(r": (\w+) <-", ln)[1] for ln in report.splitlines()
                 if not ln.startswith("#")}
    assert functions == {"kalloc"}


@pytest.mark.parametrize("argv, line", [
    (["-l", "no_such_function"], ("ftemu record: error: argument -l: 'no_such_function': "
                                 "Invalid argument (writing set_ftrace_filter)")),
    (["-O", "bogus"], ("ftemu record: error: argument -O: 'bogus': Invalid argument "
                      "(writing trace_options)")),
    (["--clock", "tsc"], ("ftemu record: error: argument --clock: invalid choice: 'tsc' "
                         "(choose from 'local', 'global', 'counter', 'uptime', 'mono') "
                         "(see 'ftemu record --help')")),
    (["--memory", "8"], "ftemu record: error: argument --memory: must be 24..2048, not 8"),
])
def test_record_errors_name_the_flag(tmp_path, argv, line):
    r = ftemu("record", *argv, "-o", str(tmp_path / "x.dat"))
    assert r.returncode == 2
    assert r.stderr == line + "\n"
    assert not (tmp_path / "x.dat").exists()


def test_report_into_a_closed_pipe_ends_quietly(function_run):
    path, _, _ = function_run
    status, first, err = ftemu_into_closed_pipe("report", str(path))
    assert (status, first, err) == (141, b"# tracer: function\n", b"")
