"""How an ``out`` reaches its port handler (every hypercall: ftrace's Python callbacks, printk,
the call-return and power-off ports): a native hook (emu/native/hypercall.c) that calls
``handler(cpu, port, value)`` straight from C.

A ctypes callback costs more than the rest of a hypercall (the thunk converts five arguments
and builds a tuple, then a Python frame checks the CPL and looks the port up): the native
hook does both in C, and hands ring 3's ``out`` (IOPL and the TSS I/O bitmap) to the vCPU's
checked path. It is built with gcc against this Python's headers on first use and cached
like the block counter; without gcc or the headers, or with ``FTEMU_NATIVE=0``, the vCPU's
checked path is itself the hook, as a raw ctypes callback (about 0.3 us more per hypercall).
"""
from __future__ import annotations

import ctypes
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_INS_OUT

from . import ucx
from .errors import BuildError
from .kbuild import NativeLib, build_native

if TYPE_CHECKING:
    from .cpu import VCpu

SOURCE = Path(__file__).with_name("native") / "hypercall.c"


class _OutHook(ctypes.Structure):
    """``struct out_hook``: the objects the C hook calls (kept alive by this structure)."""
    _fields_ = [("hflags", ctypes.c_void_p), ("ports", ctypes.py_object), ("cpu", ctypes.py_object),
                ("checked", ctypes.py_object), ("on_error", ctypes.py_object)]


def _load() -> ctypes.CDLL:
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        raise BuildError(f"no Python.h in {include} to build the native out hook")
    # The extension suffix (the ABI) joins the flags: another Python never loads this build.
    abi = sysconfig.get_config_var("EXT_SUFFIX") or sys.implementation.cache_tag
    so = build_native(SOURCE, "native out hook", (f"-I{include}", f"-DFTEMU_PY_ABI=\"{abi}\""))
    return ctypes.PyDLL(str(so))


_native = NativeLib(_load)


def available() -> bool:
    """True if vCPUs made now get the native out hook (building it on first call)."""
    return _native.load() is not None


def why_unavailable() -> str | None:
    """Why ``available()`` is False (None if it is True or was switched off)."""
    return _native.why_not


def add_out_hook(cpu: "VCpu") -> object:
    """Route every ``out`` of ``cpu`` to the machine's port handlers: natively if possible,
    else through ``cpu._on_out`` as a raw ctypes callback. Returns what must stay alive."""
    if not available():
        return ucx.add_insn_hook(cpu.uc, ucx.OUT_CB(cpu._on_out), UC_X86_INS_OUT)
    # port_out is the machine's one table (changed in place, never replaced).
    hook = _OutHook(ctypes.addressof(cpu.hflags), cpu.machine.port_out, cpu, cpu._on_out,
                    cpu._hook_failed)
    ucx.add_insn_hook(cpu.uc, ctypes.cast(_native.lib.ftemu_out_hook, ctypes.c_void_p), UC_X86_INS_OUT,
                      ctypes.addressof(hook))
    return hook
