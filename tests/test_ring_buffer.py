"""The ring buffer's page format on its own: what the guest writer lays out, decode_page reads
back (the reader trace output, trace_pipe_raw users and trace.dat writers share)."""
from __future__ import annotations

import struct

import pytest

from ftrace.ring_buffer_format import (BUF_PAGE_SIZE, RB_MISSED_EVENTS, RB_MISSED_STORED,
                                       RINGBUF_TYPE_PADDING, decode_page, encode_event,
                                       event_length)


def page(stamp: int, body: bytes, flags: int = 0, tail: bytes = b"") -> bytes:
    raw = struct.pack("<QQ", stamp, len(body) | flags) + body + tail
    return raw + bytes(4096 - len(raw))


def test_deltas_accumulate_from_the_page_stamp_and_time_extend_carries_big_gaps():
    a, b, c = b"A" * 24, b"B" * 24, b"C" * 120
    body = encode_event(a, 0) + encode_event(b, 5) + encode_event(c, 1 << 30)
    assert len(encode_event(a, 0)) == event_length(24) == 28
    assert len(encode_event(c, 1 << 30)) == 8 + event_length(120)      # TIME_EXTEND + length word
    dp = decode_page(page(1000, body))
    assert [(e.ts, e.data) for e in dp.events] == [(1000, a), (1005, b), (1005 + (1 << 30), c)]
    assert dp.missed_events is None and dp.commit == len(body)


def test_padding_is_skipped_and_a_null_padding_ends_the_page():
    body = encode_event(b"x" * 8, 0) + struct.pack("<II", RINGBUF_TYPE_PADDING | 1 << 5, 12) + bytes(8)
    body += encode_event(b"y" * 8, 3)
    assert [e.data for e in decode_page(page(0, body)).events] == [b"x" * 8, b"y" * 8]
    ended = encode_event(b"x" * 8, 0) + struct.pack("<I", RINGBUF_TYPE_PADDING) + bytes(8)
    assert len(decode_page(page(0, ended)).events) == 1


def test_missed_events_are_flagged_in_commit_and_stored_after_the_data():
    body = encode_event(b"z" * 4, 0)
    dp = decode_page(page(7, body, RB_MISSED_EVENTS | RB_MISSED_STORED, struct.pack("<Q", 42)))
    assert dp.missed_events == 42 and dp.commit == len(body)
    assert decode_page(page(7, body, RB_MISSED_EVENTS)).missed_events == 0


def test_a_corrupt_page_is_refused():
    with pytest.raises(ValueError):
        decode_page(struct.pack("<QQ", 0, BUF_PAGE_SIZE + 1) + bytes(4080))
    with pytest.raises(ValueError):
        decode_page(page(0, struct.pack("<I", 20) + bytes(8)))       # type_len 20: 80 bytes
