"""What may happen while a vCPU is inside a callback, and what must wait: ``Machine.defer``'s
queue, callback errors kept for the next top-level run, and the refusal of whole-machine
operations (run, restore, boot, snapshot) from a hook. A mixin of ``Machine``."""
from __future__ import annotations

import contextlib
from typing import Callable

from .errors import EmuError


class DeferredWork:
    """``Machine.defer``'s queue: functions to run outside every callback, in the order they
    were deferred. A snapshot participant, so a restore brings back exactly the work that was
    pending (the callables themselves are shared, not copied)."""

    def __init__(self) -> None:
        self.queue: list[Callable[[], None]] = []

    def snapshot_state(self) -> list:
        return list(self.queue)

    def restore_state(self, st: list) -> None:
        self.queue[:] = st


class CallbackContext:
    """Machine's callback-context half; the machine sets ``_deferred`` (a DeferredWork),
    ``_defer_holds`` and ``_deferred_error`` and has ``cpus``."""

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` outside every callback, as soon as the current slice ends (between two
        rounds of the run loop, in the order deferred). This is how a callback asks for what
        it may not do itself: register or unregister ftrace ops, run, restore. Pending work is
        part of snapshots."""
        if not callable(fn):
            raise TypeError(f"defer() needs a callable, not {type(fn).__name__}")
        self._deferred.queue.append(fn)

    @contextlib.contextmanager
    def hold_deferred(self):
        """Keep deferred work (and a deferred callback error) queued while the block runs,
        even if it runs the machine: an API call that waits must not run other API calls."""
        self._defer_holds += 1
        try:
            yield
        finally:
            self._defer_holds -= 1

    def defer_error(self, exc: EmuError) -> None:
        """Keep ``exc`` (a callback's error met while the host was busy, e.g. inside an int3
        update) to be raised by the next run or call at top level; the first one wins."""
        if self._deferred_error is None:
            self._deferred_error = exc

    def _top_level(self, what: str, raise_kept: bool = True) -> None:
        """Refuse ``what`` from a callback; then raise a kept callback error, if asked."""
        if self.in_guest():
            raise EmuError(f"Machine.{what}() cannot be called from a callback (a vCPU is "
                           f"in the middle of an instruction); use Machine.defer()")
        if raise_kept and self._deferred_error is not None and not self._defer_holds:
            exc, self._deferred_error = self._deferred_error, None
            raise exc

    def in_guest(self) -> bool:
        """True while called from a hook, i.e. some vCPU is in the middle of an instruction."""
        return any(c.in_slice for c in self.cpus)
