"""Trace text, byte for byte as the kernel prints it (kernel/trace/trace.c s_show and
print_*_header, kernel/trace/trace_output.c): the ``trace`` header, the context columns,
the latency flags and the function tracer's lines.

Pure functions over decoded entries: ``parse_entry`` turns a ring-buffer payload into a
``TraceEntry``; ``TraceFormatter`` formats entries given a symbol lookup, a pid -> comm map
and the trace options. The trace.dat tools use the same functions.
"""
from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .ring_buffer_format import RingBufferEvent

TRACE_FN, TRACE_STACK, TRACE_PRINT = 1, 4, 5
TRACE_GRAPH_RET, TRACE_GRAPH_ENT = 10, 11
TRACE_RAW_DATA = 18

# trace_flag_type
IRQS_OFF, NEED_RESCHED_LAZY, NEED_RESCHED, HARDIRQ = 0x01, 0x02, 0x04, 0x08
SOFTIRQ, PREEMPT_RESCHED, NMI, BH_OFF = 0x10, 0x20, 0x40, 0x80

# init_utsname()->release, as the latency header names it: the kernel whose tracefs formats
# ftemu follows, marked as ours (the guest has no uname of its own).
UTS_RELEASE = "6.12.0-ftemu"
# The guest preempts kernel code on the way out of interrupts (preempt_schedule_irq).
PREEMPT_MODEL = "preempt"
# The overhead marks of latency timestamps and graph durations (ns).
MARKS = ((1000000000, "$"), (100000000, "@"), (10000000, "*"), (1000000, "#"), (100000, "!"),
         (10000, "+"))

_entry = struct.Struct("<HBBi")
_fn = struct.Struct("<QQ")

Symbolizer = Callable[[int], "tuple[str, int, int] | None"]
# Trace events' printers by type id (trace_events.py fills it): (name, fields -> text).
EVENT_PRINTERS: dict[int, tuple[str, Callable[[bytes], str]]] = {}


@dataclass(slots=True)
class TraceEntry:
    """One event with its CPU and timestamp: struct trace_entry's fields and the payload
    after them."""

    cpu: int
    ts: int
    type: int
    flags: int
    preempt_count: int
    pid: int
    body: bytes


def parse_entry(cpu: int, ev: RingBufferEvent) -> TraceEntry:
    """A ring-buffer event as a trace entry (struct trace_entry first)."""
    etype, flags, pc, pid = _entry.unpack_from(ev.data, 0)
    return TraceEntry(cpu, ev.ts, etype, flags, pc, pid, ev.data[_entry.size:])


def merge_by_time(per_cpu: Iterable[tuple[int, Iterable[RingBufferEvent]]]) -> Iterator[TraceEntry]:
    """Every CPU's entries in timestamp order; on a tie the lower CPU first (the kernel's
    iterator takes the strictly smallest timestamp, scanning CPUs in order)."""
    streams = [_keyed(cpu, evs) for cpu, evs in per_cpu]
    for _ts, cpu, _i, ev in heapq.merge(*streams):
        yield parse_entry(cpu, ev)


def _keyed(cpu: int, events: Iterable[RingBufferEvent]) -> Iterator[tuple[int, int, int, RingBufferEvent]]:
    for i, ev in enumerate(events):
        yield ev.ts, cpu, i, ev


def context_flags(pc: int) -> int:
    """The trace_flag_type bits that preempt_count implies (tracing_gen_ctx)."""
    flags = NMI if pc & 0x00F00000 else 0
    flags |= HARDIRQ if pc & 0x000F0000 else 0
    flags |= SOFTIRQ if pc & 0x100 else 0
    return flags | (BH_OFF if pc & 0xFE00 else 0)


