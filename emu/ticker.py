"""The free-running mode's slice timer: one host thread that ends the running vCPU's slice
when its host time is up (Unicorn's own ``timeout`` starts a thread per slice, which costs
more than short slices can afford).

The ticker never calls ``uc_emu_stop``: from another thread that skips hooks and can end a
run mid-instruction (emu/kick.py says why). It calls ``stop()`` (a kick), and calls it again
every ``RETRY_S`` until the slice is disarmed, since a kick that lands while ``uc_emu_start``
is still setting up is forgotten, and a run nested in a hook may take the outer run's kick.
No slice is shorter than ``MIN_SLICE_NS``, so hand-offs stay rare next to the work they
bound. The thread sleeps until the armed deadline and is woken only when a new deadline is
earlier than the one it sleeps towards (a slice that ends early costs no wake-up: the thread
finds the slice gone at its deadline). It ends after ``IDLE_EXIT_S`` without a slice and
comes back on the next ``arm``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

MIN_SLICE_NS = 50_000
RETRY_S = 0.001
IDLE_EXIT_S = 1.0
_NEVER = float("inf")


class SliceTicker:
    """``outer = arm(stop, ns)`` before an emu_start; ``disarm(outer)`` after it returns."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._stop: Callable[[], None] | None = None
        self._deadline = _NEVER
        self._wake_at = _NEVER           # when the thread wakes by itself (it sleeps till then)
        self._thread: threading.Thread | None = None

    def arm(self, stop: Callable[[], None], ns: int) -> tuple:
        """Call ``stop()`` (from the ticker thread) once ``max(ns, MIN_SLICE_NS)`` host ns
        have passed, and again every RETRY_S, until ``disarm``. Returns what was armed
        before (a slice nested in a hook), for ``disarm`` to put back."""
        with self._cv:
            outer = (self._stop, self._deadline)
            self._stop = stop
            self._deadline = time.perf_counter() + max(ns, MIN_SLICE_NS) / 1e9
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ftemu-ticker", daemon=True)
                self._wake_at = _NEVER
                self._thread.start()
            elif self._deadline < self._wake_at:
                self._cv.notify()
            return outer

    def disarm(self, outer: tuple = (None, _NEVER)) -> None:
        """The slice has ended: no stop for it any more (``outer``: the slice it was nested
        in goes on, with its own deadline)."""
        with self._cv:
            self._stop, self._deadline = outer
            if self._deadline < self._wake_at:
                self._cv.notify()

    def _loop(self) -> None:
        cv = self._cv
        with cv:
            idle_since = time.perf_counter()
            while True:
                now = time.perf_counter()
                if self._stop is None:
                    if now - idle_since >= IDLE_EXIT_S:
                        self._thread = None
                        return
                    self._wake_at = idle_since + IDLE_EXIT_S
                    cv.wait(self._wake_at - now)
                    continue
                if now < self._deadline:
                    self._wake_at = self._deadline
                    cv.wait(self._deadline - now)
                else:
                    self._stop()
                    self._deadline = now + RETRY_S      # again, unless disarmed by then
                idle_since = time.perf_counter()
