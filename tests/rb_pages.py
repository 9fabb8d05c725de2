"""A small encoder of the kernel's ring-buffer pages (buffer_data_page + ring_buffer_event),
for testing the trace.dat container before the guest's own ring buffer fills pages.
Events are (delta_ns, payload) pairs; payloads up to 112 bytes, as the kernel packs them on
x86-64 (type_len = length / 4, no 8-byte forcing)."""
from __future__ import annotations

import struct

PAGE_SIZE = 4096
HEADER = 16                         # u64 timestamp, local_t commit
TYPE_TIME_EXTEND = 30
TS_BITS = 27


def encode_page(timestamp: int, events: list[tuple[int, bytes]]) -> bytes:
    body = bytearray()
    for delta, payload in events:
        if delta >> TS_BITS:
            body += struct.pack("<II", TYPE_TIME_EXTEND | (delta & ((1 << TS_BITS) - 1)) << 5,
                                delta >> TS_BITS)
            delta = 0
        assert len(payload) % 4 == 0 and len(payload) <= 112
        body += struct.pack("<I", len(payload) // 4 | delta << 5) + payload
    assert HEADER + len(body) <= PAGE_SIZE
    return struct.pack("<QQ", timestamp, len(body)) + body + bytes(PAGE_SIZE - HEADER - len(body))


def function_entry(pid: int, ip: int, parent_ip: int, flags: int = 0, preempt: int = 0,
                   type_id: int = 1) -> bytes:
    """struct trace_entry + struct ftrace_entry."""
    return struct.pack("<HBBiQQ", type_id, flags, preempt, pid, ip, parent_ip)
