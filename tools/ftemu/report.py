"""``ftemu report [FILE]``: a recording as the kernel's ``trace`` file shows it (the
tracers' own formatter, fed from the file's pages, symbols and task names), with
``--cpu``, ``-F`` function globs, ``-O`` trace options and ``--stat``."""
from __future__ import annotations

import argparse
import fnmatch

from ftrace.trace import CLOCK_IN_NS, TRACE_OPTIONS
from ftrace import trace_events  # noqa: F401  (registers the events' line printers)
from ftrace.trace_dat import OPTION_CPUSTAT
from ftrace.trace_functions_graph import GRAPH_OPTIONS, GraphFormatter
from ftrace.trace_input import Recording
from ftrace.trace_output import TraceFormatter, format_trace

from .options import UsageError, add_command, write_out


def tracer_of(rec: Recording) -> str:
    """The tracer that wrote the recording, from the tracer events it holds."""
    for e in rec.entries():
        name = rec.record(e).name
        if name == "function":
            return name
        if name.startswith("funcgraph_"):
            return "function_graph"
    return "nop"


def options_for(words: list[str]) -> set[str]:
    """The kernel's default trace options with ``-O name`` / ``-O noname`` applied."""
    known = TRACE_OPTIONS | GRAPH_OPTIONS
    on = {k for k, v in known.items() if v}
    for word in words:
        name = word.removeprefix("no")
        if name not in known:
            raise UsageError("-O", f"no trace option {word!r}")
        (on.discard if word.startswith("no") else on.add)(name)
    return on


def stat_text(rec: Recording) -> str:
    """The per-CPU ring-buffer statistics saved when the recording stopped."""
    return "".join(s.rstrip(b"\0").decode(errors="replace").rstrip("\n") + "\n\n"
                   for s in rec.td.option(OPTION_CPUSTAT))


def run(args: argparse.Namespace) -> int:
    rec = Recording.open(args.file)
    if args.stat:
        write_out(stat_text(rec))
        return 0
    for cpu in args.cpu:
        if not 0 <= cpu < rec.cpus:
            raise UsageError("--cpu", f"the recording has CPUs 0..{rec.cpus - 1}, not {cpu}")
    cpus = sorted(set(args.cpu)) or list(range(rec.cpus))
    fmt = TraceFormatter(rec.lookup, lambda pid: rec.comms.get(pid), options_for(args.option),
                         CLOCK_IN_NS.get(rec.td.clock, False))
    entries = rec.entries(cpus)
    if args.function:
        entries = (e for e in entries if any(fnmatch.fnmatchcase(rec.entry_function(e), g)
                                             for g in args.function))
    tracer = tracer_of(rec)
    if tracer == "function_graph":
        graph = GraphFormatter(fmt, rec.cpus)
        text = f"# tracer: {tracer}\n#\n" + graph.header() + graph.format(list(entries))
    else:
        text = format_trace(tracer, fmt, entries, rec.counts(cpus), rec.cpus)
    write_out(text)
    return 0


def register(sub) -> None:
    p = add_command(sub, "report", "print a recording as the kernel's trace file shows it",
                    "ftemu report trace.dat --cpu 0 -F 'sched*' | less")
    p.add_argument("file", nargs="?", default="trace.dat", metavar="FILE",
                   help="the recording (default trace.dat)")
    p.add_argument("--cpu", type=int, action="append", default=[], metavar="N",
                   help="only CPU N (repeatable), as per_cpu/cpuN/trace shows it")
    p.add_argument("-F", dest="function", action="append", default=[], metavar="GLOB",
                   help="only events of functions matching GLOB (repeatable)")
    p.add_argument("-O", dest="option", action="append", default=[], metavar="OPTION",
                   help="a trace option for the text, or noOPTION (e.g. -O sym-offset)")
    p.add_argument("--stat", action="store_true",
                   help="print each CPU's buffer statistics at the end of the recording")
    p.set_defaults(func=run)
