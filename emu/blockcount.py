"""Exact instruction counts and precise stops from a native block hook (emu/native/blockcount.c).

Built from source with gcc on first use and cached like the guest kernel (by the hash of the
source and of the compiler); never downloaded. Where it cannot be built, or with
``FTEMU_NATIVE=0`` in the environment, ``available()`` is False and the vCPUs fall back to
Unicorn's ``count=`` (a per-instruction hook: exact, about half the speed).

Counting rules (the C file says how the counts are kept):
- a block is counted whole when it starts; a block that does not run to its end (a fault or
  an exception in the middle, a hook that raised) is corrected with ``settle(rip)``, which
  decodes the block up to ``rip`` with capstone;
- every code change the host makes (``Machine.invalidate_code``, a TB flush) must call
  ``invalidate()``: cached counts of kernel blocks are then all dropped; user-space blocks
  are never cached;
- a stop asked for by a hook or by another thread (``request_stop``) takes effect at the next
  block start, so the instructions after an ``out`` in the same block still run (and count).

It also answers the guest's ``rdtsc`` in C (``hook_rdtsc``): the vCPU's virtual time from the
block count and the rdtsc's position in its block, which the host decodes once per (block,
rip) and hands down (``retired`` does). The vCPU says how to read its clock before every run
(``set_clock``); where C has no answer (a user-space block, a position not yet decoded) it
asks the vCPU's ``now()``, which gives the same value.

Guest code that reads the clock often (the tracers' ``local`` clock) need not rdtsc at all
(Unicorn's rdtsc helper re-derives the guest state from the host PC first, ~50 ns): the hook
also stores, at every block start, the instructions retired before that block into the
vCPU's per-CPU ``PCPU_PVCLOCK`` word (``set_pvclock``); with the slice's start, which the vCPU
keeps beside it, and the reading instruction's position in its block (known to whoever
generated that code), that is the TSC without leaving the translated code (the idea of
kvm-clock's per-vCPU time page).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INSN, Uc, UcError
from unicorn.x86_const import UC_X86_INS_RDTSC
from unicorn.unicorn_py3.unicorn import uclib

from .errors import BuildError
from .kbuild import ENV_SWITCH, build_native

SOURCE = Path(__file__).with_name("native") / "blockcount.c"
KERNEL_HALF = 1 << 63
NO_BUDGET = (1 << 64) - 1

_ul = ctypes.CDLL(uclib._name)
_ul.uc_hook_add.restype = ctypes.c_int


class _VcpuCount(ctypes.Structure):
    """The head of ``struct vcpu_count`` (the slot table follows, private to C)."""
    _fields_ = [("ran", ctypes.c_uint64), ("budget", ctypes.c_uint64),
                ("stop", ctypes.c_uint32), ("stopped", ctypes.c_uint32),
                ("block_pc", ctypes.c_uint64), ("block_size", ctypes.c_uint32),
                ("block_icount", ctypes.c_uint32), ("pvclock", ctypes.c_void_p),
                ("generation", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("misses", ctypes.c_uint64), ("unknown", ctypes.c_uint64),
                ("uc", ctypes.c_void_p), ("ctl", ctypes.c_void_p),
                ("emu_stop", ctypes.c_void_p),
                ("tsc_mode", ctypes.c_uint32), ("ns_per_insn", ctypes.c_uint32),
                ("tsc_base", ctypes.c_uint64), ("host_start", ctypes.c_uint64),
                ("env", ctypes.c_void_p), ("counter", ctypes.c_void_p), ("miss", ctypes.c_void_p),
                ("tsc_native", ctypes.c_uint64), ("tsc_host", ctypes.c_uint64),
                ("pvclock_sink", ctypes.c_uint64)]


# How the C rdtsc hook reads the clock (enum in blockcount.c).
TSC_PYTHON, TSC_BLOCKS, TSC_COUNTER, TSC_HOST = range(4)
TSC_MISS = ctypes.CFUNCTYPE(ctypes.c_uint64)


_lib: ctypes.CDLL | None = None
_why_not: str | None = None


def available() -> bool:
    """True if the native block counter is built and loaded (building it on first call)."""
    global _lib, _why_not
    if _lib is not None:
        return True
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if _why_not is None:
        try:
            lib = ctypes.CDLL(str(build_native(SOURCE, "native block counter")))
            lib.ftemu_count_size.restype = ctypes.c_uint64
            lib.ftemu_count_invalidate.argtypes = [ctypes.c_void_p]
            lib.ftemu_count_request_stop.argtypes = [ctypes.c_void_p]
            lib.ftemu_tsc_learn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                                            ctypes.c_uint32]
            _lib = lib
        except (BuildError, OSError) as e:
            _why_not = str(e)
    return _lib is not None


def why_unavailable() -> str | None:
    """Why ``available()`` is False (None if it is True or was switched off)."""
    return _why_not


class BlockCounter:
    """The native counter of one vCPU: ``begin(budget)`` before an emu_start, ``ran`` after it.
    With ``count=False`` it installs no block hook and only answers rdtsc (``hook_rdtsc``)."""

    def __init__(self, uc: Uc, read_code, count: bool = True) -> None:
        assert _lib is not None, "call available() first"
        self._buf = ctypes.create_string_buffer(_lib.ftemu_count_size())
        self.addr = ctypes.addressof(self._buf)
        v = self.v = _VcpuCount.from_buffer(self._buf)
        v.uc = ctypes.cast(uc._uch, ctypes.c_void_p).value
        v.ctl = ctypes.cast(_ul.uc_ctl, ctypes.c_void_p).value
        v.emu_stop = ctypes.cast(_ul.uc_emu_stop, ctypes.c_void_p).value
        v.generation = 1
        v.pvclock = self.addr + _VcpuCount.pvclock_sink.offset
        self._read_code = read_code          # read_code(va, n) -> bytes, at the vCPU's CR3
        self._offsets: dict[tuple[int, int], int] = {}
        if count:                            # else only rdtsc (free-running: nothing counts)
            _hook(uc, UC_HOOK_BLOCK, _lib.ftemu_count_block, self.addr, 1, 0)
        # Never let a Python code hook be the only one (see ftemu_no_code in the C file).
        _hook(uc, UC_HOOK_CODE, _lib.ftemu_no_code, 0, 0, 0)

    def hook_rdtsc(self, uc: Uc, env: int, ns_per_insn: int, miss) -> object:
        """Answer the guest's rdtsc in C. ``env`` is the address of the engine's CPU state
        (its registers), ``miss()`` the vCPU's own clock for reads C cannot answer. Returns
        the ctypes callback, which the caller must keep alive."""
        v = self.v
        v.env, v.ns_per_insn, v.tsc_mode = env, ns_per_insn, TSC_PYTHON
        cb = TSC_MISS(miss)
        v.miss = ctypes.cast(cb, ctypes.c_void_p).value
        _hook(uc, UC_HOOK_INSN, _lib.ftemu_rdtsc, self.addr, 1, 0, UC_X86_INS_RDTSC)
        return cb

    def set_clock(self, mode: int, base_ns: int, host_start: int = 0, counter: int = 0) -> None:
        """How rdtsc reads the clock in the coming run: ``TSC_BLOCKS``, ``base_ns`` plus this
        counter's instructions; ``TSC_COUNTER``, plus count='s (at address ``counter``);
        ``TSC_HOST``, plus host ns since ``host_start``; ``TSC_PYTHON``: ask ``miss()``."""
        v = self.v
        v.tsc_mode, v.tsc_base, v.host_start, v.counter = mode, base_ns, host_start, counter

    def set_pvclock(self, address: int) -> None:
        """Keep the guest-visible word at host ``address`` (the vCPU's PCPU_PVCLOCK) equal to
        the instructions this run retired before the block now running: at every block start."""
        self.v.pvclock = address
        self._sync_pvclock()

    def _sync_pvclock(self) -> None:
        v = self.v
        ctypes.c_uint64.from_address(v.pvclock).value = v.ran - v.block_icount

    def begin(self, budget: int) -> None:
        """A new run: count from 0, stop before a block that would pass ``budget`` (0: never)."""
        v = self.v
        v.ran, v.budget, v.stop, v.stopped, v.block_icount = 0, budget or NO_BUDGET, 0, 0, 0

    def request_stop(self) -> None:
        """Stop at the next block start (safe from hooks and from other threads)."""
        _lib.ftemu_count_request_stop(self.addr)

    def invalidate(self) -> None:
        """Code changed: forget every cached block count."""
        _lib.ftemu_count_invalidate(self.addr)
        self._offsets.clear()

    def _inside(self, rip: int) -> bool:
        v = self.v
        return v.block_icount != 0 and v.block_pc <= rip < v.block_pc + v.block_size

    def _offset(self, rip: int) -> int:
        """Instructions of the current block before ``rip`` (decoded once, then cached, for
        kernel blocks only: the guest reuses user addresses for other programs)."""
        pc = self.v.block_pc
        key = (pc, rip)
        n = self._offsets.get(key)
        if n is None:
            code = self._read_code(pc, rip - pc)
            n, end = 0, pc
            for _addr, size, _m, _o in _CS.disasm_lite(code, pc):
                n, end = n + 1, end + size
            if end != rip:
                raise RuntimeError(f"0x{rip:x} is not an instruction boundary of the block at 0x{pc:x}")
            if pc < KERNEL_HALF:
                return n
            self._offsets[key] = n
        _lib.ftemu_tsc_learn(self.addr, pc, rip, n)      # C may have evicted it: tell again
        return n

    def retired(self, rip: int) -> int:
        """Instructions retired in this run before the instruction at ``rip`` (which is being
        executed, e.g. from an instruction hook)."""
        v = self.v
        if not self._inside(rip):
            return v.ran
        return v.ran - v.block_icount + self._offset(rip)

    def settle(self, rip: int) -> None:
        """The current block stopped before ``rip`` (a fault there, or an exception): count only
        what ran. ``rip`` at the block start means none of it ran."""
        if self._inside(rip):
            v = self.v
            v.ran = v.ran - v.block_icount + self._offset(rip)
            v.block_icount = 0

    def save(self) -> tuple:
        v = self.v
        return v.ran, v.budget, v.stop, v.stopped, v.block_pc, v.block_size, v.block_icount

    def restore(self, saved: tuple) -> None:
        v = self.v
        (v.ran, v.budget, v.stop, v.stopped, v.block_pc, v.block_size, v.block_icount) = saved
        self._sync_pvclock()           # the nested run wrote its own


def empty_block_hook(uc: Uc) -> None:
    """A native block hook that does nothing (the benchmarks' floor for any block hook)."""
    assert _lib is not None, "call available() first"
    _hook(uc, UC_HOOK_BLOCK, _lib.ftemu_no_code, 0, 1, 0)


def _hook(uc: Uc, kind: int, cfunc, user: int, begin: int, end: int, *insn: int) -> None:
    """uc_hook_add with a native callback (``insn``: the instruction of a UC_HOOK_INSN)."""
    handle = ctypes.c_size_t()
    err = _ul.uc_hook_add(uc._uch, ctypes.byref(handle), ctypes.c_int(kind),
                          ctypes.cast(cfunc, ctypes.c_void_p), ctypes.c_void_p(user),
                          ctypes.c_uint64(begin), ctypes.c_uint64(end),
                          *(ctypes.c_int(i) for i in insn))
    if err:
        raise UcError(err)


_CS = Cs(CS_ARCH_X86, CS_MODE_64)
