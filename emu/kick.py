"""Ending a Unicorn run at the next translation block start, from any thread, without a hook.

The free-running mode needs to end slices on the host clock, and any per-block hook costs
~15% of the guest's speed on small blocks. Unicorn 2.1.4's ``uc_emu_stop`` cannot be used
from another thread: it sets ``stop_request``, which makes every hook that runs before the
run really ends return early (an ``out`` hypercall, a ``syscall``, an rdtsc would be
skipped), and its ``cpu_exit`` is also seen by the check Unicorn emits after every guest
load and store, which leaves with RIP restored to the start of the instruction that has
already stored (a ``sub`` on memory, an ``xchg`` would run twice).

A kick does what ``uc_emu_stop`` does minus ``stop_request``: ``cpu_exit``'s stores (as
observed on a probe engine, below), after setting the engine's ``invalid_error`` to
``KICKED`` (while code runs only a bad physical access reads it, and all our RAM is
mapped): the execution loop sees it when the CPU
leaves, and ``uc_emu_start`` returns it (``run()`` turns it into True). ``uc_emu_start``
clears it first, so a kick that lands before a run has started up is lost: whoever kicks
on a timer must repeat it until the run is over (emu/ticker.py does).

Code translated with the engine's ``no_exit_request`` set (``checks(False)``) has no exit
check but the one at each block start, so a kick takes effect there and only there: exact,
nothing replayed, no hook skipped. ``uc_emu_stop`` from a hook and
``count=`` need the other checks (they stop right after a hook): turn them back on, and
flush the translations, before using either.

The engine's private fields are located once per process from its layout (Unicorn 2.1.4,
pinned) relative to the instruction counter ``ucx`` calibrates, and each is then checked by
its behaviour on a probe engine; if anything does not behave, ``available()`` is False.
"""
from __future__ import annotations

import ctypes
import os
import struct

from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_64, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RBX

from . import ucx
from .kbuild import ENV_SWITCH

# uc_struct (include/uc_priv.h of 2.1.4) relative to emu_count: size_recur_mem, five bools
# (stop_request the second), the timer thread, timeout, invalid_addr, invalid_error;
# no_exit_request after exits[64] and the fields that follow them.
STOP_REQUEST_FROM_COUNT = 13
INVALID_ERROR_FROM_COUNT = 48
NO_EXIT_REQUEST_FROM_COUNT = 658
KICKED = 0x6B69636B                 # uc_emu_start's return for a kicked run (no uc_err has it)

_uc = ctypes.CDLL(uclib._name)         # our own handle: the binding's prototypes stay
_uc.uc_emu_start.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                             ctypes.c_size_t]


class _Layout:
    checked: bool = False
    why_not: str | None = None
    cpu_ptr: int = -1                  # uc_struct offset of `CPUState *cpu`
    cpu_exit: list = []                # (offset from the CPUState, value) stores of cpu_exit


LAYOUT = _Layout()


