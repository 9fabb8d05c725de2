"""The free-running mode's slice timer: one host thread that ends the running vCPU's slice
when its host time is up (Unicorn's own ``timeout`` starts a thread per slice, which costs
more than short slices can afford).

The ticker never calls ``uc_emu_stop`` itself: from another thread, Unicorn 2.1.4 may end a
run in the middle of a translation block with RIP rolled back to the block start, so the
block's first instructions run twice (a ``sub`` on preempt_count did, and the guest
panicked), and a stop landing while ``uc_emu_start`` is still setting up is lost (the slice
then never ends). It calls ``stop()`` instead, which sets a flag the native block hook
checks at every block start (emu/blockcount.py): the flag stays set until the next slice
begins, so it cannot be lost, and the stop is exact. No slice is shorter than
``MIN_SLICE_NS``, so hand-offs stay rare next to the work they bound. The thread ends after
``IDLE_EXIT_S`` without a slice and comes back on the next ``arm``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

MIN_SLICE_NS = 50_000
IDLE_EXIT_S = 1.0


class SliceTicker:
    """``arm(stop, ns)`` before an emu_start; ``disarm()`` after it returns."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._stop: Callable[[], None] | None = None
        self._deadline = 0.0
        self._thread: threading.Thread | None = None

    def arm(self, stop: Callable[[], None], ns: int) -> None:
        """Call ``stop()`` (from the ticker thread) once ``max(ns, MIN_SLICE_NS)`` host ns
        have passed, unless ``disarm`` comes first."""
        with self._cv:
            self._stop = stop
            self._deadline = time.perf_counter() + max(ns, MIN_SLICE_NS) / 1e9
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ftemu-ticker", daemon=True)
                self._thread.start()
            self._cv.notify()

    def disarm(self) -> None:
        """The slice has ended: no stop for it any more."""
        with self._cv:
            self._stop = None
            self._cv.notify()

    def _loop(self) -> None:
        cv = self._cv
        with cv:
            while True:
                if self._stop is None and not cv.wait_for(lambda: self._stop is not None, IDLE_EXIT_S):
                    self._thread = None
                    return
                delay = self._deadline - time.perf_counter()
                if delay > 0:
                    cv.wait(delay)              # woken early by disarm or a new arm
                    continue
                stop, self._stop = self._stop, None
                stop()
