"""What the Unicorn binding does not give us: raw register access, the CPU state blob,
and the instruction counter.

Offsets inside Unicorn's saved context (a copy of QEMU's CPUX86State) and inside the engine
struct are calibrated at start-up against known behaviour, never trusted blindly.
"""
from __future__ import annotations

import ctypes
import struct

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INTR, UC_MODE_64, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_INS_RDTSC

# A second handle on the library, so our prototypes never disturb the binding's.
_lib = ctypes.CDLL(uclib._name)
_lib.uc_reg_read.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_lib.uc_reg_write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_lib.uc_hook_add.restype = ctypes.c_int
_lib.uc_hook_del.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
RDTSC_CB = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)
OUT_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32,
                          ctypes.c_void_p)

CTX_HDR = 40                       # struct uc_context header before the CPUX86State copy
CTX_REGS = CTX_HDR                 # regs[16]: rax rcx rdx rbx rsp rbp rsi rdi r8..r15
CTX_RIP = CTX_HDR + 128
CTX_EFLAGS = CTX_HDR + 136         # system bits only; arithmetic flags live in cc_*
CTX_CC_SRC = CTX_HDR + 152         # the arithmetic flags, lazily: see CTX_CC_OP
CTX_CC_OP = CTX_HDR + 168          # u32; CC_OP_EFLAGS: CTX_CC_SRC holds them as they are
CC_OP_EFLAGS = 1
CTX_HFLAGS = CTX_HDR + 176
CTX_DF = CTX_HDR + 172             # int32: 1 or -1 (RFLAGS.DF)
CTX_SEGS = CTX_HDR + 184           # SegmentCache[6] {u32 sel; u64 base; u32 limit; u32 flags}
CTX_TR_BASE = CTX_HDR + 352 + 8    # then ldt, tr, gdt, idt SegmentCaches
CTX_GDT_BASE = CTX_HDR + 376 + 8
CTX_IDT_BASE = CTX_HDR + 400 + 8
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)
REG_INDEX = {"rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7,
             **{f"r{i}": i for i in range(8, 16)}}
DESC_DPL_SHIFT = 13
HF_CPL_MASK = 3


def seg_offset(seg: int) -> int:
    return CTX_SEGS + 24 * seg


class _Msr(ctypes.Structure):
    """``uc_x86_msr``: the register's number and its value."""
    _fields_ = [("rid", ctypes.c_uint32), ("value", ctypes.c_uint64)]


_UC_X86_REG_MSR = 248


class RawRegs:
    """Register access through raw ctypes calls: about three times cheaper than the binding
    (for MSRs about eight: the binding builds a register class per access)."""

    __slots__ = ("_uch", "_v", "_msr")

    def __init__(self, uc: Uc) -> None:
        self._uch = uc._uch
        self._v = ctypes.c_uint64()
        self._msr = _Msr()

    def read(self, reg: int) -> int:
        _lib.uc_reg_read(self._uch, reg, ctypes.byref(self._v))
        return self._v.value

    def write(self, reg: int, value: int) -> None:
        self._v.value = value & 0xFFFFFFFFFFFFFFFF
        _lib.uc_reg_write(self._uch, reg, ctypes.byref(self._v))

    def msr_read(self, msr: int) -> int:
        self._msr.rid = msr
        _lib.uc_reg_read(self._uch, _UC_X86_REG_MSR, ctypes.byref(self._msr))
        return self._msr.value

    def msr_write(self, msr: int, value: int) -> None:
        self._msr.rid, self._msr.value = msr, value & 0xFFFFFFFFFFFFFFFF
        _lib.uc_reg_write(self._uch, _UC_X86_REG_MSR, ctypes.byref(self._msr))


def context_buffer(ctx) -> ctypes.Array:
    """The bytes of a saved UcContext, writable in place."""
    addr = ctypes.cast(ctx.context, ctypes.c_void_p).value
    return (ctypes.c_char * ctx.size).from_address(addr)


def add_rdtsc_hook(uc: Uc, fn) -> object:
    """Hook rdtsc (the binding refuses to); ``fn()`` returns the 64-bit TSC value.

    Returns the ctypes callback, which the caller must keep alive."""
    regs = RawRegs(uc)
    from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDX

    def cb(_uch, _ud):
        tsc = fn()
        regs.write(UC_X86_REG_RAX, tsc & 0xFFFFFFFF)
        regs.write(UC_X86_REG_RDX, tsc >> 32)
        return 1
    return add_insn_hook(uc, RDTSC_CB(cb), UC_X86_INS_RDTSC)


