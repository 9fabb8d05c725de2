"""The free-running mode's slice timer: one host thread that stops the running vCPU when its
slice's host time is up (Unicorn's own ``timeout`` starts a thread per slice, which costs
more than short slices can afford)."""
from __future__ import annotations

import threading
import time


class SliceTicker:
    """``arm(uc, ns)`` before an emu_start; ``disarm()`` after it returns."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._uc = None
        self._deadline = 0.0
        self._generation = 0
        threading.Thread(target=self._loop, name="ftemu-ticker", daemon=True).start()

    def arm(self, uc, ns: int) -> None:
        with self._cv:
            self._uc, self._deadline = uc, time.perf_counter() + ns / 1e9
            self._generation += 1
            self._cv.notify()

    def disarm(self) -> None:
        with self._cv:
            self._uc = None
            self._generation += 1

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._uc is None:
                    self._cv.wait()
                uc, deadline, gen = self._uc, self._deadline, self._generation
            delay = deadline - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with self._cv:
                if self._generation == gen and self._uc is uc:
                    uc.emu_stop()
                    self._uc = None
