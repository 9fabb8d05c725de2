"""What users hand the machine, checked before anything is created or changed: a wrong type
is a TypeError, a bad value a ValueError, each naming the argument."""
from __future__ import annotations

import math
import os
from typing import Any

from . import memlayout as L

U64 = 1 << 64
QUANTUM_MAX = 10_000_000        # events and Ctrl-C are looked at between slices
NMI_PERIOD_MIN_MS = 0.001       # shorter periods leave the guest no time between NMIs
MEMORY_MB = (24, 2048)
SPAN_MAX = MEMORY_MB[1] << 20


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within [lo, hi] (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bounds}, not {value}")
    return value


def duration_ms(name: str, value: Any) -> float:
    """A virtual-time span in milliseconds: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value}")
    return float(value)


def machine_args(cpus: Any, memory_mb: Any, kernel: Any, cmdline: Any, quantum: Any,
                 slice_seed: Any, nmi_period_ms: Any, deterministic: Any) -> int:
    """Check Machine's arguments; returns the NMI period in ns (0: none)."""
    integer("cpus", cpus, 1, L.NCPU)
    integer("memory_mb", memory_mb, *MEMORY_MB)
    if kernel is not None:
        if not isinstance(kernel, (str, os.PathLike)):
            raise TypeError(f"kernel must be a path, not {type(kernel).__name__}")
        if not os.fspath(kernel):
            raise ValueError("kernel must be a path, not an empty string")
    if not isinstance(cmdline, str):
        raise TypeError(f"cmdline must be a str, not {type(cmdline).__name__}")
    if "\0" in cmdline:
        raise ValueError("cmdline must not contain NUL")
    if len(cmdline.encode()) >= L.BP_CMDLINE_MAX:
        raise ValueError(f"cmdline longer than {L.BP_CMDLINE_MAX - 1} bytes")
    integer("quantum", quantum, 1, QUANTUM_MAX)
    if slice_seed is not None:
        integer("slice_seed", slice_seed)
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool, not {type(deterministic).__name__}")
    if nmi_period_ms is None:
        return 0
    period = duration_ms("nmi_period_ms", nmi_period_ms)
    if 0 < period < NMI_PERIOD_MIN_MS:
        raise ValueError(f"nmi_period_ms must be 0 (none) or at least {NMI_PERIOD_MIN_MS}, not {period}")
    return int(period * 1e6)


def guest_range(addr: Any, n: Any) -> None:
    """A span of the 64-bit address space: ``addr`` in [0, 2**64), ``n`` >= 0, no wrap, and
    at most SPAN_MAX bytes (more than any guest RAM: a bigger span is a mistake)."""
    integer("addr", addr, 0, U64 - 1)
    integer("length", n, 0, min(U64 - addr, SPAN_MAX))


def data_bytes(data: Any) -> bytes:
    """Bytes to write: bytes, bytearray or memoryview (an int would be a count of zeros)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    return bytes(data)


def call_args(func: Any, args: tuple, cpu: Any, ncpus: int, max_insns: Any) -> tuple[int, ...]:
    """Check Machine.call's arguments; returns the argument registers' values."""
    if isinstance(func, bool) or not isinstance(func, (str, int)):
        raise TypeError(f"func must be a symbol name or an address, not {type(func).__name__}")
    if isinstance(func, int):
        integer("func", func, 0, U64 - 1)
    if len(args) > 6:
        raise ValueError("at most six arguments")
    regs = tuple(integer(f"argument {i + 1}", a, -(1 << 63), U64 - 1) & (U64 - 1)
                 for i, a in enumerate(args))
    integer("cpu", cpu, 0, ncpus - 1)
    integer("max_insns", max_insns, 1)
    return regs