def available() -> bool:
    """True if kicks work on this Unicorn build (found and checked once per process), unless
    ``FTEMU_NATIVE=0`` asks for the count= fallback everywhere."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if not LAYOUT.checked:
        LAYOUT.checked = True
        try:
            _calibrate()
        except RuntimeError as e:
            LAYOUT.why_not = str(e)
    return LAYOUT.why_not is None


def why_unavailable() -> str | None:
    return LAYOUT.why_not if LAYOUT.checked else None


class Kicker:
    """Kicks for one engine: ``run()`` instead of emu_start, ``kick()`` from any thread,
    ``checks(on)`` for what is translated next."""

    def __init__(self, uc: Uc) -> None:
        assert available(), "call kick.available() first"
        base = ctypes.cast(uc._uch, ctypes.c_void_p).value
        count = ucx.calibrate().count_offset
        self._uch = uc._uch
        self._error = ctypes.c_int.from_address(base + count + INVALID_ERROR_FROM_COUNT)
        self._no_checks = ctypes.c_bool.from_address(base + count + NO_EXIT_REQUEST_FROM_COUNT)
        uc.context_save()                      # the engine creates its CPU on first use
        cpu = ctypes.c_uint64.from_address(base + LAYOUT.cpu_ptr).value
        self._stores = [(ctypes.c_uint8.from_address(cpu + off), v) for off, v in LAYOUT.cpu_exit]
        self.checked = True                    # Unicorn's default

    def run(self, begin: int, until: int) -> bool:
        """emu_start(begin, until) with no count; True if a kick ended it (False: it ended
        by itself, at a hlt or ``until``). Other engine errors raise UcError."""
        err = _uc.uc_emu_start(self._uch, begin, until, 0, 0)
        if err == KICKED:
            return True
        if err:
            raise UcError(err)
        return False

    def kick(self) -> None:
        """End the current run (the innermost, if runs are nested) at its next block start.
        Safe from any thread and from hooks; a kick after the run ended is forgotten by the
        next one."""
        self._error.value = KICKED
        for cell, value in self._stores:       # cpu_exit's own order: exit_request first
            cell.value = value

    def checks(self, on: bool) -> None:
        """Translate code from now on with (True: Unicorn's default) or without exit checks
        after loads, stores and code hooks. Cached translations keep what they were made with."""
        self._no_checks.value = not on
        self.checked = on


def _calibrate() -> None:
    count = ucx.calibrate().count_offset
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000)
    env = ctypes.addressof(ucx.hflags_cell(uc)) - (ucx.CTX_HFLAGS - ucx.CTX_HDR)
    base = ctypes.cast(uc._uch, ctypes.c_void_p).value
    LAYOUT.cpu_ptr, cpu = _cpu_pointer(base, env)
    _observe_cpu_exit(uc, base, cpu, env - cpu, count)
    error = ctypes.c_int.from_address(base + count + INVALID_ERROR_FROM_COUNT)
    no_checks = ctypes.c_bool.from_address(base + count + NO_EXIT_REQUEST_FROM_COUNT)
    if error.value != 0 or no_checks.value:
        raise RuntimeError("Unicorn's invalid_error / no_exit_request are not where 2.1.4 has them")
    k = Kicker(uc)
    # no_exit_request: a kick from a code hook in the middle of a block that adds to memory
    # ends the run at the next block start, every add done once (with checks: right away).
    code = b"\x48\x83\x03\x01" * 6 + b"\xeb\x00" + b"\x48\xff\xc0" * 4 + b"\xf4"
    uc.mem_write(0x2000, code)                   # 6 x add qword [rbx], 1; jmp +0; 4 x inc rax
    hook = uc.hook_add(UC_HOOK_CODE, lambda u, a, s, d: k.kick(), None, 0x2008, 0x2008)
    for on, adds in ((True, 2), (False, 6)):
        k.checks(on)
        uc.ctl_flush_tb()
        uc.mem_write(0x3000, bytes(8))
        uc.reg_write(UC_X86_REG_RBX, 0x3000)
        uc.reg_write(UC_X86_REG_RAX, 0)
        kicked = k.run(0x2000, 0)
        got = struct.unpack("<Q", uc.mem_read(0x3000, 8))[0]
        rip_ok = uc.reg_read(UC_X86_REG_RAX) == 0
        if not kicked or got != adds or not rip_ok or error.value != 0:
            raise RuntimeError(f"kicks with checks={on}: {got} adds (expected {adds})")
    uc.hook_del(hook)


def _cpu_pointer(base: int, env: int) -> tuple[int, int]:
    """uc_struct's `cpu`: the pointer to a CPUState whose env_ptr leads to this engine's env."""
    for i, p in enumerate(struct.unpack("<512Q", ctypes.string_at(base, 4096))):
        if env - 0x100000 < p < env and ucx.readable(p, env - p):
            head = struct.unpack(f"<{min(env - p, 4096) // 8}Q", ctypes.string_at(p, min(env - p, 4096) // 8 * 8))
            if env in head:
                return 8 * i, p
    raise RuntimeError("cannot locate Unicorn's CPUState")


def _observe_cpu_exit(uc: Uc, base: int, cpu: int, size: int, count: int) -> None:
    """What uc_emu_stop stores into the CPU (cpu_exit), seen from a code hook: the byte
    values a kick stores. Expected: exit_request = 1 and icount_decr.u16.high = -1."""
    seen = {}

    def hook(u, _a, _s, _d) -> None:
        before = ctypes.string_at(cpu, size)
        u.emu_stop()
        after = ctypes.string_at(cpu, size)
        seen["diff"] = [(i, after[i]) for i in range(size) if before[i] != after[i]]
        seen["stop"] = ctypes.c_uint8.from_address(base + count + STOP_REQUEST_FROM_COUNT).value
    uc.mem_write(0x1000, b"\x48\xff\xc0" * 3 + b"\xf4")
    h = uc.hook_add(UC_HOOK_CODE, hook, None, 0x1003, 0x1003)
    uc.emu_start(0x1000, 0)
    uc.hook_del(h)
    diff = seen.get("diff", [])
    ones = [i for i, v in diff if v == 1]
    high = [i for i, v in diff if v == 0xFF]
    if seen.get("stop") != 1 or not 1 <= len(ones) <= 2 or len(high) != 2 or high[1] != high[0] + 1 \
            or len(diff) != len(ones) + 2 or max(ones) > high[0]:
        raise RuntimeError(f"cpu_exit does not look like 2.1.4's (stores {diff})")
    LAYOUT.cpu_exit = sorted(diff)
