"""Recursion bits (trace_recursion.h) and recursed_functions."""

from __future__ import annotations

import pytest

from ftrace.recursion import (
    HARDIRQ_OFFSET, NMI_OFFSET, SOFTIRQ_DISABLE_OFFSET, SOFTIRQ_OFFSET, TRACE_FTRACE_START,
    TRACE_LIST_START, RecursionRecorder, trace_clear_recursion, trace_get_context_bit,
    trace_test_and_set_recursion,
)


@pytest.mark.parametrize("pc, bit", [
    (0, 3), (1, 3), (SOFTIRQ_DISABLE_OFFSET, 3), (SOFTIRQ_OFFSET, 2),
    (HARDIRQ_OFFSET, 1), (HARDIRQ_OFFSET | SOFTIRQ_OFFSET, 1), (NMI_OFFSET | HARDIRQ_OFFSET, 0),
])
def test_context_bit(pc, bit):
    assert trace_get_context_bit(pc) == bit


@pytest.mark.parametrize("start", [TRACE_FTRACE_START, TRACE_LIST_START])
def test_transition_bit_allows_exactly_one_nested_entry(start):
    word, first = trace_test_and_set_recursion(0, 0, start)
    assert (word, first) == (1 << (3 + start), 3 + start)
    word, nested = trace_test_and_set_recursion(word, 0, start)
    assert (word, nested) == (0b11 << (3 + start), 4 + start)
    assert trace_test_and_set_recursion(word, 0, start) == (word, -1)
    word = trace_clear_recursion(word, nested)
    word, again = trace_test_and_set_recursion(word, 0, start)
    assert again == 4 + start
    word = trace_clear_recursion(trace_clear_recursion(word, again), first)
    assert word == 0


def test_interrupt_takes_its_own_bit():
    word, _ = trace_test_and_set_recursion(0, 0, TRACE_LIST_START)
    word, irq = trace_test_and_set_recursion(word, HARDIRQ_OFFSET, TRACE_LIST_START)
    assert irq == 6 and word == (1 << 8) | (1 << 6)


def test_ftrace_and_list_bits_are_independent():
    word, _ = trace_test_and_set_recursion(0, 0, TRACE_LIST_START)
    assert trace_test_and_set_recursion(word, 0, TRACE_FTRACE_START)[1] == 3


def test_recorder_dedups_caps_and_prints():
    rec = RecursionRecorder()
    for ip, parent in [(0x10, 0x1), (0x10, 0x2), (0x20, 0x3), (0x10, 0x4)]:
        rec.ftrace_record_recursion(ip, parent)
    assert rec.show(lambda a: f"f{a:x}") == "f1:\tf10\nf3:\tf20\n"
    for ip in range(0x100, 0x300):
        rec.ftrace_record_recursion(ip, 0)
    assert len(rec.records) == 128
    rec.clear()
    assert rec.show(hex) == ""