def add_insn_hook(uc: Uc, cfn, insn: int, user: int = 0) -> object:
    """uc_hook_add(UC_HOOK_INSN, cfn, every address, insn) through our own library handle;
    ``cfn`` a ctypes callback or a native function's address, ``user`` its user data.
    Returns ``cfn``, which the caller must keep alive."""
    handle = ctypes.c_size_t()
    err = _lib.uc_hook_add(uc._uch, ctypes.byref(handle), ctypes.c_int(UC_HOOK_INSN), cfn,
                           ctypes.c_void_p(user), ctypes.c_uint64(1), ctypes.c_uint64(0),
                           ctypes.c_int(insn))
    if err:
        raise UcError(err)
    return cfn


class _Calibration:
    """Offsets found by experiment on this Unicorn build."""

    counter_offset: int = -1       # uc_struct.emu_counter (instructions run in this emu_start)
    count_offset: int = -1         # uc_struct.emu_count (the limit given to emu_start)
    count_hook_offset: int = -1    # uc_struct.count_hook (the code hook count= adds, or 0)
    err_offset: int = 5424         # env->error_code in the context
    old_exc_offset: int = 5536     # env->old_exception in the context
    env_paths: list = []           # (uc_struct offset, offset from that pointer) to the CPU state


CAL = _Calibration()


def _scan_u64(addr: int, size: int, value: int) -> set[int]:
    buf = ctypes.string_at(addr, size)
    return {o for o in range(0, size - 8, 8) if struct.unpack_from("<Q", buf, o)[0] == value}


def calibrate() -> _Calibration:
    """Find the instruction counter and the exception fields once per process."""
    if CAL.counter_offset >= 0:
        return CAL
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, b"\x48\xff\xc0" * 40 + b"\xf4")     # 40 x inc rax; hlt
    h = ctypes.cast(uc._uch, ctypes.c_void_p).value
    cands = None
    for start, expect in ((0, 41), (3 * 17, 24), (3 * 33, 8)):
        uc.emu_start(0x1000 + start, 0, count=1000)
        found = _scan_u64(h, 4096, expect)
        cands = found if cands is None else cands & found
    if len(cands) != 1:
        raise RuntimeError(f"cannot locate Unicorn's instruction counter (candidates {sorted(cands)})")
    CAL.counter_offset = cands.pop()
    uc.emu_start(0x1000 + 3 * 39, 0, count=0x1234567)
    limit = _scan_u64(h, 4096, 0x1234567)
    if len(limit) != 1:
        raise RuntimeError("cannot locate Unicorn's instruction limit")
    CAL.count_offset = limit.pop()
    _check_count_hook(uc, h)
    _check_exception_fields(uc)
    return CAL


def _check_count_hook(uc: Uc, base: int) -> None:
    """uc_struct.count_hook, just before the counter: set while runs use count=, cleared
    (the hook deleted) by the first run without."""
    hook = ctypes.c_uint64.from_address(base + CAL.counter_offset - 8)
    present = hook.value
    uc.emu_start(0x1000 + 3 * 40, 0)                          # the hlt, without count=
    if not present or hook.value:
        raise RuntimeError("Unicorn's count= hook is not where this build expects it")
    CAL.count_hook_offset = CAL.counter_offset - 8


def retire_count_hook(uc: Uc, cell: ctypes.c_uint64) -> None:
    """Delete the hook Unicorn added for count= (``cell``: count_hook_cell) now, as
    uc_emu_start does at the start of the first run without count= (the caller then flushes
    every translation, as it does). Deleting a code hook looks up every block it
    instrumented through the current page tables, which can fault inside the engine
    (VCpu.hook_del): the caller keeps the CPU state around it."""
    if cell.value:
        _lib.uc_hook_del(uc._uch, cell.value)
        cell.value = 0


