"""struct pt_regs (x86-64) as a Python view over the frame a trampoline saved in the guest.

Fields have the kernel's names and offsets (arch/x86/include/uapi/asm/ptrace-abi.h). Reads
decode only the field asked for; fields the callback writes are remembered, and only those
are written back to the guest frame, from where the trampoline restores them into the CPU
(a changed ``ip``: the traced call goes on there).
"""
from __future__ import annotations

import struct

PT_REGS_FIELDS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax",
                  "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")
PT_REGS_OFFSET = {name: 8 * i for i, name in enumerate(PT_REGS_FIELDS)}
FRAME_SIZE = 8 * len(PT_REGS_FIELDS)          # 168
_q = struct.Struct("<Q")


class PtRegs:
    """Registers of the traced function at its entry, readable and writable by name."""

    __slots__ = ("_raw", "dirty", "address")

    def __init__(self, raw, address: int) -> None:
        self._raw = bytearray(raw)
        self.dirty: set[int] = set()       # offsets of the fields written
        self.address = address

    def changes(self) -> list[tuple[int, bytes]]:
        """(guest address, 8 bytes) for every field written, in layout order."""
        return [(self.address + off, bytes(self._raw[off:off + 8])) for off in sorted(self.dirty)]

    def __repr__(self) -> str:
        return "pt_regs(" + ", ".join(f"{n}=0x{getattr(self, n):x}" for n in PT_REGS_FIELDS) + ")"


def _field(off: int) -> property:
    def get(self: PtRegs) -> int:
        return _q.unpack_from(self._raw, off)[0]

    def put(self: PtRegs, value: int) -> None:
        _q.pack_into(self._raw, off, value & 0xFFFFFFFFFFFFFFFF)
        self.dirty.add(off)
    return property(get, put)


for _name, _off in PT_REGS_OFFSET.items():
    setattr(PtRegs, _name, _field(_off))
