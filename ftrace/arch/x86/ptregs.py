"""struct pt_regs (x86-64) as a Python view over the frame a trampoline saved in the guest.

Fields have the kernel's names and offsets (arch/x86/include/uapi/asm/ptrace-abi.h). Fields
the callback writes are remembered, and only those are written back to the guest frame,
from where the trampoline restores them into the CPU (ip: the traced call goes on there).
"""
from __future__ import annotations

import struct

PT_REGS_FIELDS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax",
                  "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")
PT_REGS_OFFSET = {name: 8 * i for i, name in enumerate(PT_REGS_FIELDS)}
FRAME_SIZE = 8 * len(PT_REGS_FIELDS)          # 168
_fmt = struct.Struct(f"<{len(PT_REGS_FIELDS)}Q")


class PtRegs:
    """Registers of the traced function at its entry, readable and writable by name."""

    __slots__ = ("_values", "_dirty", "address")

    def __init__(self, raw: bytes, address: int) -> None:
        object.__setattr__(self, "_values", list(_fmt.unpack(raw)))
        object.__setattr__(self, "_dirty", set())
        object.__setattr__(self, "address", address)

    def __getattr__(self, name: str) -> int:
        try:
            return self._values[PT_REGS_FIELDS.index(name)]
        except ValueError:
            raise AttributeError(f"struct pt_regs has no field {name!r}") from None

    def __setattr__(self, name: str, value: int) -> None:
        if name not in PT_REGS_OFFSET:
            raise AttributeError(f"struct pt_regs has no field {name!r}")
        self._values[PT_REGS_FIELDS.index(name)] = value & 0xFFFFFFFFFFFFFFFF
        self._dirty.add(name)

    def changes(self) -> list[tuple[int, bytes]]:
        """(guest address, 8 bytes) for every field written, in layout order."""
        return [(self.address + PT_REGS_OFFSET[n], struct.pack("<Q", self._values[PT_REGS_FIELDS.index(n)]))
                for n in PT_REGS_FIELDS if n in self._dirty]

    def __repr__(self) -> str:
        return "pt_regs(" + ", ".join(f"{n}=0x{v:x}" for n, v in zip(PT_REGS_FIELDS, self._values)) + ")"
