"""struct klp_patch / klp_object / klp_func / klp_state as the host sees them.

A patch module defines these in its own memory (guest/include/linux/livepatch.h); the host
reads them when ``klp_enable_patch`` asks and keeps them as Python objects, writing back the
fields the guest reads (``old_func``, ``transition``, ``patched``, ``obj->mod`` ...). The
offsets are guest/memlayout.h's KLP_* values.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu import memlayout as L
from emu.module import Module

if TYPE_CHECKING:
    from emu import Machine

_q = struct.Struct("<Q")


def read_cstr(m: "Machine", addr: int, limit: int = 128) -> str:
    raw = m.read(addr, limit)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(eq=False)
class KlpFunc:
    """One function replaced by a patch (``nop`` ones come from atomic replace)."""
    addr: int
    old_name: str
    new_func: int
    old_sympos: int
    obj: "KlpObject"
    old_func: int = 0
    old_size: int = 0
    new_size: int = 0
    nop: bool = False
    patched: bool = False
    transition: bool = False

    def write(self, m: "Machine") -> None:
        """Publish the internal fields the guest's klp_ftrace_handler reads."""
        m.write(self.addr + L.KLP_FUNC_OLD_FUNC, _q.pack(self.old_func))
        m.write(self.addr + L.KLP_FUNC_NEW_FUNC, _q.pack(self.new_func))
        m.write(self.addr + L.KLP_FUNC_OLD_SIZE, struct.pack("<QQ", self.old_size, self.new_size))
        m.write(self.addr + L.KLP_FUNC_NOP, bytes([self.nop, self.patched, self.transition]))

    def set_transition(self, m: "Machine", value: bool) -> None:
        self.transition = value
        m.write(self.addr + L.KLP_FUNC_TRANSITION, bytes([value]))

    def set_stack_next(self, m: "Machine", nxt: "KlpFunc | None") -> None:
        m.write(self.addr + L.KLP_FUNC_STACK_NEXT, _q.pack(nxt.addr if nxt else 0))


@dataclass(eq=False)
class KlpObject:
    """vmlinux (``name`` None) or a module the patch changes."""
    addr: int
    name: str | None
    callbacks: tuple[int, int, int, int]      # pre_patch, post_patch, pre_unpatch, post_unpatch
    funcs: list[KlpFunc] = field(default_factory=list)
    mod: Module | None = None
    dynamic: bool = False
    patched: bool = False
    post_unpatch_enabled: bool = False

    @property
    def display_name(self) -> str:
        return self.name or "vmlinux"

    def write_mod(self, m: "Machine") -> None:
        m.write(self.addr + L.KLP_OBJ_MOD, _q.pack(self.mod.this_module if self.mod else 0))


@dataclass(eq=False)
class KlpState:
    addr: int
    id: int
    version: int


@dataclass(eq=False)
class KlpPatch:
    """A registered patch: its module, objects, states and flags."""
    addr: int
    mod: Module
    objs: list[KlpObject]
    states: list[KlpState]
    replace: bool
    enabled: bool = False
    forced: bool = False

    @property
    def name(self) -> str:
        return self.mod.name

    def funcs(self) -> list[KlpFunc]:
        return [f for o in self.objs for f in o.funcs]

    def write_flags(self, m: "Machine") -> None:
        m.write(self.addr + L.KLP_PATCH_ENABLED, bytes([self.enabled, self.forced]))


def read_patch(m: "Machine", addr: int, mod: Module) -> KlpPatch:
    """Read a patch from guest memory: the object array ends with an entry that has neither
    funcs nor name, each func array with an entry that has no old_name/new_func/sympos, the
    states with id 0 (klp_for_each_*_static). ValueError for a structure klp refuses."""
    objs_p, states_p = (_q.unpack(m.read(addr + off, 8))[0] for off in (L.KLP_PATCH_OBJS, L.KLP_PATCH_STATES))
    replace = m.read(addr + L.KLP_PATCH_REPLACE, 1)[0] != 0
    if not objs_p:
        raise ValueError("patch has no objects")
    objs = []
    for i in range(256):
        o = objs_p + i * L.KLP_OBJ_SIZE
        raw = m.read(o, L.KLP_OBJ_SIZE)
        name_p, funcs_p = struct.unpack_from("<QQ", raw, 0)
        if not name_p and not funcs_p:
            break
        if not funcs_p:
            raise ValueError("object without funcs")
        cbs = struct.unpack_from("<4Q", raw, L.KLP_OBJ_CALLBACKS)
        obj = KlpObject(o, read_cstr(m, name_p) if name_p else None, cbs)
        for j in range(1024):
            f = funcs_p + j * L.KLP_FUNC_SIZE
            old_name_p, new_func, sympos = struct.unpack("<QQQ", m.read(f, 24))
            if not old_name_p and not new_func and not sympos:
                break
            if not old_name_p or not new_func:
                raise ValueError("func without old_name or new_func")
            obj.funcs.append(KlpFunc(f, read_cstr(m, old_name_p), new_func, sympos, obj))
        objs.append(obj)
    states = []
    if states_p:
        for i in range(256):
            s = states_p + i * L.KLP_STATE_SIZE
            sid, version = struct.unpack("<QI", m.read(s, 12))
            if not sid:
                break
            states.append(KlpState(s, sid, version))
    return KlpPatch(addr, mod, objs, states, replace)
