"""Recursion protection bits of include/linux/trace_recursion.h, and recursed_functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# include/linux/preempt.h
PREEMPT_MASK = 0x000000FF
SOFTIRQ_MASK = 0x0000FF00
HARDIRQ_MASK = 0x000F0000
NMI_MASK = 0x00F00000
PREEMPT_OFFSET = 1 << 0
SOFTIRQ_OFFSET = 1 << 8
SOFTIRQ_DISABLE_OFFSET = 2 * SOFTIRQ_OFFSET
HARDIRQ_OFFSET = 1 << 16
NMI_OFFSET = 1 << 20

# enum { TRACE_CTX_* }: context numbers; a bit is start + context.
TRACE_CTX_NMI = 0
TRACE_CTX_IRQ = 1
TRACE_CTX_SOFTIRQ = 2
TRACE_CTX_NORMAL = 3
TRACE_CTX_TRANSITION = 4

TRACE_FTRACE_START = 0  # callbacks' own trylock (ftrace_test_recursion_trylock)
TRACE_LIST_START = 5    # ftrace_ops_list_func and ftrace_ops_assist_func

FTRACE_RECORD_RECURSION_SIZE = 128


def interrupt_context_level(preempt_count: int) -> int:
    """0 in task context, 1 serving a softirq, 2 in hardirq, 3 in NMI."""
    return (bool(preempt_count & NMI_MASK)
            + bool(preempt_count & (NMI_MASK | HARDIRQ_MASK))
            + bool(preempt_count & (NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET)))


def trace_get_context_bit(preempt_count: int) -> int:
    """TRACE_CTX_NORMAL - interrupt_context_level(): NMI 0, IRQ 1, SOFTIRQ 2, NORMAL 3."""
    return TRACE_CTX_NORMAL - interrupt_context_level(preempt_count)


def trace_test_and_set_recursion(word: int, preempt_count: int, start: int) -> tuple[int, int]:
    """Take the context bit, or else the TRANSITION bit: one nested re-entry is allowed.

    Returns (new word, bit); bit is -1 (word unchanged) when both are taken, which is when
    the kernel records the recursion. On success the caller also disables preemption.
    """
    bit = trace_get_context_bit(preempt_count) + start
    if word & (1 << bit):
        bit = TRACE_CTX_TRANSITION + start
        if word & (1 << bit):
            return word, -1
    return word | (1 << bit), bit


def trace_clear_recursion(word: int, bit: int) -> int:
    """ftrace_test_recursion_unlock: release `bit` (after re-enabling preemption)."""
    return word & ~(1 << bit)


@dataclass(slots=True)
class RecursedFunction:
    """One recursed_functions entry."""

    ip: int
    parent_ip: int


class RecursionRecorder:
    """CONFIG_FTRACE_RECORD_RECURSION: up to 128 distinct recursing ips, in first-seen order."""

    def __init__(self) -> None:
        self.records: list[RecursedFunction] = []
        self._cached_function = 0

    def ftrace_record_recursion(self, ip: int, parent_ip: int) -> None:
        """Record (ip, parent_ip) unless ip is the last one seen, already listed, or full."""
        if ip == self._cached_function or len(self.records) >= FTRACE_RECORD_RECURSION_SIZE:
            return
        self._cached_function = ip
        if all(r.ip != ip for r in self.records):
            self.records.append(RecursedFunction(ip, parent_ip))

    def clear(self) -> None:
        """`echo > recursed_functions` (open with O_TRUNC)."""
        self.records.clear()
        self._cached_function = 0

    def show(self, sprint_symbol: Callable[[int], str]) -> str:
        """The file: `<parent %pS>:\\t<ip %pS>` per entry."""
        return "".join(f"{sprint_symbol(r.parent_ip)}:\t{sprint_symbol(r.ip)}\n"
                       for r in self.records)
