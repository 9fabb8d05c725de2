"""The two instructions a call site can hold, and their encodings (Intel SDM names)."""
from __future__ import annotations

import struct

MCOUNT_INSN_SIZE = 5
CALL_INSN_OPCODE = 0xE8
INT3_INSN_OPCODE = 0xCC
# x86_nops[5]: nopl 0x0(%rax,%rax,1). Written as bytes: keystone encodes the mnemonic wrongly.
X86_NOP5 = bytes.fromhex("0f1f440000")


def call_insn(ip: int, target: int) -> bytes:
    """``call target`` placed at ``ip``: e8 and the little-endian rel32 ``target - (ip + 5)``."""
    rel = target - (ip + MCOUNT_INSN_SIZE)
    if not -(1 << 31) <= rel < (1 << 31):
        raise ValueError(f"call from 0x{ip:x} to 0x{target:x} is out of rel32 range")
    return struct.pack("<Bi", CALL_INSN_OPCODE, rel)


def call_target(ip: int, insn: bytes) -> int | None:
    """The target of a ``call rel32`` at ``ip``, or None if ``insn`` is not one."""
    if len(insn) != MCOUNT_INSN_SIZE or insn[0] != CALL_INSN_OPCODE:
        return None
    return (ip + MCOUNT_INSN_SIZE + struct.unpack_from("<i", insn, 1)[0]) & 0xFFFFFFFFFFFFFFFF


def site_insn(ip: int, target: int | None) -> bytes:
    """What a site holds when it calls ``target`` (None: the NOP)."""
    return X86_NOP5 if target is None else call_insn(ip, target)
