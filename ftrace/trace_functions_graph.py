"""The function graph tracer (kernel/trace/trace_functions_graph.c): entry and return events
written by guest code (arch/x86/fgraph_64.py: a return hijack through return_to_handler
and per-task shadow stacks), and their text: durations, nesting, leaf ``name();`` lines,
context-switch banners, the funcgraph-* options, byte for byte as the kernel prints them.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .arch.x86.fgraph_64 import GRAPH_NO_IRQS, GRAPH_THRESH, TRACE_GRAPH_ENT, TRACE_GRAPH_RET
from .arch.x86.shadow_stack_64 import FTRACE_RETFUNC_DEPTH
from .trace import Tracer
from .trace_output import TraceEntry, TraceFormatter, trace_find_mark

if TYPE_CHECKING:
    from .trace import TraceArray

# Tracer options (funcgraph-*), with their defaults.
GRAPH_OPTIONS: dict[str, bool] = {
    "funcgraph-overrun": False, "funcgraph-cpu": True, "funcgraph-overhead": True,
    "funcgraph-proc": False, "funcgraph-duration": True, "funcgraph-abstime": False,
    "funcgraph-irqs": True, "funcgraph-tail": False, "sleep-time": True, "graph-time": True,
}
_ent = struct.Struct("<Qi")
_ret = struct.Struct("<QQiIQQ")


class FunctionGraphTracer(Tracer):
    """function_graph: ``tr.ops`` registered with the array's thunk to function_graph_entry.
    No SAVE_REGS: the guest code finds the return address to hijack through the plain
    trampoline's frames (a pt_regs costs about as much as the rest of an entry)."""

    name = "function_graph"

    def init(self, tr: "TraceArray") -> None:
        tr.tracing.ensure_shadow_stacks()
        tr.sync_graph_settings()
        tr.graph_used = True
        tr.ops.func = tr.graph_callback
        tr.tracing.ft.register_ftrace_function(tr.ops)

    def reset(self, tr: "TraceArray") -> None:
        tr.tracing.ft.unregister_ftrace_function(tr.ops)


def graph_flags(tr: "TraceArray") -> int:
    """What the guest code reads of the funcgraph options and tracing_thresh."""
    return ((0 if "funcgraph-irqs" in tr.options else GRAPH_NO_IRQS) |
            (GRAPH_THRESH if tr.tracing.tracing_thresh else 0))


def duration_text(ns: int) -> str:
    """trace_print_graph_duration: microseconds, up to 7 digits in all, ' us ', padded."""
    usecs, rem = divmod(ns, 1000)
    text = str(usecs)
    length = len(text)
    if length < 7:
        nsecs = f"{rem:03d}"[:max(0, min(5, 8 - length) - 1)]
        text += "." + nsecs
        length += len(nsecs) + 1
    return text + " us " + " " * max(0, 8 - length)


