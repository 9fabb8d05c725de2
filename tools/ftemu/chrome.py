"""A recording as Chrome trace-event JSON (what Perfetto and chrome://tracing open).

Two processes of tracks: "CPUs", one track per CPU showing which task ran (a slice per run
of events of one task) with the hardirq / softirq / NMI spans nested inside; and "tasks",
one track per task with its function_graph calls as complete ("X") events, nested as the
task's shadow stack nested them, or its function-tracer events as instants. Timestamps are
microseconds of the recording's clock."""
from __future__ import annotations

from collections.abc import Iterator

from ftrace.trace_input import (
    TRACE_FLAG_HARDIRQ,
    TRACE_FLAG_NMI,
    TRACE_FLAG_SOFTIRQ,
    Recording,
    TraceRecord,
)

from .callgraph import FUNCTION, CallStacks

CPUS_PID, TASKS_PID = 1, 2
IDLE_TID_BASE = 1_000_000           # idle tasks (pid 0) get one track per CPU
CONTEXTS = ((TRACE_FLAG_SOFTIRQ, "softirq"), (TRACE_FLAG_HARDIRQ, "hardirq"),
            (TRACE_FLAG_NMI, "nmi"))


def _us(ns: int) -> float:
    return ns / 1000


def _tid(task: tuple[int, int]) -> int:
    """A task track: by pid, or by (pid, CPU) for idle tasks and for tasks that ran on more
    than one CPU (each CPU's clock is its own, so a migrating task's calls could overlap)."""
    pid, cpu = task
    if cpu < 0:
        return pid
    return IDLE_TID_BASE + cpu if pid == 0 else IDLE_TID_BASE + 16 * pid + cpu


def _contexts(flags: int) -> list[str]:
    """The interrupt contexts an event's flags say it ran in, outermost first."""
    return [name for bit, name in CONTEXTS if flags & bit]


class _CpuTrack:
    """One CPU's track: task slices and context spans as B/E pairs, balanced by construction."""

    def __init__(self, cpu: int) -> None:
        self.cpu, self.pid, self.open, self.last = cpu, None, [], 0

    def _event(self, ph: str, name: str, ts: int, **args) -> dict:
        ev = {"ph": ph, "name": name, "pid": CPUS_PID, "tid": self.cpu, "ts": _us(ts)}
        if args:
            ev["args"] = args
        return ev

    def close(self, keep: int = 0) -> Iterator[dict]:
        while len(self.open) > keep:
            yield self._event("E", self.open.pop(), self.last)

    def feed(self, r: TraceRecord, rec: Recording) -> Iterator[dict]:
        if r.pid != self.pid:
            yield from self.close()
            self.pid = r.pid
            name = rec.task(r.pid)
            self.open.append(name)
            yield self._event("B", name, r.ts, pid=r.pid)
        want = _contexts(r.flags)
        have = self.open[1:]
        common = 0
        while common < min(len(want), len(have)) and want[common] == have[common]:
            common += 1
        yield from self.close(1 + common)
        for name in want[common:]:
            self.open.append(name)
            yield self._event("B", name, r.ts)
        self.last = r.ts


def nested(events: list[dict]) -> list[dict]:
    """X events of one track made to nest: a call that ends after the call enclosing it
    (by the few ns two CPUs' clocks differ, for a task that migrated inside it) is cut at
    the enclosing call's end."""
    out, ends = [], []
    for ev in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        while ends and ends[-1] <= ev["ts"]:
            ends.pop()
        end = ev["ts"] + ev["dur"]
        if ends and end > ends[-1]:
            end = ends[-1]
            ev = {**ev, "dur": end - ev["ts"]}
        ends.append(end)
        out.append(ev)
    return out


def chrome_events(rec: Recording) -> Iterator[dict]:
    """Every trace event of the JSON: metadata and CPU tracks as they come, each task's
    calls once the recording is read (so they can be made to nest)."""
    calls: dict[int, list[dict]] = {}
    for ev in _events(rec):
        if ev["ph"] == "X":
            calls.setdefault(ev["tid"], []).append(ev)
        else:
            yield ev
    for track in calls.values():
        yield from nested(track)


def _events(rec: Recording) -> Iterator[dict]:
    yield {"ph": "M", "name": "process_name", "pid": CPUS_PID, "args": {"name": "CPUs"}}
    yield {"ph": "M", "name": "process_name", "pid": TASKS_PID, "args": {"name": "tasks"}}
    for cpu in range(rec.cpus):
        yield {"ph": "M", "name": "thread_name", "pid": CPUS_PID, "tid": cpu,
               "args": {"name": f"CPU {cpu}"}}
    cpus = [_CpuTrack(c) for c in range(rec.cpus)]
    stacks = CallStacks(rec)
    ran_on: dict[int, set[int]] = {}
    for r in rec.records():
        ran_on.setdefault(r.pid, set()).add(r.cpu)
    split = {pid for pid, where in ran_on.items() if pid == 0 or len(where) > 1}

    def track(pid: int, cpu: int) -> tuple[int, int]:
        return (pid, cpu if pid in split else -1)
    named: set[tuple[int, int]] = set()
    arrived: dict[int, int] = {}         # per CPU: when its current task's run there began
    last = 0
    for r in rec.records():
        last = max(last, r.ts)
        if cpus[r.cpu].pid != r.pid:
            arrived[r.cpu] = r.ts
        yield from cpus[r.cpu].feed(r, rec)
        task = track(r.pid, r.cpu)
        if task not in named:
            named.add(task)
            label = rec.task(r.pid) + (f" (CPU {r.cpu})" if r.pid in split else "")
            yield {"ph": "M", "name": "thread_name", "pid": TASKS_PID, "tid": _tid(task),
                   "args": {"name": label}}
        if r.name == FUNCTION:
            yield {"ph": "i", "s": "t", "name": rec.function(r.fields["ip"]), "pid": TASKS_PID,
                   "tid": _tid(task), "ts": _us(r.ts), "cat": r.context,
                   "args": {"parent": rec.symbol(r.fields["parent_ip"]), "cpu": r.cpu}}
        elif (call := stacks.feed(r)) is not None:
            # A call that began on another CPU shows from its arrival here, in this CPU's
            # clock, so the track's calls stay nested.
            start = max(call.start, arrived[r.cpu]) if r.pid in split else call.start
            yield {"ph": "X", "name": call.func, "pid": TASKS_PID, "tid": _tid(task),
                   "ts": _us(start), "dur": _us(max(call.end, start) - start),
                   "cat": r.context, "args": {"cpu": call.cpu, "depth": call.depth}}
    for cpu_track in cpus:
        yield from cpu_track.close()
    for (pid, cpu), st in stacks.stacks.items():  # calls still running when recording stopped
        for frame in st:
            yield {"ph": "X", "name": frame.func, "pid": TASKS_PID,
                   "tid": _tid(track(pid, frame.cpu)),
                   "ts": _us(frame.start), "dur": _us(last - frame.start),
                   "args": {"depth": frame.depth, "unfinished": True}}

