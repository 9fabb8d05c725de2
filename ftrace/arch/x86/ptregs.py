"""struct pt_regs (x86-64) as a Python view over the frame a trampoline saved in the guest.

Fields have the kernel's names and offsets (arch/x86/include/uapi/asm/ptrace-abi.h). The view
is lazy: making one copies nothing, a read decodes the one field asked for straight from guest
memory, and a write stores that one field there, from where ftrace_regs_caller restores it
into the CPU (a changed ``ip``: the traced call goes on there). Untouched fields cost nothing.

Lifetime: the frame is live only while the callback runs, as the kernel's pt_regs pointer. A
view the callback kept (its reference count grew across the callback) is detached: it becomes
a read-only copy of the frame as the callback left it, so a kept ``regs`` reads what it read
inside the callback, and a write to it raises instead of being lost. A view nobody kept is
re-pointed at the next frame by X86Ftrace (``_base`` and ``address``; only views of RAM,
those without ``_write_through``).

``FtraceRegs`` is the same view over ftrace_caller's ``struct ftrace_regs`` (x86-64 with
DYNAMIC_FTRACE_WITH_ARGS: a pt_regs only partly filled): an IPMODIFY ops without SAVE_REGS
gets it. Only the fields the kernel saves there are readable; the others were never
written, so asking for one raises AttributeError instead of returning stale stack.
"""
from __future__ import annotations

import struct
from typing import Callable

PT_REGS_FIELDS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax",
                  "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")
PT_REGS_OFFSET = {name: 8 * i for i, name in enumerate(PT_REGS_FIELDS)}
FRAME_SIZE = 8 * len(PT_REGS_FIELDS)          # 168
_q = struct.Struct("<Q")
_MASK = 0xFFFFFFFFFFFFFFFF


class PtRegs:
    """Registers of the traced function at its entry, readable and writable by name while its
    callback runs. ``mem[base:base + FRAME_SIZE]`` is the frame at guest ``address``: guest
    RAM itself, or (for a frame that crosses a page) a copy whose written fields
    ``write_through(address, data)`` stores in the guest as well."""

    __slots__ = ("_mem", "_base", "address", "_write_through")

    def __init__(self, mem, base: int, address: int,
                 write_through: Callable[[int, bytes], None] | None = None) -> None:
        self._mem, self._base, self.address = mem, base, address
        self._write_through = write_through

    _fields = PT_REGS_FIELDS

    def detach(self) -> None:
        """Keep the frame's current contents as a read-only copy (the frame itself is about
        to be popped)."""
        self._mem = bytes(self._mem[self._base:self._base + FRAME_SIZE])
        self._base = 0
        self.__class__ = _DETACHED[type(self)]

    def __repr__(self) -> str:
        name = "pt_regs" if type(self) in _FULL else "ftrace_regs"
        return name + "(" + ", ".join(f"{n}=0x{getattr(self, n):x}" for n in self._fields) + ")"


class _DetachedPtRegs(PtRegs):
    """A view kept past its callback: reads what the frame held, refuses writes."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        kind = "pt_regs" if type(self) in _FULL else "ftrace_regs"
        raise AttributeError(f"{kind}.{name}: the frame is gone (its callback returned); "
                             "registers can be changed only while the callback runs")


def _field(off: int) -> property:
    unpack_from, pack_into = _q.unpack_from, _q.pack_into

    def get(self: PtRegs) -> int:
        return unpack_from(self._mem, self._base + off)[0]

    def put(self: PtRegs, value: int) -> None:
        pack_into(self._mem, self._base + off, value & _MASK)
        if self._write_through is not None:
            self._write_through(self.address + off, _q.pack(value & _MASK))
    return property(get, put)


for _name, _off in PT_REGS_OFFSET.items():
    setattr(PtRegs, _name, _field(_off))

# What ftrace_caller saves (arch/x86/kernel/ftrace_64.S save_mcount_regs, ftrace_caller).
FTRACE_REGS_FIELDS = ("bp", "r9", "r8", "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "sp")


def _unsaved(name: str) -> property:
    def refuse(self: PtRegs, value: int | None = None) -> int:
        raise AttributeError(f"ftrace_regs.{name}: not saved without FTRACE_OPS_FL_SAVE_REGS "
                             "(ftrace_caller keeps the arguments, rax, rbp, ip and sp)")
    return property(refuse, refuse)


class FtraceRegs(PtRegs):
    """struct ftrace_regs: the pt_regs-shaped frame of ftrace_caller (cs = 0: not a full
    pt_regs); its saved fields as PtRegs has them, ``ip`` writable (the call goes there)."""

    __slots__ = ()
    _fields = FTRACE_REGS_FIELDS


for _name in PT_REGS_FIELDS:
    if _name not in FTRACE_REGS_FIELDS:
        setattr(FtraceRegs, _name, _unsaved(_name))


class _DetachedFtraceRegs(FtraceRegs, _DetachedPtRegs):
    __slots__ = ()


_FULL = (PtRegs, _DetachedPtRegs)
_DETACHED = {PtRegs: _DetachedPtRegs, FtraceRegs: _DetachedFtraceRegs}
