"""``ftemu diff A.dat B.dat``: two recordings of deterministic runs compared. CPU by CPU,
the events (task, event, flags, function fields; not the times) are matched in order; the
earliest point where one CPU's events part is the first difference, shown with the call
stacks there; then how often each function ran in each. Exit status as diff(1): 0 same,
1 different."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ftrace.trace_input import Recording, TraceRecord

from .callgraph import ENTRY, EXIT, FUNCTION, CallStacks, task_key
from .options import add_command, write_out

TIME_FIELDS = ("calltime", "rettime")
CONTEXT_BEFORE = 3


def event_key(r: TraceRecord) -> tuple:
    """What must match for two events to be the same step of the run."""
    return (r.name, *(v for k, v in r.fields.items() if k not in TIME_FIELDS))


def describe(rec: Recording, r: TraceRecord) -> str:
    """One event on one line: timestamp, task, flags, event and its function."""
    f = r.fields
    if r.name == FUNCTION:
        what = f"{rec.function(f['ip'])} <-{rec.symbol(f['parent_ip'])}"
    elif r.name == ENTRY:
        what = f"{rec.function(f['func'])}() {{  (depth {f['depth']})"
    elif r.name == EXIT:
        dur = f.get("rettime", 0) - f.get("calltime", 0)
        what = f"}} {rec.function(f['func'])}  (depth {f['depth']}, {dur / 1000:.3f} us)"
    else:
        what = " ".join(f"{k}={v}" for k, v in f.items() if not k.startswith("common_"))
    us = (r.ts + 500) // 1000                   # as the trace file rounds it
    return (f"{us // 1_000_000}.{us % 1_000_000:06d}  {rec.task(r.pid):>16}  [{r.cpu:03d}] "
            f"{r.context:8} {r.name}: {what}")


@dataclass
class Divergence:
    cpu: int
    index: int                  # the first differing event's position in that CPU's events
    a: TraceRecord | None
    b: TraceRecord | None
    before: list[TraceRecord]   # the events just before it on that CPU (the same in both)

    @property
    def ts(self) -> int:
        return (self.a or self.b).ts


def first_divergence(a: Recording, b: Recording) -> Divergence | None:
    """The earliest (by A's clock) place where some CPU's events stop matching."""
    found: list[Divergence] = []
    for cpu in range(max(a.cpus, b.cpus)):
        ra = list(a.cpu_records(cpu)) if cpu < a.cpus else []
        rb = list(b.cpu_records(cpu)) if cpu < b.cpus else []
        i = 0
        while i < min(len(ra), len(rb)) and event_key(ra[i]) == event_key(rb[i]):
            i += 1
        if i < max(len(ra), len(rb)):
            found.append(Divergence(cpu, i, ra[i] if i < len(ra) else None,
                                    rb[i] if i < len(rb) else None,
                                    ra[max(0, i - CONTEXT_BEFORE):i]))
    return min(found, key=lambda d: d.ts, default=None)


def stack_at(rec: Recording, target: TraceRecord) -> list[str]:
    """The call stack of ``target``'s task just before ``target`` (function_graph), or its
    parent chain as the function tracer saw it."""
    if target.name == FUNCTION:
        return [rec.function(target.fields["parent_ip"])]
    stacks = CallStacks(rec)
    for r in rec.records():
        if r.cpu == target.cpu and r.ts == target.ts and r.fields == target.fields:
            return [f.func for f in stacks.stack(task_key(r))]
        stacks.feed(r)
    return []


def function_counts(rec: Recording) -> dict[str, int]:
    """Calls per function: function events by ip, function_graph entries by func."""
    counts: dict[str, int] = {}
    for r in rec.records():
        if r.name in (FUNCTION, ENTRY):
            name = rec.function(r.fields["ip" if r.name == FUNCTION else "func"])
            counts[name] = counts.get(name, 0) + 1
    return counts


def first_time_difference(a: Recording, b: Recording) -> tuple[TraceRecord, TraceRecord] | None:
    for cpu in range(a.cpus):
        for ra, rb in zip(a.cpu_records(cpu), b.cpu_records(cpu)):
            if ra.ts != rb.ts or ra.fields != rb.fields:
                return ra, rb
    return None


def report(a: Recording, b: Recording, names: tuple[str, str], limit: int) -> tuple[int, str]:
    """(exit status, text) of the comparison."""
    d = first_divergence(a, b)
    lines = []
    if d is None:
        t = first_time_difference(a, b)
        if t is None:
            n = sum(1 for _ in a.records())
            return 0, f"the recordings are identical ({n} events)\n"
        lines += ["the same events in the same order; the times first differ at",
                  f"  A  {describe(a, t[0])}", f"  B  {describe(b, t[1])}"]
        return 1, "\n".join(lines) + "\n"
    lines.append(f"first difference: CPU {d.cpu}, event #{d.index} of that CPU "
                 f"(A = {names[0]}, B = {names[1]})")
    for r in d.before:
        lines.append(f"     {describe(a, r)}")
    for label, rec, r in (("A", a, d.a), ("B", b, d.b)):
        lines.append(f"  {label}  {describe(rec, r)}" if r else
                     f"  {label}  (no more events on CPU {d.cpu})")
    for label, rec, r in (("A", a, d.a), ("B", b, d.b)):
        if r is not None:
            stack = stack_at(rec, r)
            lines.append(f"  call stack in {label}: " + (" > ".join(stack) or "(top level)"))
    ca, cb = function_counts(a), function_counts(b)
    changed = sorted((f for f in ca.keys() | cb.keys() if ca.get(f, 0) != cb.get(f, 0)),
                     key=lambda f: (-abs(cb.get(f, 0) - ca.get(f, 0)), f))
    lines.append("")
    lines.append(f"calls per function that differ ({len(changed)}):")
    lines.append(f"  {'FUNCTION':32} {'A':>8} {'B':>8} {'B-A':>8}")
    for f in changed[:limit]:
        x, y = ca.get(f, 0), cb.get(f, 0)
        lines.append(f"  {f:32} {x:8} {y:8} {y - x:+8}")
    if len(changed) > limit:
        lines.append(f"  ... {len(changed) - limit} more (--limit)")
    return 1, "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    status, text = report(Recording.open(args.a), Recording.open(args.b), (args.a, args.b),
                          args.limit)
    write_out(text)
    return status


def register(sub) -> None:
    p = add_command(sub, "diff", "compare two recordings: the first differing event, then "
                    "calls per function", "ftemu diff before.dat after.dat")
    p.add_argument("a", metavar="A.dat")
    p.add_argument("b", metavar="B.dat")
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="functions to list in the count summary (default 20)")
    p.set_defaults(func=run)
