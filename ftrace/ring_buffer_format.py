"""The ring buffer's binary format (kernel/trace/ring_buffer.c), pure: buffer_data_page
{u64 time_stamp; local_t commit; data[4080]} holding ring_buffer_event records {u32
type_len:5, time_delta:27; u32 array[]} with time deltas and TIME_EXTENDs. ``decode_page``
turns a page into events (trace output, trace.dat readers and writers), ``encode_event`` is
the writer's layout (tests, round trips), and the ``events/header_*`` texts describe it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

PAGE_SIZE = 4096
BUF_PAGE_HDR_SIZE = 16                  # u64 time_stamp + local_t commit
BUF_PAGE_SIZE = PAGE_SIZE - BUF_PAGE_HDR_SIZE
RB_EVNT_HDR_SIZE = 4
RB_MAX_SMALL_DATA = 28 * 4
RINGBUF_TYPE_DATA_TYPE_LEN_MAX = 28
RINGBUF_TYPE_PADDING = 29
RINGBUF_TYPE_TIME_EXTEND = 30
RINGBUF_TYPE_TIME_STAMP = 31
TS_SHIFT = 27
TS_DELTA_MAX = (1 << TS_SHIFT) - 1
RB_MISSED_EVENTS = 1 << 31              # page->commit flags set by a reader that lost events
RB_MISSED_STORED = 1 << 30
TRACE_BUF_SIZE_DEFAULT = 1441792        # trace_buf_size: 1408 KiB per CPU

_u64 = struct.Struct("<Q")
_u32 = struct.Struct("<I")
_hdr = struct.Struct("<QQ")


def header_page_format() -> str:
    """``events/header_page``: the buffer_data_page layout (commit doubles as the overwrite
    flag byte, as the kernel prints it)."""
    return (f"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
            f"\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
            f"\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
            f"\tfield: char data;\toffset:16;\tsize:{BUF_PAGE_SIZE};\tsigned:1;\n")


def header_event_format() -> str:
    """``events/header_event``: the compressed ring_buffer_event header."""
    return ("# compressed entry header\n"
            "\ttype_len    :    5 bits\n"
            "\ttime_delta  :   27 bits\n"
            "\tarray       :   32 bits\n"
            "\n"
            f"\tpadding     : type == {RINGBUF_TYPE_PADDING}\n"
            f"\ttime_extend : type == {RINGBUF_TYPE_TIME_EXTEND}\n"
            f"\ttime_stamp : type == {RINGBUF_TYPE_TIME_STAMP}\n"
            f"\tdata max type_len  == {RINGBUF_TYPE_DATA_TYPE_LEN_MAX}\n")


def event_length(payload_len: int) -> int:
    """Bytes a data event of ``payload_len`` takes (rb_calculate_event_length, 4-byte
    alignment as on x86-64): small payloads use type_len, larger ones a length word."""
    length = max(payload_len, 1)
    if length > RB_MAX_SMALL_DATA:
        length += 4
    length = (length + RB_EVNT_HDR_SIZE + 3) & ~3
    if length == 8 + 4:           # RB_LEN_TIME_EXTEND + RB_ALIGNMENT: keep room for a discard
        length += 4
    return length


@dataclass(slots=True)
class RingBufferEvent:
    """One data event: its absolute timestamp (trace clock units), the payload, and its
    offset in the page data (``offset`` is what the reader consumes up to)."""

    ts: int
    data: bytes
    offset: int
    end: int


@dataclass(slots=True)
class DecodedPage:
    """A buffer_data_page: its timestamp, committed length, missed-events flag and events."""

    time_stamp: int
    commit: int
    missed_events: int | None
    events: list[RingBufferEvent]


def decode_page(page: bytes, start: int = 0) -> DecodedPage:
    """Decode one buffer_data_page (4096 bytes, as in trace_pipe_raw and trace.dat) into
    events with absolute timestamps. ``start`` skips already consumed data (the timestamps
    still run from the page's beginning). Malformed data ends the page (ValueError)."""
    time_stamp, commit_word = _hdr.unpack_from(page, 0)
    commit = commit_word & ~(RB_MISSED_EVENTS | RB_MISSED_STORED) & 0xFFFFFFFF
    if commit > BUF_PAGE_SIZE:
        raise ValueError(f"buffer page commit {commit} exceeds {BUF_PAGE_SIZE}")
    missed = None
    if commit_word & RB_MISSED_EVENTS:
        missed = 0
        if commit_word & RB_MISSED_STORED:
            missed = _u64.unpack_from(page, BUF_PAGE_HDR_SIZE + commit)[0]
    ts, off, events = time_stamp, 0, []
    data = memoryview(page)[BUF_PAGE_HDR_SIZE:BUF_PAGE_HDR_SIZE + commit]
    while off < commit:
        if off + 4 > commit:
            raise ValueError(f"truncated event header at {off}")
        word = _u32.unpack_from(data, off)[0]
        type_len, delta = word & 0x1F, word >> 5
        if type_len == RINGBUF_TYPE_PADDING:
            if delta == 0:          # the rest of the page is padding
                break
            length = _u32.unpack_from(data, off + 4)[0] + RB_EVNT_HDR_SIZE
        elif type_len == RINGBUF_TYPE_TIME_EXTEND:
            ts += (_u32.unpack_from(data, off + 4)[0] << TS_SHIFT) + delta
            length = 8
        elif type_len == RINGBUF_TYPE_TIME_STAMP:
            ts = (_u32.unpack_from(data, off + 4)[0] << TS_SHIFT) + delta
            length = 8
        else:
            ts += delta
            if type_len == 0:
                size = _u32.unpack_from(data, off + 4)[0] - 4
                body = off + 8
            else:
                size, body = type_len * 4, off + 4
            length = body - off + size
            if off >= start:
                events.append(RingBufferEvent(ts, bytes(data[body:body + size]), off, off + length))
        if length <= 0 or off + length > commit:
            raise ValueError(f"event at {off} runs past the commit ({length} bytes)")
        off += length
    return DecodedPage(time_stamp, commit, missed, events)


def encode_event(payload: bytes, delta: int) -> bytes:
    """A data event (with a TIME_EXTEND in front when ``delta`` needs more than 27 bits), as
    the guest writer lays it out; the reference for tests and for trace.dat round trips."""
    if len(payload) % 4:
        payload += bytes(-len(payload) % 4)
    out = b""
    if delta > TS_DELTA_MAX:
        out = _u32.pack(RINGBUF_TYPE_TIME_EXTEND | (delta & TS_DELTA_MAX) << 5) + _u32.pack(delta >> TS_SHIFT)
        delta = 0
    if len(payload) <= RB_MAX_SMALL_DATA:
        return out + _u32.pack(len(payload) // 4 | delta << 5) + payload
    return out + _u32.pack(delta << 5) + _u32.pack(len(payload) + 4) + payload


def nr_pages_for(size_bytes: int) -> int:
    """Pages per CPU for a requested size (ring_buffer_resize: at least two)."""
    return max(2, -(-size_bytes // BUF_PAGE_SIZE))
