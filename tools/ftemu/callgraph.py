"""Call stacks rebuilt from a recording, per task, as the function_graph tracer's shadow
stacks held them: what the Chrome view, the flame graph and the diff are made of. A
function-tracer recording has no stacks; each event stands for ``parent;function``."""
from __future__ import annotations

from dataclasses import dataclass, field

from ftrace.trace_input import Recording, TraceRecord

ENTRY, EXIT, FUNCTION = "funcgraph_entry", "funcgraph_exit", "function"


def task_key(r: TraceRecord) -> tuple[int, int]:
    """A task: its pid, and for pid 0 its CPU too (every CPU has an idle task of its own)."""
    return (r.pid, r.cpu if r.pid == 0 else -1)


@dataclass(slots=True)
class Frame:
    """A call still open on a task's stack."""

    func: str
    depth: int
    start: int
    cpu: int


@dataclass(slots=True)
class Call:
    """A call that returned (``start`` from the exit's calltime when its entry was not seen)."""

    task: tuple[int, int]
    cpu: int
    func: str
    depth: int
    start: int
    end: int
    entry_seen: bool


@dataclass
class CallStacks:
    """Feed records in order; ``stack(task)`` is the task's open calls, outermost first."""

    rec: Recording
    stacks: dict[tuple[int, int], list[Frame]] = field(default_factory=dict)

    def stack(self, task: tuple[int, int]) -> list[Frame]:
        return self.stacks.setdefault(task, [])

    def feed(self, r: TraceRecord) -> Call | None:
        """Update the stacks with one record; the call an exit closes, if any."""
        if r.name == ENTRY:
            st = self.stack(task_key(r))
            depth = r.fields["depth"]
            while st and st[-1].depth >= depth:       # an exit was lost: drop what it closed
                st.pop()
            st.append(Frame(self.rec.function(r.fields["func"]), depth, r.ts, r.cpu))
        elif r.name == EXIT:
            st = self.stack(task_key(r))
            depth = r.fields["depth"]
            func = self.rec.function(r.fields["func"])
            while st and st[-1].depth > depth:
                st.pop()
            seen = bool(st) and st[-1].depth == depth and st[-1].func == func
            if seen:
                st.pop()
            start = r.fields.get("calltime", r.ts)
            end = r.fields.get("rettime", r.ts)
            return Call(task_key(r), r.cpu, func, depth, start, end, seen)
        return None

    def path(self, r: TraceRecord) -> list[str]:
        """The call path a record stands for: the task's stack down to an entry's function,
        or ``parent;function`` for a function-tracer event."""
        if r.name == FUNCTION:
            return [self.rec.function(r.fields["parent_ip"]), self.rec.function(r.fields["ip"])]
        return [f.func for f in self.stack(task_key(r))]


def folded_stacks(rec: Recording) -> dict[str, int]:
    """``a;b;c -> N``: how many calls of each path (function_graph: each entry with the
    task's stack above it; function: each event as ``parent;function``)."""
    stacks = CallStacks(rec)
    counts: dict[str, int] = {}
    for r in rec.records():
        stacks.feed(r)
        if r.name in (ENTRY, FUNCTION):
            key = ";".join(stacks.path(r))
            counts[key] = counts.get(key, 0) + 1
    return counts
