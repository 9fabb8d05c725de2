"""Errors raised by the machine: one base, EmuError, so callers catch one thing."""
from __future__ import annotations


class EmuError(Exception):
    """The guest could not go on: a panic, a triple fault, a budget run out, a bad request.

    ``cpu``, ``rip`` (where it faulted, as ``Machine.lookup`` prints it), ``backtrace`` (such
    strings, innermost first, with a ``<#PF>``-style marker where the walk crossed into an
    interrupted context) and ``others`` (every other CPU, one line each) say where, when
    the error is about guest execution.
    """

    def __init__(self, message: str, cpu: int | None = None, rip: str | None = None,
                 backtrace: list[str] | None = None, others: list[str] | None = None) -> None:
        self.message = message
        self.cpu = cpu
        self.rip = rip
        self.backtrace = backtrace or []
        self.others = others or []
        super().__init__(self._format())

    def _format(self) -> str:
        where = "" if self.cpu is None else f" (CPU {self.cpu} at {self.rip})"
        lines = [self.message + where]
        lines += ["  " + frame for frame in self.backtrace]
        lines += [" " + line for line in self.others]
        return "\n".join(lines)


class GuestPanic(EmuError):
    """The guest kernel called panic()."""


class TripleFault(EmuError):
    """An exception could not be delivered, not even as a double fault."""


class GuestMemoryError(EmuError):
    """Guest memory the host was asked to reach has no mapping: an address the guest handed
    the host (a hypercall's pointer: then CPU, RIP and backtrace say where), or one given to
    ``Machine.read``/``write``."""


class BudgetExceeded(EmuError):
    """The guest ran past the virtual-time budget it was given."""


class CallbackError(EmuError):
    """A host callback (an ftrace ops' Python function, a hook) raised while a vCPU ran: the
    machine stopped there, the callback's exception is chained as ``__cause__``, and the run
    can go on (``m.run``/``m.call`` continue after the instruction that called it)."""


class BuildError(EmuError):
    """The guest kernel failed to build."""
