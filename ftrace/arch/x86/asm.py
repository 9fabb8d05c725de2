"""Assembling host-generated guest code with keystone, piece by piece at known addresses.

Keystone resolves labels only inside one source string, so code is emitted in pieces, each
assembled at the address it will live at; ``label()`` records where the next piece starts.
"""
from __future__ import annotations

import re

from keystone import KS_ARCH_X86, KS_MODE_64, Ks

_ks = Ks(KS_ARCH_X86, KS_MODE_64)
_DEF = re.compile(r"^\s*(\d+):")
_REF = re.compile(r"\b(\d+)([fb])\b")


def local_labels(src: str) -> str:
    """Rewrite GNU numeric local labels (``1:``, ``jmp 1b``, ``jz 2f``), which keystone
    lacks, into unique names."""
    lines = src.split("\n")
    defs = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _DEF.match(line))]
    name = {i: f"L{i}_{n}" for i, n in defs}

    def resolve(i: int, n: str, d: str) -> str:
        if d == "f":
            cands = [j for j, m in defs if m == n and j > i]
            return name[cands[0]] if cands else f"{n}{d}"
        cands = [j for j, m in defs if m == n and j <= i]
        return name[cands[-1]] if cands else f"{n}{d}"
    out = []
    for i, line in enumerate(lines):
        m = _DEF.match(line)
        body = line[m.end():] if m else line
        body = _REF.sub(lambda r: resolve(i, r.group(1), r.group(2)), body)
        out.append((name[i] + ":" if m else "") + body)
    return "\n".join(out)


def assemble(src: str, addr: int) -> bytes:
    """Intel-syntax ``src`` (numeric local labels allowed) assembled to run at ``addr``."""
    encoding, _ = _ks.asm(local_labels(src), addr)
    return bytes(encoding or b"")


class CodeBuilder:
    """Accumulates pieces of code starting at ``base``; labels name addresses in it."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.code = bytearray()
        self.labels: dict[str, int] = {}

    @property
    def here(self) -> int:
        return self.base + len(self.code)

    def label(self, name: str) -> int:
        self.labels[name] = self.here
        return self.here

    def emit(self, src: str) -> None:
        self.code += assemble(src, self.here)

    def raw(self, data: bytes) -> None:
        self.code += data

    def align(self, n: int = 16) -> None:
        while len(self.code) % n:
            self.code.append(0xCC)


def subreg(name: str, bits: int) -> str:
    """The 32- or 8-bit name of a 64-bit register (rcx -> ecx / cl, r8 -> r8d / r8b)."""
    if name[1:].isdigit():
        return name + ("d" if bits == 32 else "b")
    return ("e" + name[1:]) if bits == 32 else name[1] + "l"
