"""``ftemu demo``: the guest's own tracing files at work, in a few seconds: a
``function_graph`` of one system call, then the ``function`` tracer catching a timer
interrupt on one CPU, with the hardirq and softirq it runs in shown in the latency columns
(``h``, ``s``), exactly as ``cat trace`` prints them."""
from __future__ import annotations

import argparse
import re
from typing import Callable

from emu import Machine

from .options import add_command, add_machine_options, make_machine, write_out

TIMER_IRQ = "timer_interrupt"
LAT = re.compile(r"\] (\S)(\S)(\S)(\S)(\S) ")
STEP_MS, BUDGET_MS = 2.0, 50.0


def _context(line: str) -> str:
    """The hardirq/softirq column of a trace line ('.' in task context)."""
    m = LAT.search(line)
    return m[3] if m else "."


def timer_interrupt_lines(lines: list[str]) -> list[str] | None:
    """The first timer interrupt that ran a softirq: from its ``timer_interrupt`` line through
    the end of the softirq (irq_exit's glue between them included); None if none yet."""
    for i, line in enumerate(lines):
        if f": {TIMER_IRQ} <-" not in line:
            continue
        j = i + 1
        while j < len(lines) and (_context(lines[j]) != "." or "<-irq_exit" in lines[j]):
            j += 1
        if any(_context(ln) == "s" for ln in lines[i:j]):
            return lines[i:j]
    return None


SYSCALL = "do_syscall_64"
GRAPH_LINES = (4, 30)          # a short graph: this many lines, no context switch inside


def one_syscall(lines: list[str]) -> list[str] | None:
    """The first short, complete ``do_syscall_64() {`` ... ``}`` block of one CPU's graph."""
    for i, line in enumerate(lines):
        if not line.endswith(f"|  {SYSCALL}() {{"):
            continue
        for j in range(i + 1, min(len(lines), i + GRAPH_LINES[1])):
            if lines[j].startswith(" -") or "=>" in lines[j]:
                break
            if lines[j].endswith("|  }"):
                if j + 1 - i >= GRAPH_LINES[0]:
                    return lines[i:j + 1]
                break
    return None


def trace_until(m: Machine, tracer: str, pick: Callable[[list[str]], list[str] | None],
                what: str) -> str:
    """Run ``tracer`` until ``pick`` finds its lines among the trace's; those lines under the
    ``trace`` file's own header."""
    t = m.tracefs
    t.write("current_tracer", tracer)
    found, spent = None, 0.0
    while found is None and spent < BUDGET_MS:
        m.run(STEP_MS)
        spent += STEP_MS
        text = t.read("trace")
        found = pick([ln for ln in text.splitlines() if not ln.startswith("#")])
    t.write("current_tracer", "nop")
    if found is None:
        raise RuntimeError(f"no {what} within {BUDGET_MS:g} ms")
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    return "\n".join(header + found) + "\n"


def graph_of_one_syscall(m: Machine) -> str:
    """function_graph on every function until a CPU has run a short system call."""
    def pick(body: list[str]) -> list[str] | None:
        for cpu in range(len(m.cpus)):
            found = one_syscall([ln for ln in body if re.match(rf" ?{cpu}\) ", ln)])
            if found:
                return found
        return None
    return trace_until(m, "function_graph", pick, "short system call")


def function_trace_of_a_timer_interrupt(m: Machine) -> str:
    """Trace every function on CPU 0 until a timer interrupt has run a softirq there."""
    m.tracefs.write("tracing_cpumask", "1")
    return trace_until(m, "function", timer_interrupt_lines, "timer interrupt ran a softirq")


def run(args: argparse.Namespace) -> int:
    m = make_machine(args)
    write_out(f"$ echo function_graph > current_tracer; cat trace   # one {SYSCALL}, one CPU\n")
    write_out(graph_of_one_syscall(m))
    write_out("\n$ echo 1 > tracing_cpumask; echo function > current_tracer; cat trace\n")
    write_out(function_trace_of_a_timer_interrupt(m))
    return 0


def register(sub) -> None:
    p = add_command(sub, "demo", "boot and show ftrace at work: a timer interrupt caught by the "
                    "function tracer", "ftemu demo")
    add_machine_options(p, ms=None)
    p.set_defaults(func=run)
