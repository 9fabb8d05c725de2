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
