"""Errors of the ftrace package: every failure is an FtraceError carrying the kernel's errno."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftrace.records import DynFtrace

__all__ = ["FtraceError", "FtracePatchError"]


class FtraceError(OSError):
    """Base of every ftrace error; `e.errno` is the kernel's errno (EINVAL, EBUSY, ENODEV, ...).

    Raise it as `FtraceError(errno.EINVAL, "message")`, as the kernel returns `-EINVAL`.
    """


class FtracePatchError(FtraceError):
    """A call site did not hold the bytes ftrace expected (EINVAL) or could not be read (EFAULT).

    Raised by the arch layer; `rec` is the record, `actual`/`expected` the 5 bytes for EINVAL.
    Core answers with ftrace_bug() and ftrace_kill(), as the kernel does.
    """

    def __init__(self, err: int, message: str, rec: DynFtrace,
                 actual: bytes | None = None, expected: bytes | None = None) -> None:
        super().__init__(err, message)
        self.rec = rec
        self.actual = actual
        self.expected = expected