def lat_fmt(flags: int, preempt_count: int) -> str:
    """The five latency columns (trace_print_lat_fmt)."""
    irqs_off = ("D" if flags & BH_OFF else "d") if flags & IRQS_OFF else ("b" if flags & BH_OFF else ".")
    nr = flags & (NEED_RESCHED | NEED_RESCHED_LAZY | PREEMPT_RESCHED)
    need = {NEED_RESCHED | NEED_RESCHED_LAZY | PREEMPT_RESCHED: "B", NEED_RESCHED | PREEMPT_RESCHED: "N",
            NEED_RESCHED_LAZY | PREEMPT_RESCHED: "L", NEED_RESCHED | NEED_RESCHED_LAZY: "b",
            NEED_RESCHED: "n", PREEMPT_RESCHED: "p", NEED_RESCHED_LAZY: "l"}.get(nr, ".")
    nmi, hard, soft = flags & NMI, flags & HARDIRQ, flags & SOFTIRQ
    hs = ("Z" if hard else "z") if nmi else ("H" if hard and soft else "h" if hard else "s" if soft else ".")
    return irqs_off + need + hs + _nibble(preempt_count & 0xF) + _nibble(preempt_count >> 4 & 0xF)


def trace_find_mark(ns: int) -> str:
    """The mark for a gap or duration of ``ns``: ``$`` over 1 s ... ``+`` over 10 us, else space."""
    return next((m for limit, m in MARKS if ns > limit), " ")


def raw_data_text(e: TraceEntry) -> str:
    """trace_raw_data: ``# <id in hex> buf:`` then every byte of the entry after the id."""
    return f"# {struct.unpack_from('<I', e.body, 0)[0]:x} buf:" + "".join(f" {b:02x}" for b in e.body[4:]) + "\n"


def _nibble(v: int) -> str:
    return f"{v:x}" if v else "."


