"""Shared helpers for the benchmarks: medians of repeated timings, and one printing format.
Every figure is measured in this run, side by side with its peer (machines here are noisy)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def row(label: str, value: str, target: str = "") -> None:
    print(f"  {label:58} {value:>16}  {target}")


def verdict(ok: bool) -> str:
    return "(target met)" if ok else "(target MISSED)"


def clock(fn: Callable[[], object]) -> float:
    """Wall time of one ``fn()`` in seconds."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def min_med_max(values: list[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of ``values``, each formatted with ``fmt``."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
