"""``ftemu demo``: what a newcomer sees first."""
from __future__ import annotations

import re

from cli_helpers import ftemu

LINE = re.compile(r"^\s+(\S+)-(\d+)\s+\[(\d{3})\] (\S)(\S)(\S)(\S)(\S)\s+([\d.]+): (\w+) <-(\w+)$")


def test_demo_shows_a_timer_interrupt_with_its_hardirq_and_softirq():
    r = ftemu("demo")
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout.splitlines()
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
