"""Shared helpers for the benchmarks: medians of repeated timings, and one printing format.
Every figure is measured in this run, side by side with its peer (machines here are noisy)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def timed(fn: Callable[[], object], repeat: int = 5,
          now: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn()`` in seconds: wall time, or by the clock ``now``
    (``time.thread_time``: this thread's CPU time, steadier on a shared host)."""
    return statistics.median(clock(fn, now) for _ in range(repeat))


def row(label: str, value: str, target: str = "") -> None:
    print(f"  {label:58} {value:>16}  {target}")


def verdict(ok: bool) -> str:
    return "(target met)" if ok else "(target MISSED)"


def clock(fn: Callable[[], object], now: Callable[[], float] = time.perf_counter) -> float:
    """Time of one ``fn()`` in seconds (wall time, or by the clock ``now``)."""
    t = now()
    fn()
    return now() - t


def min_med_max(values: list[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of ``values``, each formatted with ``fmt``."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
