"""Ctrl-C during ``Machine.run``/``call``: the machine stops at the next point where it is
whole (between slices, or between chunks of a call), then KeyboardInterrupt reaches the
caller. Raised inside a hook instead, it could cut a host-side update in half. A second
Ctrl-C before that point interrupts at once, as Python normally does."""
from __future__ import annotations

import signal
import threading

try:        # the signal module's C core: its Python wrappers convert every value to an enum,
    import _signal as _sig      # ~9 us of each Machine.call (a 60 us call of a tiny function)
except ImportError:             # another Python implementation
    _sig = signal               # type: ignore[misc]


class DeferredCtrlC:
    """Holds SIGINT while the outermost run or call is active (main thread, default handler
    only: a program's own SIGINT handling is left alone)."""

    def __init__(self) -> None:
        self.pending = False
        self._depth = 0
        self._installed = False

    def __enter__(self) -> "DeferredCtrlC":
        if self._depth == 0 and threading.current_thread() is threading.main_thread() \
                and _sig.getsignal(signal.SIGINT) is signal.default_int_handler:
            _sig.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self._installed:
                _sig.signal(signal.SIGINT, signal.default_int_handler)
                self._installed = False
            if exc_type is None:
                self.check()
            self.pending = False

    def _on_sigint(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        """Raise the held KeyboardInterrupt, if any: only where the machine is whole, i.e.
        in the outermost run or call (a nested call runs inside a hook)."""
        if self.pending and self._depth <= 1:
            self.pending = False
            raise KeyboardInterrupt
