"""Debian's ``trace-cmd report`` of an ``ftemu record -p function_graph`` recording: what it
prints, line by line, against the events we recorded and the live ``trace`` text.

trace-cmd renders function_graph records its own way (lib/trace-cmd/trace-ftrace.c), as it
does a kernel's: an entry prints as a leaf ``f();`` only when the next record *of any CPU*
in its timestamp merge is the return of ``f`` by the same pid; otherwise ``f() {`` and, when
the return comes, ``}``. The kernel's ``trace`` file looks at the same CPU's buffer only, so
with two busy CPUs trace-cmd prints more lines (leaves split in two) for the same events."""
from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest
from cli_helpers import ftemu

from ftrace.trace_input import Recording

# '<task>-<pid> [<cpu>] <secs>: funcgraph_<kind>: <duration> | <indent><text>' (report -t)
LINE = re.compile(r"\s*\S+-(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d{9}): funcgraph_(entry|exit):"
                  r"\s+[+!#$@* ]?\s*(?:(\d+(?:\.\d{3})?) us)?\s*\|  ( *)(\S.*)$")


def shown_duration(ns: int) -> str:
    """A duration as trace-cmd prints it: microseconds, with nanoseconds below 7 digits; a
    return stamped before its call (a task that moved to a CPU whose local clock is behind)
    wraps around, as trace-cmd prints the unsigned difference."""
    us, rem = divmod(ns % 2**64, 1000)
    return f"{us}.{rem:03d}" if len(str(us)) < 7 else str(us)


def record(tmp_path_factory, cpus: int):
    path = tmp_path_factory.mktemp(f"graph{cpus}") / "trace.dat"
    r = ftemu("record", "-p", "function_graph", "--cpus", str(cpus), "--ms", "5",
              "-o", str(path))
    assert r.returncode == 0, r.stderr
    return path


def trace_cmd_report(trace_cmd: str, path, *opts: str) -> list[str]:
    out = subprocess.run([trace_cmd, "report", *opts, "-i", str(path)], capture_output=True,
                         text=True, check=True)
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"cpus=\d+", lines[0])
    return lines[1:]


def call_text(line: str) -> str:
    """'<duration>|<indent><call>' of a function_graph line, overhead marks and padding
    dropped: what trace-cmd's and the kernel's lines say alike."""
    duration, call = line.split("|", 1)
    return f"{duration.strip(' +!#$@*').removesuffix(' us').strip()}|{call.rstrip()}"


@pytest.fixture(scope="module")
def one_cpu(tmp_path_factory):
    return record(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def two_cpus(tmp_path_factory):
    return record(tmp_path_factory, 2)


def test_on_one_cpu_trace_cmd_prints_the_kernels_call_lines(one_cpu, require_tool):
    trace_cmd = require_tool("trace-cmd")
    theirs = [call_text(ln.split(": ", 2)[2]) for ln in trace_cmd_report(trace_cmd, one_cpu)]
    live = [ln for ln in ftemu("report", str(one_cpu)).stdout.splitlines()
            if re.match(r" 0\) .*\|", ln)]
    # The kernel names the function on a '}' whose entry it did not print (here: returns
    # of calls made before tracing began); trace-cmd does so only with -O fgraph:tailprint.
    ours = [re.sub(r"\} /\* \w+ \*/$", "}", call_text(ln[4:])) for ln in live]
    assert len(theirs) == len(ours) > 500
    assert theirs == ours
    assert sum(t.endswith("();") for t in theirs) > 100


def test_on_two_cpus_every_trace_cmd_line_is_a_recorded_event(two_cpus, require_tool):
    trace_cmd = require_tool("trace-cmd")
    rec = Recording.open(two_cpus)
    # (cpu, ts, kind, pid, depth, function of an entry / shown duration of a return)
    events, returned = [], {}
    for r in rec.records():
        f, kind = r.fields, r.event.name.removeprefix("funcgraph_")
        what = (rec.function(f["func"]) if kind == "entry"
                else shown_duration(f["rettime"] - f["calltime"]))
        events.append((r.cpu, r.ts, kind, f["common_pid"], f["depth"], what))
        returned[events[-1]] = rec.function(f["func"])
    printed, leaves = [], []
    for ln in trace_cmd_report(trace_cmd, two_cpus, "-t"):
        pid, cpu, secs, ns, kind, duration, indent, text = LINE.match(ln).groups()
        what = text.removesuffix("();").removesuffix("() {") if kind == "entry" else duration
        printed.append((int(cpu), int(secs) * 10**9 + int(ns), kind, int(pid),
                        len(indent) // 2, what))
        if text.endswith("();"):
            leaves.append((int(pid), what, duration))
    # Per CPU, trace-cmd's lines are that CPU's recorded events in order (time, pid, depth,
    # function or duration), skipping returns it folded into a leaf line.
    for cpu in (0, 1):
        remaining = iter(e for e in events if e[0] == cpu)
        assert all(any(p == e for e in remaining) for p in printed if p[0] == cpu), cpu
    folded = Counter(events) - Counter(printed)
    assert all(e[2] == "exit" for e in folded)
    assert folded.total() + len(printed) == len(events)
    # Each leaf line is an entry with a recorded return of the same function by the same
    # pid (its next record in trace-cmd's merge, possibly another CPU's), and that return's
    # duration.
    assert leaves and Counter(leaves) == Counter((e[3], returned[e], e[5])
                                                 for e in folded.elements())


def test_on_two_cpus_trace_cmd_splits_leaves_the_trace_file_joins(two_cpus, require_tool):
    trace_cmd = require_tool("trace-cmd")
    theirs = trace_cmd_report(trace_cmd, two_cpus)
    live = [ln for ln in ftemu("report", str(two_cpus)).stdout.splitlines()
            if re.match(r" [01]\) .*\|", ln)]
    leaves_live = sum(ln.endswith("();") for ln in live)
    leaves_theirs = sum(ln.endswith("();") for ln in theirs)
    # Same events: every leaf trace-cmd split became two lines ('f() {' and '}').
    assert leaves_theirs < leaves_live
    assert len(theirs) - len(live) == leaves_live - leaves_theirs
    # Every return prints the same duration in both, on a '}' or a leaf line; one stamped
    # before its call (the task moved to a CPU whose local clock is behind) as the kernel's
    # unsigned difference.
    assert durations(theirs) == durations(live)
    exits = [r for r in Recording.open(two_cpus).records() if r.event.name == "funcgraph_exit"]
    assert sum(durations(live).values()) == len(exits)


def durations(lines: list[str]) -> Counter:
    """How many lines print each duration."""
    return Counter(m[1] for ln in lines if (m := re.search(r"(\d+(?:\.\d+)?) us ", ln)))