class TraceFormatter:
    """Formats entries as the ``trace`` and ``trace_pipe`` files show them.

    ``options`` is the set of trace options that are on (``print-parent``, ``sym-offset``,
    ``sym-addr``, ``irq-info``, ``context-info``, ``record-tgid``, ``raw``, ``verbose``...);
    ``comm(pid)`` gives a saved command name or None, ``tgid(pid)`` a saved tgid or 0;
    ``in_ns`` says whether the clock counts nanoseconds (else timestamps print raw)."""

    def __init__(self, lookup: Symbolizer, comm: Callable[[int], str | None],
                 options: set[str], in_ns: bool = True, time_start: int = 0,
                 tgid: Callable[[int], int] | None = None) -> None:
        self.lookup, self.comm, self.options, self.in_ns = lookup, comm, options, in_ns
        self.tgid = tgid or (lambda pid: 0)     # trace_find_tgid: 0 = not recorded
        self.time_start = time_start        # the buffer's last reset: latency times count from it

    # ---- symbols (seq_print_ip_sym) ----------------------------------------------------
    def sym(self, ip: int) -> str:
        if not ip:
            return "0"
        s = self.lookup(ip)
        if s is None:
            text = f"0x{ip:08x}"
        elif "sym-offset" in self.options:
            text = f"{s[0]}+0x{s[1]:x}/0x{s[2]:x}"
        else:
            text = s[0]
        if "sym-addr" in self.options:
            text += f" <{ip:016x}>"
        return text

    def sym_name(self, ip: int) -> str:
        """%ps: the bare symbol name (``0x...`` if unknown)."""
        s = self.lookup(ip)
        return s[0] if s is not None else f"0x{ip:x}"

    # ---- context columns ----------------------------------------------------------------
    def task(self, pid: int) -> str:
        if pid == 0:
            return "<idle>"
        return self.comm(pid) or "<...>"

    def time(self, ts: int) -> str:
        if self.in_ns:
            us = (ts + 500) // 1000
            return f" {us // 1000000:5d}.{us % 1000000:06d}"
        return f" {ts:12d}"

    def context(self, e: TraceEntry) -> str:
        """trace_print_context: task-pid, [tgid], [cpu], latency flags, timestamp, ': '."""
        out = f"{self.task(e.pid):>16s}-{e.pid:<7d} "
        if "record-tgid" in self.options:
            tgid = self.tgid(e.pid)
            out += f"({tgid:7d}) " if tgid else "(-------) "
        out += f"[{e.cpu:03d}] "
        if "irq-info" in self.options:
            out += self.lat(e)
        return out + self.time(e.ts) + ": "

    @staticmethod
    def lat(e: TraceEntry) -> str:
        return lat_fmt(e.flags, e.preempt_count)

    def lat_context(self, e: TraceEntry, next_ts: int, idx: int) -> str:
        """trace_print_lat_context (the latency-format option): task, CPU and flags, then the
        time since the buffer was reset and a mark for the gap to the next entry."""
        task = self.task(e.pid)
        abs_ts, rel_ts = e.ts - self.time_start, next_ts - e.ts
        if self.in_ns:
            abs_ts, rel_ts = (abs_ts + 500) // 1000, (rel_ts + 500) // 1000
        if "verbose" in self.options:
            out = f"{task:>16s} {e.pid:7d} {e.cpu:3d} {e.flags:d} {e.preempt_count & 0xF:08x} {idx:08x} "
            if self.in_ns:
                return out + (f"[{(e.ts + 500) // 1000:08x}] {abs_ts // 1000}.{abs_ts % 1000:03d}ms "
                              f"(+{rel_ts // 1000}.{rel_ts % 1000:03d}ms): ")
            return out + f"[{e.ts:016x}] {abs_ts} (+{rel_ts}): "
        out = f"{task[:8]:>8s}-{e.pid:<7d} {e.cpu:3d}" + self.lat(e)
        if self.in_ns:
            return out + f" {abs_ts:4d}us{trace_find_mark(rel_ts * 1000)}: "
        return out + f" {abs_ts:4d}: "

    # ---- lines --------------------------------------------------------------------------
    def line(self, e: TraceEntry, next_ts: int | None = None, idx: int = 0) -> str:
        """One entry, ending in a newline (print_trace_line); ``next_ts`` is the time of the
        entry printed after it (the latency format marks the gap), ``idx`` its index."""
        if "raw" in self.options:
            return self.raw_line(e)
        prefix = ""
        if "context-info" in self.options:
            if "latency-format" in self.options:
                prefix = self.lat_context(e, e.ts if next_ts is None else next_ts, idx)
            else:
                prefix = self.context(e)
        return prefix + self.event_text(e)

    def lines(self, entries: list[TraceEntry]) -> Iterator[str]:
        """Every entry's line, each knowing the next one's time."""
        for i, e in enumerate(entries):
            yield self.line(e, entries[i + 1].ts if i + 1 < len(entries) else None, i)

    def event_text(self, e: TraceEntry) -> str:
        """The event's own part of a line (after the context columns), newline included."""
        if e.type == TRACE_FN:
            ip, parent = _fn.unpack_from(e.body, 0)
            text = self.sym(ip)
            if "print-parent" in self.options and parent:
                text += " <-" + self.sym(parent)
            return text + "\n"
        if e.type == TRACE_STACK:
            size = struct.unpack_from("<i", e.body, 0)[0]
            ips = struct.unpack_from(f"<{size}Q", e.body, 8)
            return "<stack trace>\n" + "".join(f" => {self.sym(ip)}\n" for ip in ips if ip)
        if e.type == TRACE_PRINT:
            ip = struct.unpack_from("<Q", e.body, 0)[0]
            msg = e.body[8:].split(b"\0", 1)[0].decode("utf-8", "replace")
            return f"{self.sym(ip)}: {msg}" + ("" if msg.endswith("\n") else "\n")
        if e.type == TRACE_RAW_DATA:
            return raw_data_text(e)
        if e.type in EVENT_PRINTERS:
            name, printer = EVENT_PRINTERS[e.type]
            return f"{name}: {printer(e.body)}\n"
        return f"Unknown type {e.type}\n"

    def raw_line(self, e: TraceEntry) -> str:
        """The ``raw`` option: ``<pid> <cpu> <ts> `` then the event's raw fields."""
        out = f"{e.pid} {e.cpu} {e.ts} "
        if e.type == TRACE_FN:
            ip, parent = _fn.unpack_from(e.body, 0)
            return out + f"{ip:x} {parent:x}\n"
        if e.type == TRACE_RAW_DATA:
            return out + raw_data_text(e)
        return out + f"type:{e.type}\n"

    # ---- headers --------------------------------------------------------------------------
    @staticmethod
    def latency_header(tracer: str, counts: tuple[int, int], online_cpus: int, cpu: int = 0,
                       task: tuple[str, int] = ("", 0)) -> str:
        """print_trace_header: the block a latency-format trace opens with; ``cpu`` and
        ``task`` are the buffer's (a snapshot's: who took it; otherwise CPU 0 and no task)."""
        return (f"# {tracer} latency trace v1.1.5 on {UTS_RELEASE}\n"
                "# " + "-" * 68 + "\n"
                f"# latency: 0 us, #{counts[0]}/{counts[1]}, CPU#{cpu} | (M:{PREEMPT_MODEL} VP:0, KP:0, "
                f"SP:0 HP:0 #P:{online_cpus})\n"
                "#    -----------------\n"
                f"#    | task: {task[0][:16]}-{task[1]} (uid:0 nice:0 policy:0 rt_prio:0)\n"
                "#    -----------------\n"
                "#\n")

    @staticmethod
    def event_info(in_buffer: int, written: int, online_cpus: int) -> str:
        return (f"# entries-in-buffer/entries-written: {in_buffer}/{written}   #P:{online_cpus}\n"
                "#\n")

    def help_header(self, in_buffer: int, written: int, online_cpus: int) -> str:
        """trace_default_header for a non-latency trace (print_func_help_header[_irq])."""
        if "context-info" not in self.options or "verbose" in self.options:
            return ""
        tgid = "record-tgid" in self.options
        info = self.event_info(in_buffer, written, online_cpus)
        if "irq-info" not in self.options:
            return info + (f"#           TASK-PID    {'   TGID   ' if tgid else ''} CPU#     TIMESTAMP  FUNCTION\n"
                           f"#              | |      {'     |    ' if tgid else ''}   |         |         |\n")
        pad = " " * (12 if tgid else 2)
        tg, tb = ("     TGID   ", "       |    ") if tgid else ("  ", "  ")
        lines = ["  _-----=> irqs-off/BH-disabled", " / _----=> need-resched",
                 "| / _---=> hardirq/softirq", "|| / _--=> preempt-depth",
                 "||| / _-=> migrate-disable", "|||| /     delay"]
        out = info + "".join(f"#                            {pad}{s}\n" for s in lines)
        return out + (f"#           TASK-PID  {tg} CPU#  |||||  TIMESTAMP  FUNCTION\n"
                      f"#              | |    {tb}   |   |||||     |         |\n")


