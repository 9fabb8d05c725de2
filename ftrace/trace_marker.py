"""Events the host writes into a trace array's buffer (kernel/trace/trace.c): the
``trace_marker`` and ``trace_marker_raw`` files' entries, the stack trace of the stacktrace
command and the snapshot command's messages. A mixin of ``TraceArray``.

The writer is the host, not a guest task: an entry is written into the first online CPU's
buffer as by the task running there, between two guest instructions, with that CPU's
writers quiesced (``write_event``'s rule)."""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .arch.x86.func_stack_64 import FTRACE_KSTACK_ENTRIES, MAX_CALLERS
from .errors import FtraceError
from .ring_buffer_format import BUF_PAGE_SIZE
from .trace_output import TRACE_PRINT, TRACE_RAW_DATA, TRACE_STACK, context_flags

if TYPE_CHECKING:
    from .trace import TraceArray

TRACE_MARKER_MAX_SIZE = 4096
RB_MAX_EVENT_DATA = BUF_PAGE_SIZE - 8  # ring_buffer_max_event_size: a page less two header words
PRINT_META = 16 + 2                   # struct print_entry before buf, the '\n' and '\0'
RAW_DATA_ENTRY = 12                   # sizeof(struct raw_data_entry): trace_entry, u32 id
FAULT_SIZE_ID = len("<faulted>") + 4  # room kept for "<faulted>" after an id


class HostEvents:
    """What the host writes into ``self``'s buffer (``self`` is a TraceArray)."""

    def trace_dump_stack(self: "TraceArray", cpu: int) -> None:
        """__trace_stack for the stacktrace command: a TRACE_STACK entry (``<stack trace>``
        then `` => func`` lines) of the vCPU that hit the function, in its buffer, as many
        callers long as the chain (up to the kernel's per-CPU stack; none if the event would
        not fit a page, as the kernel's reserve refuses it)."""
        if not self._on or not self.inst.tracing_cpumask >> cpu & 1:
            return
        ft = self.tracing.ft
        callers = ft.stack_trace_save()[:FTRACE_KSTACK_ENTRIES]
        if len(callers) > MAX_CALLERS:
            return
        pc = ft.preempt_count(cpu)
        flags = (0 if self.m.cpus[cpu].rflags() & 0x200 else 0x01) | context_flags(pc)
        payload = struct.pack("<HBBiI4x", TRACE_STACK, flags, min(pc & 0xFF, 15),
                              self.tracing.current_pid(cpu), len(callers))
        payload += b"".join(struct.pack("<Q", a) for a in callers)
        self.ring_buffer().write_event(cpu, payload, self.tracing.clock_now(self, cpu))

    def _marker_checks(self: "TraceArray") -> None:
        if "markers" not in self.options:
            raise FtraceError(errno.EINVAL, "the markers option is off")
        if not self._on:
            raise FtraceError(errno.EBADF, "tracing is off")

    def trace_marker_write(self: "TraceArray", data: bytes) -> int:
        """trace_marker (tracing_mark_write): one write(2) becomes a TRACE_PRINT entry
        (``tracing_mark_write: text``), with a newline added if it has none. It takes at
        most what one event holds and says so: the writer's next write(2) brings the rest
        as another entry. EINVAL with the markers option off, EBADF while tracing is off."""
        self._marker_checks()
        cnt = min(len(data), TRACE_MARKER_MAX_SIZE, RB_MAX_EVENT_DATA - PRINT_META)
        text = data[:cnt] if data[:cnt].endswith(b"\n") else data[:cnt] + b"\n"
        self.quiesce_writers()
        if not self._print(self.m.online_cpus()[0], self.tracing.tracing_mark_write, text):
            raise FtraceError(errno.EBADF, "the buffer is full")
        return cnt

    def trace_marker_raw_write(self: "TraceArray", data: bytes) -> int:
        """trace_marker_raw (tracing_mark_raw_write): one write(2) of a 4-byte id and binary
        data becomes one TRACE_RAW_DATA entry, printed ``# <id in hex> buf: <bytes>``.
        EINVAL for fewer than 4 bytes, for more than one event holds (no short write here)
        and with the markers option off; EBADF while tracing is off. The entry is sized as
        the kernel sizes it (the id counted twice, room for ``<faulted>``), and the bytes
        past the data are zero."""
        self._marker_checks()
        if len(data) < 4:
            raise FtraceError(errno.EINVAL, "a raw marker starts with a 4-byte id")
        size = RAW_DATA_ENTRY + max(len(data), FAULT_SIZE_ID)
        if size > RB_MAX_EVENT_DATA:
            raise FtraceError(errno.EINVAL, f"a raw marker holds at most {RB_MAX_EVENT_DATA - RAW_DATA_ENTRY} bytes")
        cpu = self.m.online_cpus()[0]
        head = struct.pack("<HBBi", TRACE_RAW_DATA, 0, 0, self.tracing.current_pid(cpu))
        self.quiesce_writers()
        if not self.ring_buffer().write_event(cpu, (head + data).ljust(size, b"\0"),
                                              self.tracing.clock_now(self, cpu)):
            raise FtraceError(errno.EBADF, "the buffer is full")
        return len(data)

    def _print(self: "TraceArray", cpu: int, ip: int, data: bytes) -> bool:
        """A TRACE_PRINT entry (``<ip's symbol>: text``) in ``cpu``'s buffer, as written by
        the task running there; False if the buffer dropped it."""
        payload = struct.pack("<HBBiQ", TRACE_PRINT, 0, 0, self.tracing.current_pid(cpu), ip) + data + b"\0"
        return self.ring_buffer().write_event(cpu, payload, self.tracing.clock_now(self, cpu))

    def _printk(self: "TraceArray", cpu: int, *lines: str) -> None:
        """trace_array_printk_buf from tracing_snapshot_instance_cond."""
        if self._on:
            for line in lines:
                self._print(cpu, self.tracing.snapshot_instance_cond, line.encode())
