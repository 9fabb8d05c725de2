"""The machine's memory map and hardware numbers, read from guest/memlayout.h.

The C header is the one source of truth: the guest includes it, the host parses its
``#define NAME value`` lines here, so the two can never disagree.
"""
from __future__ import annotations

import re

from guest import SOURCE_DIR

_DEFINE = re.compile(r"^#define\s+([A-Z_][A-Z0-9_]*)\s+(-?0x[0-9a-fA-F]+|-?\d+)\b", re.M)


def parse_header(text: str) -> dict[str, int]:
    """Return every numeric ``#define`` of a header as a name -> int mapping."""
    return {name: int(value, 0) for name, value in _DEFINE.findall(text)}


LAYOUT: dict[str, int] = parse_header((SOURCE_DIR / "memlayout.h").read_text())
globals().update(LAYOUT)