LAT_HELP = ("#                    _------=> CPU#            \n"
            "#                   / _-----=> irqs-off/BH-disabled\n"
            "#                  | / _----=> need-resched    \n"
            "#                  || / _---=> hardirq/softirq \n"
            "#                  ||| / _--=> preempt-depth   \n"
            "#                  |||| / _-=> migrate-disable \n"
            "#                  ||||| /     delay           \n"
            "#  cmd     pid     |||||| time  |   caller     \n"
            "#     \\   /        ||||||  \\    |    /       \n")


def format_trace(tracer: str, fmt: TraceFormatter, entries: Iterable[TraceEntry],
                 counts: tuple[int, int], online_cpus: int, annotate_cpus: bool = False,
                 lat_owner: tuple[int, tuple[str, int]] = (0, ("", 0))) -> str:
    """The whole ``trace`` file: ``# tracer:`` line, header, lines. ``annotate_cpus`` adds the
    ``##### CPU N buffer started ####`` lines (the kernel does when events were overrun).
    With ``latency-format`` the header is print_trace_header's (naming ``lat_owner``'s CPU
    and task) and the help block, or nothing for an empty buffer."""
    entries = list(entries)
    out = [f"# tracer: {tracer}\n#\n"]
    if "latency-format" not in fmt.options:
        out.append(fmt.help_header(counts[0], counts[1], online_cpus))
    elif "context-info" in fmt.options and entries:
        out.append(fmt.latency_header(tracer, counts, online_cpus, *lat_owner))
        out.append("" if "verbose" in fmt.options else LAT_HELP)
    started: set[int] = set()
    for idx, line in enumerate(fmt.lines(entries)):
        e = entries[idx]
        if annotate_cpus and "annotate" in fmt.options and e.cpu not in started:
            started.add(e.cpu)
            if idx > 0:
                out.append(f"##### CPU {e.cpu} buffer started ####\n")
        out.append(line)
    return "".join(out)
