"""``ftemu record``: boot, trace, write a trace.dat, with trace-cmd record's spelling and
meaning. Everything goes through the guest's tracing files (m.fs), in the order trace-cmd
writes them; pages are read from ``per_cpu/cpuN/trace_pipe_raw`` every virtual millisecond
while the guest runs (as trace-cmd's recorders splice continuously), so a long recording
keeps every event the buffer would have overwritten."""
from __future__ import annotations

import argparse
import errno
import os
import sys

from emu import Machine
from ftrace import trace_dat
from ftrace.ring_buffer_format import PAGE_SIZE, decode_page
from ftrace.trace_input import Recording

from .dump import write_chrome
from .options import UsageError, add_command, add_machine_options, make_machine, run_for

TRACEFS = "/sys/kernel/tracing"
PLUGINS = ("function", "function_graph", "nop")
CLOCKS = ("local", "global", "counter", "uptime", "mono")


class PageReader:
    """Each CPU's ``trace_pipe_raw``, opened non-blocking, read until it has no page left."""

    def __init__(self, m: Machine) -> None:
        cpus = len(m.cpus)
        self.handles = [m.fs.open(f"{TRACEFS}/per_cpu/cpu{c}/trace_pipe_raw",
                                  os.O_RDONLY | os.O_NONBLOCK) for c in range(cpus)]
        self.pages: list[list[bytes]] = [[] for _ in range(cpus)]

    def drain(self) -> None:
        for cpu, h in enumerate(self.handles):
            while True:
                try:
                    page = h.read(PAGE_SIZE, 0)
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        break
                    raise
                if not page:
                    break
                self.pages[cpu].append(page)

    def close(self) -> None:
        for h in self.handles:
            h.release()


def _write(m: Machine, flag: str, path: str, value: str, append: bool = False) -> None:
    """One tracing-file write; its error is reported against the flag that asked for it."""
    try:
        m.fs.write(f"{TRACEFS}/{path}", value, append=append)
    except OSError as e:
        raise UsageError(flag, f"{value!r}: {os.strerror(e.errno) if e.errno else e} "
                               f"(writing {path})") from None


def configure(m: Machine, args: argparse.Namespace) -> None:
    """Set the tracing files as the flags say (trace-cmd record's order), start the tracer."""
    _write(m, "--clock", "trace_clock", args.clock)
    for opt in args.option:
        _write(m, "-O", "trace_options", opt)
    for flag, path, values in (("-l", "set_ftrace_filter", args.filter),
                               ("-n", "set_ftrace_notrace", args.notrace),
                               ("-g", "set_graph_function", args.graph_function)):
        for value in values:
            _write(m, flag, path, value, append=True)
    if args.max_graph_depth is not None:
        _write(m, "--max-graph-depth", "max_graph_depth", str(args.max_graph_depth))
    for event in args.event:
        _write(m, "-e", "set_event", event, append=True)
    _write(m, "-p", "current_tracer", args.plugin)
    _write(m, "-p", "tracing_on", "1")


def record(m: Machine, args: argparse.Namespace) -> trace_dat.TraceDat:
    """Configure, run ``args.ms`` virtual ms reading pages as they fill, stop, read the rest."""
    configure(m, args)
    reader = PageReader(m)
    try:
        run_for(m, args.ms, "recording", every=reader.drain)
        m.fs.write(f"{TRACEFS}/tracing_on", "0")
        reader.drain()
    finally:
        reader.close()
    return trace_dat.from_tracefs(m.fs, [b"".join(p) for p in reader.pages])


def summary(td: trace_dat.TraceDat, path: str) -> str:
    """trace-cmd's closing lines: what each CPU recorded."""
    lines = []
    for cpu in range(len(td.cpu_data)):
        pages = [decode_page(p) for p in td.pages(cpu)]
        events = sum(len(p.events) for p in pages)
        lost = sum(p.missed_events or 0 for p in pages)
        lines.append(f"CPU{cpu}: {events} events, {len(pages)} pages"
                     + (f", {lost} lost" if lost else ""))
    return "\n".join(lines) + f"\nwrote {path}"


def run(args: argparse.Namespace) -> int:
    if args.max_graph_depth is not None and args.max_graph_depth < 0:
        raise UsageError("--max-graph-depth", f"must be >= 0, not {args.max_graph_depth}")
    m = make_machine(args)
    td = record(m, args)
    trace_dat.write(args.output, td)
    print(summary(td, args.output), file=sys.stderr)
    if args.chrome:
        write_chrome(Recording(td), args.chrome, args.output)
        print(f"wrote {args.chrome}", file=sys.stderr)
    return 0


def add_trace_options(p: argparse.ArgumentParser) -> None:
    """The flags that say what to trace (shared with ``ftemu demo``'s spelling)."""
    p.add_argument("-p", dest="plugin", choices=PLUGINS, default="function",
                   help="the tracer (default function; nop to record only events)")
    p.add_argument("-e", dest="event", action="append", default=[], metavar="EVENT",
                   help="record EVENT too: system:event, event or system (set_event; repeatable)")
    p.add_argument("-l", dest="filter", action="append", default=[], metavar="FILTER",
                   help="trace only functions matching FILTER (set_ftrace_filter; repeatable)")
    p.add_argument("-n", dest="notrace", action="append", default=[], metavar="NOTRACE",
                   help="do not trace functions matching NOTRACE (set_ftrace_notrace)")
    p.add_argument("-g", dest="graph_function", action="append", default=[],
                   metavar="GRAPH_FUNC",
                   help="function_graph: graph only calls under GRAPH_FUNC (set_graph_function)")
    p.add_argument("-O", dest="option", action="append", default=[], metavar="OPTION",
                   help="a trace option, or noOPTION to clear it (trace_options)")
    p.add_argument("--max-graph-depth", type=int, metavar="N",
                   help="function_graph: deepest nesting recorded (0: no limit)")
    p.add_argument("--clock", default="local", choices=CLOCKS,
                   help="the trace clock (default local)")


def register(sub) -> None:
    p = add_command(sub, "record", "boot, trace for a while, write a trace.dat "
                    "(trace-cmd report and KernelShark read it)",
                    "ftemu record -p function_graph -g do_syscall --ms 20 -o syscalls.dat")
    add_trace_options(p)
    add_machine_options(p, ms=20, what="trace")
    p.add_argument("-o", dest="output", default="trace.dat", metavar="FILE",
                   help="where to write (default trace.dat)")
    p.add_argument("--chrome", metavar="OUT.json",
                   help="also write Chrome trace-event JSON (Perfetto), as ftemu dump --chrome")
    p.set_defaults(func=run)