def proc_text(pid: int, comm: str) -> str:
    """print_graph_proc: comm cut to 7, '-', pid, centred in 14 columns."""
    body = f"{comm[:7]}-{pid}"
    spaces = max(0, 14 - len(body))
    return " " * (spaces // 2) + body + " " * (spaces - spaces // 2)


class GraphFormatter:
    """The function_graph text of a stream of entries (print_graph_function)."""

    def __init__(self, fmt: TraceFormatter, ncpus: int) -> None:
        self.fmt, self.opts = fmt, fmt.options
        self.cpu_width = len(str(max(ncpus - 1, 0)))
        self.last_pid: dict[int, int] = {}
        self.enter_funcs: dict[int, dict[int, int]] = {}

    def header(self) -> str:
        if "context-info" not in self.opts:
            return ""
        o = self.opts
        cols = [("funcgraph-abstime", "     TIME       ", "      |         "),
                ("funcgraph-cpu", " CPU", " |  "), ("funcgraph-proc", "  TASK/PID       ", "   |    |        ")]
        lat = "latency-format" in o
        head = ""
        if lat:                     # print_lat_header, as wide as the columns before it
            pad = " " * sum((16, 4, 17)[i] for i, (k, _, _) in enumerate(cols) if k in o)
            head = "".join(f"#{pad}{s}\n" for s in ("  _-----=> irqs-off        ", " / _----=> need-resched    ",
                                                     "| / _---=> hardirq/softirq ", "|| / _--=> preempt-depth   ",
                                                     "||| /                      "))
        first = "#" + "".join(a for k, a, _ in cols if k in o) + ("||||   " if lat else "")
        second = "#" + "".join(b for k, _, b in cols if k in o) + ("||||   " if lat else "")
        if "funcgraph-duration" in o:
            first, second = first + "  DURATION   ", second + "   |   |      "
        return head + first + "               FUNCTION CALLS\n" + second + "               |   |   |   |\n"

    def _comm(self, pid: int) -> str:
        return self.fmt.task(pid)

    def _cpu(self, cpu: int) -> str:
        return f" {cpu:>{self.cpu_width}d}) "

    def _prologue(self, e: TraceEntry) -> str:
        out = self._verif_pid(e)
        if "context-info" not in self.opts:
            return out
        if "funcgraph-abstime" in self.opts:
            us = (e.ts + 500) // 1000
            out += f"{us // 1000000:5d}.{us % 1000000:06d} |  "
        if "funcgraph-cpu" in self.opts:
            out += self._cpu(e.cpu)
        if "funcgraph-proc" in self.opts:
            out += proc_text(e.pid, self._comm(e.pid)) + " | "
        if "latency-format" in self.opts:
            out += " " + self.fmt.lat(e) + " | "
        return out

    def _verif_pid(self, e: TraceEntry) -> str:
        prev = self.last_pid.get(e.cpu, -1)
        if prev == e.pid:
            return ""
        self.last_pid[e.cpu] = e.pid
        if prev == -1:
            return ""
        return (" ------------------------------------------\n" + self._cpu(e.cpu)
                + proc_text(prev, self._comm(prev)) + " => " + proc_text(e.pid, self._comm(e.pid))
                + "\n ------------------------------------------\n\n")

    def _duration(self, ns: int | None) -> str:
        if "funcgraph-duration" not in self.opts or "context-info" not in self.opts:
            return ""
        if ns is None:
            return "              |  "
        # print_graph_return subtracts unsigned long long: a task that went to sleep on one
        # CPU and returns on another whose local clock is behind prints the wrapped value.
        ns &= (1 << 64) - 1
        mark = " "
        if "funcgraph-overhead" in self.opts:
            mark = trace_find_mark(ns)
        return f"{mark} " + duration_text(ns) + "|  "

    def format(self, entries: list[TraceEntry]) -> str:
        """All entries (merged by time): an entry directly followed, in its CPU's stream, by
        the return of the same function and pid prints as one leaf line."""
        nxt: dict[int, int] = {}
        last: dict[int, int] = {}
        for i, e in enumerate(entries):
            if e.cpu in last:
                nxt[last[e.cpu]] = i
            last[e.cpu] = i
        out, skip = [], set()
        for i, e in enumerate(entries):
            if i in skip:
                continue
            if e.type == TRACE_GRAPH_ENT:
                func, depth = _ent.unpack_from(e.body, 0)
                j = nxt.get(i)
                r = entries[j] if j is not None else None
                if r is not None and r.type == TRACE_GRAPH_RET and r.pid == e.pid \
                        and _ret.unpack_from(r.body, 0)[0] == func:
                    skip.add(j)
                    _f, _rv, _d, _ov, calltime, rettime = _ret.unpack_from(r.body, 0)
                    out.append(self._prologue(e) + self._duration(rettime - calltime)
                               + "  " * depth + f"{self.fmt.sym_name(func)}();\n")
                    continue
                self.enter_funcs.setdefault(e.cpu, {})[depth] = func
                out.append(self._prologue(e) + self._duration(None) + "  " * depth
                           + f"{self.fmt.sym_name(func)}() {{\n")
            elif e.type == TRACE_GRAPH_RET:
                func, _rv, depth, overrun, calltime, rettime = _ret.unpack_from(e.body, 0)
                seen = self.enter_funcs.get(e.cpu, {})
                match = 0 <= depth < FTRACE_RETFUNC_DEPTH and seen.get(depth) == func
                seen.pop(depth, None)
                tail = "}\n" if match and "funcgraph-tail" not in self.opts else \
                    f"}} /* {self.fmt.sym_name(func)} */\n"
                text = self._prologue(e) + self._duration(rettime - calltime) + "  " * depth + tail
                if "funcgraph-overrun" in self.opts:
                    text += f" (Overruns: {overrun})\n"
                out.append(text)
            else:                       # other events as comments, one level deeper
                depth = max(self.enter_funcs.get(e.cpu, {0: 0}), default=0) + 1
                out.append(self._prologue(e) + self._duration(None) + "  " * depth
                           + "/* " + self.fmt.event_text(e).rstrip("\n") + " */\n")
        return "".join(out)