def _check_exception_fields(uc: Uc) -> None:
    """A divide error leaves old_exception at 0 where it was -1: the field is where we think."""
    uc.mem_write(0x2000, b"\x31\xc9\x48\xf7\xf1\xf4")           # xor ecx,ecx; div rcx; hlt
    seen = {}

    def intr(u, intno, _):
        seen["ctx"] = bytes(u.context_save())
        u.emu_stop()
    before = bytes(uc.context_save())
    h = uc.hook_add(UC_HOOK_INTR, intr)
    uc.emu_start(0x2000, 0, count=10)
    uc.hook_del(h)
    blob, off = seen.get("ctx", b""), CAL.old_exc_offset
    if len(blob) < off + 4 or struct.unpack_from("<i", before, off)[0] != -1 \
            or struct.unpack_from("<i", blob, off)[0] != 0:
        raise RuntimeError("Unicorn's exception state is not where this build expects it")


_RAX = 35                          # UC_X86_REG_RAX


def _readable_ranges() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            if perms[0] == "r":
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


def _env_paths(uc: Uc) -> list[tuple[int, int]]:
    """Candidate (offset in uc_struct of a pointer, offset from it) paths to an engine's CPU
    state: where its registers are found behind a pointer of the engine struct."""
    probe = 0x1357_9BDF_2468_ACE0
    _lib.uc_reg_write(uc._uch, _RAX, ctypes.byref(ctypes.c_uint64(probe)))
    key = struct.pack("<Q", probe)
    maps = _readable_ranges()
    base = ctypes.cast(uc._uch, ctypes.c_void_p).value
    found = []
    for i, p in enumerate(struct.unpack("<512Q", ctypes.string_at(base, 4096))):
        span = next((hi - p for lo, hi in maps if lo <= p < hi), 0)
        k = ctypes.string_at(p, min(span, 0x20000)).find(key) if span > 0x100 else -1
        if k >= 0:
            found.append((8 * i, k - (CTX_REGS - CTX_HDR)))
    return found


def _env_at(uc: Uc, path: tuple[int, int]) -> int | None:
    """The CPU state's address if ``path`` leads to this engine's live registers (a stale copy
    of them does not follow a register write). Leaves RAX as it was."""
    base = ctypes.cast(uc._uch, ctypes.c_void_p).value
    ptr = ctypes.c_uint64.from_address(base + path[0]).value
    if not ptr:
        return None
    env = ptr + path[1]
    rax = RawRegs(uc).read(_RAX)
    live = True
    for probe in (0x0BAD_F00D_DEAD_BEEF, 0x1357_9BDF_2468_ACE0):
        _lib.uc_reg_write(uc._uch, _RAX, ctypes.byref(ctypes.c_uint64(probe)))
        live = live and readable(env, 8) and ctypes.c_uint64.from_address(env + CTX_REGS - CTX_HDR).value == probe
    _lib.uc_reg_write(uc._uch, _RAX, ctypes.byref(ctypes.c_uint64(rax)))
    return env if live else None


def readable(addr: int, n: int) -> bool:
    return any(lo <= addr and addr + n <= hi for lo, hi in _readable_ranges())


def hflags_cell(uc: Uc) -> ctypes.c_uint32:
    """env->hflags of this engine, read in place (CPL is its low two bits): about 20 times
    cheaper than a register read, which matters in the ``out`` hook. Each engine's path to
    its CPU state is checked live before use (another pointer may lead to some engine's
    registers by a heap coincidence)."""
    uc.context_save()                         # makes the engine create its CPU
    for _ in range(2):
        for path in CAL.env_paths:
            env = _env_at(uc, path)
            if env is not None:
                return ctypes.c_uint32.from_address(env + CTX_HFLAGS - CTX_HDR)
        saved = uc.context_save()
        CAL.env_paths = _env_paths(uc)
        uc.context_restore(saved)
    raise RuntimeError("cannot locate Unicorn's CPU state")


def counter_cells(uc: Uc) -> tuple[ctypes.c_uint64, ctypes.c_uint64]:
    """The engine's (instructions run, instruction limit) of the current emu_start.

    Writable, so a nested emu_start (``Machine.call`` from a hook) can put them back."""
    base = ctypes.cast(uc._uch, ctypes.c_void_p).value
    cal = calibrate()
    return (ctypes.c_uint64.from_address(base + cal.counter_offset),
            ctypes.c_uint64.from_address(base + cal.count_offset))


def count_hook_cell(uc: Uc) -> ctypes.c_uint64:
    """The engine's count= hook (0: none), for retire_count_hook."""
    return ctypes.c_uint64.from_address(ctypes.cast(uc._uch, ctypes.c_void_p).value
                                        + calibrate().count_hook_offset)
