"""A recording opened for reading (libtracecmd's trace-input.c): the events of a trace.dat
decoded by the file's own formats, with its symbols and task names, merged across CPUs in
timestamp order as ``trace-cmd report`` prints them."""
from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import trace_dat
from .event_format import EventFormat
from .ring_buffer_format import RingBufferEvent, decode_page
from .trace_dat import TraceDat
from .trace_output import TraceEntry, merge_by_time

# struct trace_entry's flags (include/linux/trace_events.h, trace_flag_type)
TRACE_FLAG_IRQS_OFF = 0x01
TRACE_FLAG_NEED_RESCHED = 0x04
TRACE_FLAG_HARDIRQ = 0x08
TRACE_FLAG_SOFTIRQ = 0x10
TRACE_FLAG_NMI = 0x40


@dataclass(slots=True)
class TraceRecord:
    """One event: where and when it was written, its format and its field values."""

    cpu: int
    ts: int
    event: EventFormat
    fields: dict

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def pid(self) -> int:
        return self.fields["common_pid"]

    @property
    def flags(self) -> int:
        return self.fields["common_flags"]

    @property
    def preempt_count(self) -> int:
        return self.fields["common_preempt_count"]

    @property
    def context(self) -> str:
        """Where the event was written: "nmi", "hardirq", "softirq" or "task"."""
        if self.flags & TRACE_FLAG_NMI:
            return "nmi"
        if self.flags & TRACE_FLAG_HARDIRQ:
            return "hardirq"
        if self.flags & TRACE_FLAG_SOFTIRQ:
            return "softirq"
        return "task"


class Recording:
    """A trace.dat's events and the means to name what they refer to."""

    def __init__(self, td: TraceDat) -> None:
        self.td = td
        self.events: dict[int, EventFormat] = {}
        for text in td.ftrace_formats:
            self._add(EventFormat.parse(text.decode(), "ftrace"))
        for system, texts in td.event_formats.items():
            for text in texts:
                self._add(EventFormat.parse(text.decode(), system))
        syms = []
        for line in td.kallsyms.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                syms.append((int(parts[0], 16), parts[2]))
        syms.sort()
        self._addrs = [a for a, _ in syms]
        self._names = [n for _, n in syms]
        self.comms = {0: "<idle>"}
        for line in td.cmdlines.decode(errors="replace").splitlines():
            pid, _, comm = line.strip().partition(" ")
            if pid.isdigit():
                self.comms[int(pid)] = comm

    def _add(self, fmt: EventFormat) -> None:
        self.events[fmt.id] = fmt

    @classmethod
    def open(cls, path: str | Path) -> Recording:
        """Read the trace.dat at ``path``."""
        return cls(trace_dat.read(path))

    @property
    def cpus(self) -> int:
        return len(self.td.cpu_data)

    def event(self, system: str, name: str) -> EventFormat | None:
        return next((e for e in self.events.values() if e.system == system and e.name == name),
                    None)

    def symbol(self, addr: int) -> str:
        """The function containing ``addr`` (its name; ``name+0xoff`` inside it), or hex."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return f"0x{addr:x}"
        off = addr - self._addrs[i]
        return self._names[i] if off == 0 else f"{self._names[i]}+0x{off:x}"

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        """(name, offset, size) of the symbol holding ``addr``, sized to the next symbol as
        kallsyms sizes them; None outside every symbol."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or i + 1 >= len(self._addrs):
            return None
        return self._names[i], addr - self._addrs[i], self._addrs[i + 1] - self._addrs[i]

    def function(self, addr: int) -> str:
        """The name of the function containing ``addr`` (no offset), or hex."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        return self._names[i] if i >= 0 else f"0x{addr:x}"

    def comm(self, pid: int) -> str:
        return self.comms.get(pid, "<...>")

    def task(self, pid: int) -> str:
        """``comm-pid`` as trace lines print a task."""
        return f"{self.comm(pid)}-{pid}"

    def cpu_events(self, cpu: int) -> Iterator[RingBufferEvent]:
        """CPU ``cpu``'s ring-buffer events in the order written."""
        for page in self.td.pages(cpu):
            yield from decode_page(page).events

    def lost(self, cpu: int) -> int:
        """Events CPU ``cpu``'s buffer lost before they were read (the pages' missed counts)."""
        return sum(decode_page(p).missed_events or 0 for p in self.td.pages(cpu))

    def entries(self, cpus: list[int] | None = None) -> Iterator[TraceEntry]:
        """The chosen CPUs' entries (default all), oldest first, as the ``trace`` file merges
        them."""
        chosen = range(self.cpus) if cpus is None else cpus
        return merge_by_time((c, self.cpu_events(c)) for c in chosen)

    def counts(self, cpus: list[int] | None = None) -> tuple[int, int]:
        """(entries in the recording, entries written) for trace's header."""
        chosen = range(self.cpus) if cpus is None else cpus
        n = sum(1 for c in chosen for _ in self.cpu_events(c))
        return n, n + sum(self.lost(c) for c in chosen)

    def record(self, e: TraceEntry) -> TraceRecord:
        """An entry with its fields decoded by the file's format for its type."""
        fmt = self.events.get(e.type)
        if fmt is None:
            raise ValueError(f"CPU {e.cpu}: event type {e.type} at {e.ts} has no format in "
                             "the file")
        raw = struct.pack("<HBBi", e.type, e.flags, e.preempt_count, e.pid) + e.body
        return TraceRecord(e.cpu, e.ts, fmt, fmt.decode(raw))

    def records(self, cpus: list[int] | None = None) -> Iterator[TraceRecord]:
        """Every event of the chosen CPUs (default all), oldest first, fields decoded."""
        return (self.record(e) for e in self.entries(cpus))

    def cpu_records(self, cpu: int) -> Iterator[TraceRecord]:
        """CPU ``cpu``'s events in the order written, fields decoded."""
        return self.records([cpu])

    def entry_function(self, e: TraceEntry) -> str:
        """The function an entry is about: a function event's ip, a graph event's func."""
        fields = self.record(e).fields
        addr = fields.get("ip", fields.get("func"))
        return self.function(addr) if addr is not None else ""
