"""``ftemu demo``: what a newcomer sees first."""
from __future__ import annotations

import re

from cli_helpers import ftemu

LINE = re.compile(r"^\s+(\S+)-(\d+)\s+\[(\d{3})\] (\S)(\S)(\S)(\S)(\S)\s+([\d.]+): (\w+) <-(\w+)$")


GRAPH = re.compile(r"^ ?(\d)\) (.*?)\|  ( *)(\w+\(\) \{|\w+\(\);|\})$")


def test_demo_shows_the_function_graph_of_one_system_call_then_a_timer_interrupt():
    r = ftemu("demo")
    assert r.returncode == 0 and r.stderr == ""
    graph, function = r.stdout.split("\n\n", 1)
    check_graph(graph.splitlines())
    check_timer_interrupt(function.splitlines())


def check_graph(out: list[str]) -> None:
    assert out[0] == "$ echo function_graph > current_tracer; cat trace   # one do_syscall_64, one CPU"
    assert out[1:5] == ["# tracer: function_graph", "#",
                        "# CPU  DURATION                  FUNCTION CALLS",
                        "# |     |   |                     |   |   |   |"]
    body = [GRAPH.match(ln) for ln in out[5:]]
    assert all(body), out[5:]
    assert len({m[1] for m in body}) == 1                              # one CPU
    assert (body[0][3], body[0][4]) == ("", "do_syscall_64() {")
    assert (body[-1][3], body[-1][4]) == ("", "}") and body[-1][2].strip().endswith("us")
    depth = 0
    for m in body:                      # braces balance, and indentation follows them
        indent = len(m[3]) // 2
        if m[4] == "}":
            depth -= 1
        assert indent == depth, m[0]
        if m[4].endswith("{"):
            depth += 1
    assert depth == 0 and len(body) >= 4


def check_timer_interrupt(out: list[str]) -> None:
    assert out[0] == "$ echo 1 > tracing_cpumask; echo function > current_tracer; cat trace"
    assert out[1] == "# tracer: function"
    body = [LINE.match(ln) for ln in out if not ln.startswith(("#", "$"))]
    assert all(body), [ln for ln in out if not ln.startswith(("#", "$"))]
    assert {m[3] for m in body} == {"000"}                          # CPU 0 only
    assert (body[0][10], body[0][11]) == ("timer_interrupt", "sysvec_apic_timer_interrupt")
    contexts = [m[6] for m in body]
    first_soft = contexts.index("s")
    assert set(contexts[:first_soft - 1]) == {"h"}                 # the hardirq first...
    assert body[first_soft - 1].group(10, 11) == ("__do_softirq", "irq_exit")  # its exit glue
    assert set(contexts[first_soft:]) == {"s"}                     # ...then the softirq
    assert all(m[4] == "d" for m in body[:first_soft])             # irqs off in the hardirq
    stamps = [float(m[9]) for m in body]
    assert stamps == sorted(stamps)
