"""Module parameters: the kernel's kernel/params.c for the types modules declare.

``module_param(name, type, perm)`` (guest/include/linux/moduleparam.h) leaves a
``struct kernel_param`` {name, arg, type, perm} in the module's ``__param`` section; the
loader sets each from ``insmod``'s ``name=value`` arguments with the kernel's parsing, and
``/sys/module/<m>/parameters/<name>`` reads and writes it the same way.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .machine import Machine
    from .module import Module

PARAM_SIZE = 0x20          # struct kernel_param: name, arg, type (char *), perm (u16)
# type -> (struct format, signed)
_INTS = {"int": ("<i", True), "uint": ("<I", False), "long": ("<q", True), "ulong": ("<Q", False),
         "short": ("<h", True), "ushort": ("<H", False), "byte": ("<B", False),
         "hexint": ("<I", False)}
_BOOLS = ("bool", "invbool")
CHARP_MAX = 1024


@dataclass
class KernelParam:
    """One parameter of a loaded module."""
    name: str
    arg: int           # guest address of the variable
    type: str
    perm: int


def _cstr(m: "Machine", addr: int, limit: int = 256) -> str:
    raw = m.read(addr, limit)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _parse_bool(value: str | None) -> bool:
    """param_set_bool: no value means true; y/Y/1 and n/N/0 (strtobool's first letter)."""
    if value is None or value == "":
        return True
    c = value[0]
    if c in "yY1":
        return True
    if c in "nN0":
        return False
    if value.lower() in ("on", "off"):
        return value.lower() == "on"
    raise ValueError(value)


ARRAY = "array of "          # module_param_array's type: arg points at a struct kparam_array


def _array(m: "Machine", p: KernelParam) -> tuple[int, int, int, int, str]:
    """struct kparam_array {max, elemsize, num *, elem *} and the element type."""
    max_, elemsize, num, elem = struct.unpack("<IIQQ", m.read(p.arg, 24))
    return max_, elemsize, num, elem, p.type[len(ARRAY):]


def param_array_set(m: "Machine", mod: "Module", p: KernelParam, value: str | None) -> None:
    """param_array_set: comma-separated elements in order, then ``*num``; more than the array
    holds is EINVAL with the kernel's message."""
    max_, elemsize, num, elem, etype = _array(m, p)
    parts = (value or "").split(",")
    if len(parts) > max_:
        m.printk(f"{p.name}: can only take {max_} arguments", level=3)
        raise OSError(errno.EINVAL, f"{mod.name}: `{value}' invalid for parameter `{p.name}'")
    for i, part in enumerate(parts):
        param_set(m, mod, KernelParam(f"{p.name}[{i}]", elem + i * elemsize, etype, p.perm), part)
    if num:
        m.write(num, struct.pack("<I", len(parts)))


def param_set(m: "Machine", mod: "Module", p: KernelParam, value: str | None) -> None:
    """Set one parameter as the kernel's param_set_<type> does; EINVAL for a bad value."""
    if p.type.startswith(ARRAY):
        return param_array_set(m, mod, p, value)
    try:
        if p.type in _BOOLS:
            v = _parse_bool(value) != (p.type == "invbool")
            m.write(p.arg, struct.pack("<B", v))
        elif p.type in _INTS:
            if value is None:
                raise ValueError(value)
            fmt, signed = _INTS[p.type]
            n = int(value.strip(), 16 if p.type == "hexint" else 0)
            struct.pack(fmt, n)        # range check, as kstrto* does
            m.write(p.arg, struct.pack(fmt, n))
        elif p.type == "charp":
            text = (value or "").encode()[:CHARP_MAX - 1] + b"\0"
            buf = mod.charp_buffers.get(p.name)
            if buf is None:
                buf = mod.charp_buffers[p.name] = m.modules.area.alloc(CHARP_MAX)
            m.write(buf, text)
            m.write(p.arg, struct.pack("<Q", buf))
        else:
            raise OSError(errno.EINVAL, f"{mod.name}: parameter {p.name} has unknown type {p.type}")
    except (ValueError, struct.error):
        raise OSError(errno.EINVAL, f"{mod.name}: `{value}' invalid for parameter `{p.name}'") from None


def param_get(m: "Machine", p: KernelParam) -> str:
    """param_get_<type>: the text /sys/module/<m>/parameters/<name> shows (with a newline)."""
    if p.type.startswith(ARRAY):
        max_, elemsize, num, elem, etype = _array(m, p)
        n = struct.unpack("<I", m.read(num, 4))[0] if num else max_
        return ",".join(param_get(m, KernelParam(p.name, elem + i * elemsize, etype, p.perm))
                        .rstrip("\n") for i in range(min(n, max_))) + "\n"
    if p.type in _BOOLS:
        v = m.read(p.arg, 1)[0] != 0
        return ("Y" if v != (p.type == "invbool") else "N") + "\n"
    if p.type in _INTS:
        fmt, _ = _INTS[p.type]
        n = struct.unpack(fmt, m.read(p.arg, struct.calcsize(fmt)))[0]
        return (f"{n:#x}" if p.type == "hexint" else str(n)) + "\n"
    ptr = m.read_u64(p.arg)
    return (_cstr(m, ptr, CHARP_MAX) if ptr else "(null)") + "\n"


def read_params(m: "Machine", mod: "Module", args: list[tuple[str, str | None]]) -> None:
    """Find the module's parameters and apply ``insmod``'s arguments to them, in order.
    Unknown names are reported and ignored, as the kernel does; a bad value fails the load."""
    from .module import ModuleError
    base = mod.sections.get("__param")
    if base is not None:
        size = next(s for n, s in mod.section_sizes.items() if n == "__param")
        for off in range(0, size, PARAM_SIZE):
            name_p, arg, type_p, perm = struct.unpack("<QQQH", m.read(base + off, 26))
            mod.params.append(KernelParam(_cstr(m, name_p), arg, _cstr(m, type_p), perm))
    known = {p.name: p for p in mod.params}
    for key, value in args:
        p = known.get(key.replace("-", "_"))
        if p is None:
            m.printk(f"{mod.name}: unknown parameter '{key}' ignored")
            continue
        try:
            param_set(m, mod, p, value)
        except OSError as e:
            m.printk(str(e).split("] ", 1)[-1])
            raise ModuleError(e.errno, f"could not insert '{mod.name}': Invalid argument") from None
