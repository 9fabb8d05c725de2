"""``ftemu dump`` and ``ftemu diff`` on recordings built by hand (the end-to-end runs on real
recordings are in test_cli_record.py): Chrome JSON nested per track, folded stacks that
add up to the calls, and the first differing event with its call stacks."""
from __future__ import annotations

import json

from cli_helpers import ftemu
from synthetic_trace import HARDIRQ, NMI, SOFTIRQ, entry, exit_, fn, page, recording

from ftrace import trace_dat

T = 1_000_000_000


def write_syscall(path, inner: str = "copy_from_user"):
    """sh-2 in sys_write on CPU 0, interrupted by a tick (hardirq, then an NMI inside it);
    do_idle on CPU 1 running a softirq."""
    cpu0 = page([(T, entry(2, "sys_write", 0)),
                 (T + 100, entry(2, inner, 1)),
                 (T + 350, exit_(2, inner, 1, T + 100, T + 350)),
                 (T + 400, entry(2, "schedule", 1)),
                 (T + 500, entry(2, "tick_handle", 2, flags=HARDIRQ)),
                 (T + 600, entry(2, "do_idle", 3, flags=HARDIRQ | NMI)),
                 (T + 700, exit_(2, "do_idle", 3, T + 600, T + 700, flags=HARDIRQ | NMI)),
                 (T + 900, exit_(2, "tick_handle", 2, T + 500, T + 900, flags=HARDIRQ)),
                 (T + 1000, exit_(2, "schedule", 1, T + 400, T + 1000)),
                 (T + 1200, exit_(2, "sys_write", 0, T, T + 1200))])
    cpu1 = page([(T + 50, entry(0, "do_idle", 0)),
                 (T + 60, entry(0, "tick_handle", 1, flags=SOFTIRQ)),
                 (T + 90, exit_(0, "tick_handle", 1, T + 60, T + 90, flags=SOFTIRQ)),
                 (T + 95, entry(0, "schedule", 1))])              # still running at the end
    trace_dat.write(path, recording([[cpu0], [cpu1]]))
    return path


def us_to_ns(x: float) -> int:
    return round(x * 1000)


def assert_properly_nested(events: list[dict]) -> dict:
    """B/E balanced per track, X events nested or disjoint per track; the tracks' names."""
    tracks: dict[tuple, list] = {}
    names = {}
    for ev in events:
        if ev["ph"] == "M":
            if ev["name"] == "thread_name":
                names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
            continue
        tracks.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    for track, evs in tracks.items():
        open_ = []
        for ev in (e for e in evs if e["ph"] in "BE"):
            if ev["ph"] == "B":
                open_.append(ev)
            else:
                assert open_, f"E without B on {track}"
                begin = open_.pop()
                assert begin["name"] == ev["name"] and begin["ts"] <= ev["ts"], (begin, ev)
        assert not open_, f"unclosed on {track}: {open_}"
        spans = sorted(((us_to_ns(e["ts"]), us_to_ns(e["ts"]) + us_to_ns(e["dur"])) for e in evs
                        if e["ph"] == "X"), key=lambda s: (s[0], -s[1]))
        stack = []
        for s, e in spans:
            while stack and stack[-1] <= s:
                stack.pop()
            assert not stack or e <= stack[-1], f"overlapping calls on {track}"
            stack.append(e)
    return names


def test_chrome_json_has_a_track_per_cpu_and_per_task_properly_nested(tmp_path):
    dat = write_syscall(tmp_path / "trace.dat")
    r = ftemu("dump", "--chrome", str(tmp_path / "t.json"), str(dat))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    names = assert_properly_nested(events)
    assert names == {(1, 0): "CPU 0", (1, 1): "CPU 1", (2, 2): "sh-2",
                     (2, 1_000_001): "<idle>-0 (CPU 1)"}
    calls = [(e["name"], us_to_ns(e["ts"]) - T, us_to_ns(e["dur"])) for e in events
             if e["ph"] == "X" and e["tid"] == 2]
    assert sorted(calls, key=lambda c: c[1]) == [
        ("sys_write", 0, 1200), ("copy_from_user", 100, 250), ("schedule", 400, 600),
        ("tick_handle", 500, 400), ("do_idle", 600, 100)]
    cpu0 = [(e["ph"], e["name"], us_to_ns(e["ts"]) - T) for e in events
            if e["pid"] == 1 and e.get("tid") == 0 and e["ph"] in "BE"]
    assert cpu0 == [("B", "sh-2", 0), ("B", "hardirq", 500), ("B", "nmi", 600),
                    ("E", "nmi", 700), ("E", "hardirq", 900), ("E", "sh-2", 1200)]
    unfinished = [e for e in events if e.get("args", {}).get("unfinished")]
    assert [(e["name"], e["tid"]) for e in unfinished] == [("do_idle", 1_000_001),
                                                           ("schedule", 1_000_001)]


