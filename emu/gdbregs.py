"""The register file the GDB stub shows: gdb's x86-64 layout, its target description XML, and
reading/writing one vCPU's registers in the protocol's byte order.

The layout is gdb's own (features ``org.gnu.gdb.i386.core``, ``.sse`` and ``.segments``, in
their register order), so gdb's amd64 support (unwinder, disassembler, ``$fs_base``) applies
unchanged; ``org.ftemu.x86.sys`` adds the control registers and EFER a kernel engineer
reads (``p/x $cr3``, ``$cr2`` after a page fault), read-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn import x86_const as X

if TYPE_CHECKING:
    from .cpu import VCpu

MSR_EFER, MSR_KERNEL_GS_BASE = 0xC0000080, 0xC0000102


@dataclass(frozen=True, slots=True)
class GdbReg:
    """One register: its name, size in bytes, Unicorn id (or MSR number) and whether gdb may
    write it. ``feature`` and ``type`` are what the target description says."""
    name: str
    size: int
    uc: int | None
    feature: str
    type: str = "int"
    writable: bool = True
    msr: int | None = None


def _core() -> list[GdbReg]:
    f = "org.gnu.gdb.i386.core"
    gprs = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *[f"r{i}" for i in range(8, 16)]]
    types = {"rbp": "data_ptr", "rsp": "data_ptr"}
    regs = [GdbReg(n, 8, getattr(X, f"UC_X86_REG_{n.upper()}"), f, types.get(n, "int64"))
            for n in gprs]
    regs += [GdbReg("rip", 8, X.UC_X86_REG_RIP, f, "code_ptr"),
             GdbReg("eflags", 4, X.UC_X86_REG_EFLAGS, f, "i386_eflags")]
    # A selector write in 64-bit mode would not load the hidden descriptor state (see
    # VCpu.load_cs_ss), so segment registers are shown but refused for writing.
    regs += [GdbReg(s, 4, getattr(X, f"UC_X86_REG_{s.upper()}"), f, "int32", writable=False)
             for s in ("cs", "ss", "ds", "es", "fs", "gs")]
    regs += [GdbReg(f"st{i}", 10, getattr(X, f"UC_X86_REG_ST{i}"), f, "i387_ext", writable=False)
             for i in range(8)]
    x87 = {"fctrl": X.UC_X86_REG_FPCW, "fstat": X.UC_X86_REG_FPSW, "ftag": X.UC_X86_REG_FPTAG,
           "fiseg": X.UC_X86_REG_FCS, "fioff": X.UC_X86_REG_FIP, "foseg": X.UC_X86_REG_FDS,
           "fooff": X.UC_X86_REG_FDP, "fop": X.UC_X86_REG_FOP}
    regs += [GdbReg(n, 4, u, f, "int", writable=False) for n, u in x87.items()]
    return regs


def _rest() -> list[GdbReg]:
    sse, seg, sys = "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments", "org.ftemu.x86.sys"
    regs = [GdbReg(f"xmm{i}", 16, getattr(X, f"UC_X86_REG_XMM{i}"), sse, "vec128")
            for i in range(16)]
    regs.append(GdbReg("mxcsr", 4, X.UC_X86_REG_MXCSR, sse, "i386_mxcsr"))
    regs += [GdbReg("fs_base", 8, X.UC_X86_REG_FS_BASE, seg),
             GdbReg("gs_base", 8, X.UC_X86_REG_GS_BASE, seg)]
    regs += [GdbReg(n, 8, getattr(X, f"UC_X86_REG_{n.upper()}"), sys, writable=False)
             for n in ("cr0", "cr2", "cr3", "cr4")]
    regs += [GdbReg("efer", 8, None, sys, writable=False, msr=MSR_EFER),
             GdbReg("k_gs_base", 8, None, sys, writable=False, msr=MSR_KERNEL_GS_BASE)]
    return regs


REGS: list[GdbReg] = _core() + _rest()
BY_NAME = {r.name: i for i, r in enumerate(REGS)}

_TYPES = """
  <flags id="i386_eflags" size="4">
    <field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
    <field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
    <field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
    <field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
    <field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
    <field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
    <field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
    <field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
    <field name="ID" start="21" end="21"/>
  </flags>"""

_SSE_TYPES = """
  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v16i8" type="int8" count="16"/>
  <vector id="v8i16" type="int16" count="8"/>
  <vector id="v4i32" type="int32" count="4"/>
  <vector id="v2i64" type="int64" count="2"/>
  <union id="vec128">
    <field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>
    <field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
    <field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
    <field name="uint128" type="uint128"/>
  </union>
  <flags id="i386_mxcsr" size="4">
    <field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
    <field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
    <field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
    <field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
    <field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
    <field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
    <field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
  </flags>"""


def target_xml() -> str:
    """The target description gdb reads with ``qXfer:features:read:target.xml``."""
    out = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
           "  <architecture>i386:x86-64</architecture>"]
    features: dict[str, list[str]] = {}
    for num, r in enumerate(REGS):
        group = ' group="float"' if r.name.startswith("f") and r.size == 4 else ""
        group = ' group="system"' if r.feature.endswith(".sys") else group
        features.setdefault(r.feature, []).append(
            f'  <reg name="{r.name}" bitsize="{8 * r.size}" type="{r.type}" regnum="{num}"{group}/>')
    for name, lines in features.items():
        types = {"org.gnu.gdb.i386.core": _TYPES, "org.gnu.gdb.i386.sse": _SSE_TYPES}.get(name, "")
        out += [f'<feature name="{name}">{types}', *lines, "</feature>"]
    out.append("</target>")
    return "\n".join(out) + "\n"


def read_reg(cpu: "VCpu", num: int) -> bytes:
    """Register ``num`` of ``cpu`` in target byte order (little-endian), ``size`` bytes."""
    r = REGS[num]
    if r.msr is not None:
        value = cpu.uc.msr_read(r.msr)
    elif r.size == 8:
        value = cpu.regs.read(r.uc)
    else:
        value = cpu.uc.reg_read(r.uc)
        if isinstance(value, tuple):           # x87: (mantissa, exponent)
            value = value[0] | value[1] << 64
    return (value & ((1 << (8 * r.size)) - 1)).to_bytes(r.size, "little")


def read_all(cpu: "VCpu") -> bytes:
    """Every register, in order: the ``g`` packet's payload."""
    return b"".join(read_reg(cpu, i) for i in range(len(REGS)))


def check_write(cpu: "VCpu", num: int, data: bytes) -> str | None:
    """Why writing ``data`` to register ``num`` is refused, or None when it may be written.
    Writing a read-only register with its current value is allowed (gdb's ``G`` resends all)."""
    if not 0 <= num < len(REGS):
        return f"no register {num}"
    r = REGS[num]
    if len(data) != r.size:
        return f"{r.name} takes {r.size} bytes, not {len(data)}"
    if not r.writable and data != read_reg(cpu, num):
        return f"{r.name} is read-only"
    return None


def write_reg(cpu: "VCpu", num: int, data: bytes) -> None:
    """Write register ``num`` (checked with ``check_write`` first)."""
    r = REGS[num]
    if not r.writable:
        return
    value = int.from_bytes(data, "little")
    if r.size == 8:
        cpu.regs.write(r.uc, value)
    else:
        cpu.uc.reg_write(r.uc, value)
