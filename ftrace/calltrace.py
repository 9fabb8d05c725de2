"""Which functions ran during a block, in which context, how often, in which order:
``with m.tracing("schedule", "try_to_wake_up") as t:`` (what test suites assert on).

Built on an ftrace ops with a Python callback; the records (``Call``) do not depend on that,
so the function tracer's ring buffer can feed the same interface later."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

from emu import EmuError

from .ops import FtraceOps

if TYPE_CHECKING:
    from emu import Machine


class Call(NamedTuple):
    """One traced call: the function, its caller (as %pS prints it), where it ran and when."""
    func: str
    parent: str
    cpu: int
    context: str           # "normal", "softirq", "irq" or "nmi"
    pid: int
    comm: str
    ts: int                # trace_clock(): the CPU's virtual ns

    def line(self) -> str:
        """The call as the function tracer prints it (``trace`` file layout)."""
        task = f"{self.comm}-{self.pid}"
        return (f"{task:>16} [{self.cpu:03d}] {self.context:>7} {self.ts / 1e9:12.6f}: "
                f"{self.func} <-{self.parent}")


class CallTrace:
    """The calls of the functions matching ``patterns`` (ftrace filter globs) made while the
    ``with`` block ran, in the order they happened across all CPUs."""

    def __init__(self, machine: "Machine", patterns: tuple[str, ...]) -> None:
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError("tracing() needs one or more function names or globs")
        self.machine = machine
        self.patterns = patterns
        self.calls: list[Call] = []
        self._ops: Any = None

    def _callback(self, ip: int, parent_ip: int, op: Any, regs: Any) -> None:
        ft, m = self.machine.ftrace, self.machine
        try:
            task = ft.current
            pid, comm = task.pid, task.comm
        except OSError:
            pid, comm = -1, "?"
        self.calls.append(Call(m.lookup(ip).split("+", 1)[0], m.lookup(parent_ip),
                               ft.smp_processor_id(), ft.current_context(), pid, comm,
                               ft.trace_clock()))

    def __enter__(self) -> "CallTrace":
        ft = self.machine.ftrace
        ops = FtraceOps(self._callback)
        for i, pattern in enumerate(self.patterns):
            ft.ftrace_set_filter(ops, pattern, i == 0)
        ft.register_ftrace_function(ops)
        self._ops = ops
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        ops, self._ops = self._ops, None
        try:
            self.machine.ftrace.unregister_ftrace_function(ops)
        except EmuError:
            if exc_type is None:          # the block's own error says more
                raise

    # ---- what tests assert -------------------------------------------------------
    @property
    def order(self) -> list[str]:
        """Function names in call order."""
        return [c.func for c in self.calls]

    def count(self, func: str | None = None) -> int:
        """How many calls (of ``func``, or of everything traced)."""
        return len(self.calls) if func is None else sum(c.func == func for c in self.calls)

    @property
    def counts(self) -> Counter:
        return Counter(c.func for c in self.calls)

    def ran(self, func: str) -> bool:
        return any(c.func == func for c in self.calls)

    def contexts(self, func: str) -> set[str]:
        """The contexts ``func`` ran in."""
        return {c.context for c in self.calls if c.func == func}

    def cpus(self, func: str) -> set[int]:
        return {c.cpu for c in self.calls if c.func == func}

    def callers(self, func: str) -> Counter:
        """``func``'s callers (function names) and how often each called it."""
        return Counter(c.parent.split("+", 1)[0] for c in self.calls if c.func == func)

    def first(self, func: str) -> int:
        """Index of ``func``'s first call (ValueError if it never ran)."""
        return self.order.index(func)

    def lines(self, last: int | None = None) -> list[str]:
        """The calls as trace lines (the ``last`` ones only if given)."""
        calls = self.calls if last is None else self.calls[-last:]
        return [c.line() for c in calls]