def test_chrome_json_shows_function_events_as_instants(tmp_path):
    dat = tmp_path / "fn.dat"
    trace_dat.write(dat, recording([[page([(T, fn(1, "schedule", "do_idle")),
                                          (T + 10, fn(1, "tick_handle", "schedule", flags=HARDIRQ))])]]))
    r = ftemu("dump", "--chrome", "-", str(dat))
    events = json.loads(r.stdout)["traceEvents"]
    instants = [(e["name"], e["cat"], e["args"]["parent"]) for e in events if e["ph"] == "i"]
    assert instants == [("schedule", "task", "do_idle+0x4"),
                        ("tick_handle", "hardirq", "schedule+0x4")]
    assert_properly_nested(events)


def test_folded_stacks_add_up_to_the_calls(tmp_path):
    dat = write_syscall(tmp_path / "trace.dat")
    r = ftemu("dump", "--flame-graph", str(dat))
    assert r.returncode == 0
    assert r.stdout == ("do_idle 1\n"
                        "do_idle;schedule 1\n"
                        "do_idle;tick_handle 1\n"
                        "sys_write 1\n"
                        "sys_write;copy_from_user 1\n"
                        "sys_write;schedule 1\n"
                        "sys_write;schedule;tick_handle 1\n"
                        "sys_write;schedule;tick_handle;do_idle 1\n")
    entries = sum(1 for r in __import__("ftrace.trace_input", fromlist=["x"]).Recording.open(dat).records()
                  if r.name == "funcgraph_entry")
    assert sum(int(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines()) == entries


def test_diff_of_identical_recordings_says_so(tmp_path):
    a = write_syscall(tmp_path / "a.dat")
    r = ftemu("diff", str(a), str(a))
    assert (r.returncode, r.stdout) == (0, "the recordings are identical (14 events)\n")


def test_diff_points_at_the_first_differing_event_with_its_call_stack(tmp_path):
    a = write_syscall(tmp_path / "a.dat")
    b = write_syscall(tmp_path / "b.dat", inner="schedule")
    r = ftemu("diff", str(a), str(b))
    assert r.returncode == 1, r.stderr
    assert r.stdout == (
        f"first difference: CPU 0, event #1 of that CPU (A = {a}, B = {b})\n"
        "     1.000000              sh-2  [000] task     funcgraph_entry: sys_write() {  (depth 0)\n"
        "  A  1.000000              sh-2  [000] task     funcgraph_entry: copy_from_user() {  (depth 1)\n"
        "  B  1.000000              sh-2  [000] task     funcgraph_entry: schedule() {  (depth 1)\n"
        "  call stack in A: sys_write\n"
        "  call stack in B: sys_write\n"
        "\n"
        "calls per function that differ (2):\n"
        "  FUNCTION                                A        B      B-A\n"
        "  copy_from_user                          1        0       -1\n"
        "  schedule                                2        3       +1\n")


def test_dump_and_diff_errors_are_one_line(tmp_path):
    (tmp_path / "x.dat").write_bytes(b"not a trace")
    r = ftemu("dump", "--flame-graph", str(tmp_path / "x.dat"))
    assert (r.returncode, r.stderr) == (1, "ftemu dump: error: not a trace.dat file (no trace-cmd magic)\n")
    r = ftemu("diff", str(tmp_path / "missing.dat"), str(tmp_path / "x.dat"))
    assert r.returncode == 1
    assert r.stderr == f"ftemu diff: error: [Errno 2] No such file or directory: '{tmp_path / 'missing.dat'}'\n"
    r = ftemu("dump", str(tmp_path / "x.dat"))
    assert r.returncode == 2 and "one of the arguments --chrome --flame-graph is required" in r.stderr
