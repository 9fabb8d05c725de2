"""``ftemu dump``: a recording in the formats other viewers read: Chrome trace-event JSON
(Perfetto, chrome://tracing) or folded stacks (flamegraph.pl, speedscope)."""
from __future__ import annotations

import argparse
import json

from ftrace.trace_input import Recording

from .callgraph import folded_stacks
from .chrome import chrome_events
from .options import add_command, write_out


def write_chrome(rec: Recording, path: str, source: str) -> None:
    """The recording as Chrome trace-event JSON at ``path`` ('-': stdout)."""
    doc = {"traceEvents": list(chrome_events(rec)), "displayTimeUnit": "ns",
           "otherData": {"source": source, "clock": rec.td.clock}}
    text = json.dumps(doc, separators=(",", ":")) + "\n"
    if path == "-":
        write_out(text)
    else:
        with open(path, "w") as out:
            out.write(text)


def run(args: argparse.Namespace) -> int:
    rec = Recording.open(args.file)
    if args.chrome:
        write_chrome(rec, args.chrome, str(args.file))
        return 0
    write_out("".join(f"{path} {count}\n" for path, count in sorted(folded_stacks(rec).items())))
    return 0


def register(sub) -> None:
    p = add_command(sub, "dump", "convert a recording for Perfetto or a flame graph",
                    "ftemu dump --chrome trace.json trace.dat   # open it in ui.perfetto.dev\n"
                    "  ftemu dump --flame-graph trace.dat | flamegraph.pl > calls.svg")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--chrome", metavar="OUT.json",
                     help="write Chrome trace-event JSON ('-' for stdout)")
    how.add_argument("--flame-graph", action="store_true",
                     help="print folded stacks 'a;b;c N' (N calls of that path)")
    p.add_argument("file", nargs="?", default="trace.dat", metavar="FILE",
                   help="the recording (default trace.dat)")
    p.set_defaults(func=run)
