"""Trace events (kernel/trace/trace_events.c): the guest's tracepoints sched_switch,
sched_wakeup, irq_handler_entry/exit and softirq_entry/exit with their ``format`` (the
kernel's field layout), their trace lines, and the files that enable them per trace array (``events/enable``,
``events/<system>/enable``, ``events/<system>/<event>/{enable,format,id}``, ``set_event``).

An event is recorded by a guest probe (arch/x86/events_64.py) that the guest's
trace_<event>() calls while at least one trace array has it enabled; the probe pointer and
the list of arrays are published with single pointer stores.
"""
from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .arch.x86.events_64 import (IRQ_HANDLER_ENTRY_FILL, IRQ_HANDLER_EXIT_FILL, IRQ_NAME_MAX,
                                 SCHED_SWITCH_FILL, SCHED_WAKEUP_FILL, SOFTIRQ_FILL,
                                 TR_EVENT_SOFT, emit_event_pid_bits, emit_probe)
from .arch.x86.asm import CodeBuilder
from . import event_enable  # noqa: F401  (registers enable_event/disable_event)
from .errors import FtraceError
from .event_pid import EventPids, register_event_pid_files
from .trace_output import EVENT_PRINTERS

if TYPE_CHECKING:
    from emu.pseudofs import PseudoFS

    from .trace import TraceArray, Tracing

SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED",
                 "HRTIMER", "RCU")
TASK_STATES = ((0x01, "S"), (0x02, "D"), (0x04, "T"), (0x08, "t"), (0x10, "X"), (0x20, "Z"),
               (0x40, "P"), (0x80, "I"))
TASK_REPORT_MAX = 0x100


def _comm(body: bytes, off: int) -> str:
    return body[off:off + 16].split(b"\0", 1)[0].decode("ascii", "replace")


def _sched_switch(body: bytes) -> str:
    prev_pid, prev_prio, prev_state = struct.unpack_from("<iiq", body, 16)
    next_pid, next_prio = struct.unpack_from("<ii", body, 48)
    st = prev_state & (TASK_REPORT_MAX - 1)
    state = "|".join(c for bit, c in TASK_STATES if st & bit) if st else "R"
    return (f"prev_comm={_comm(body, 0)} prev_pid={prev_pid} prev_prio={prev_prio} "
            f"prev_state={state}{'+' if prev_state & TASK_REPORT_MAX else ''} ==> "
            f"next_comm={_comm(body, 32)} next_pid={next_pid} next_prio={next_prio}")


def _sched_wakeup(body: bytes) -> str:
    pid, prio, cpu = struct.unpack_from("<iii", body, 16)
    return f"comm={_comm(body, 0)} pid={pid} prio={prio} target_cpu={cpu:03d}"


def _softirq(body: bytes) -> str:
    vec = struct.unpack_from("<I", body, 0)[0]
    name = SOFTIRQ_NAMES[vec] if vec < len(SOFTIRQ_NAMES) else str(vec)
    return f"vec={vec} [action={name}]"


def _irq_handler_entry(body: bytes) -> str:
    irq, loc = struct.unpack_from("<iI", body, 0)
    start = (loc & 0xFFFF) - 8                 # __data_loc offsets count from the record
    name = body[start:start + (loc >> 16)].split(b"\0", 1)[0].decode("ascii", "replace")
    return f"irq={irq} name={name}"


def _irq_handler_exit(body: bytes) -> str:
    irq, ret = struct.unpack_from("<ii", body, 0)
    return f"irq={irq} ret={'handled' if ret else 'unhandled'}"


_SCHED_FIELDS = lambda p: [(f"char {p}comm[16]", 0, 16, 0), (f"pid_t {p}pid", 16, 4, 1),  # noqa: E731
                           (f"int {p}prio", 20, 4, 1)]
_SOFTIRQ_PRINT = ('"vec=%u [action=%s]", REC->vec, __print_symbolic(REC->vec, '
                  + ", ".join(f'{{ {i}, "{n}" }}' for i, n in enumerate(SOFTIRQ_NAMES)) + ")")


@dataclass(frozen=True)
class TraceEvent:
    """One event: where its tracepoint is, its id and payload, format and printer."""

    system: str
    name: str
    id: int
    length: int                          # payload bytes, struct trace_entry included
    fields: list[tuple[str, int, int, int]]   # (declaration, offset, size, signed)
    print_fmt: str
    printer: Callable[[bytes], str]
    fill: str                            # guest code filling the payload (events_64)


def _shift(fields: list[tuple[str, int, int, int]], by: int) -> list[tuple[str, int, int, int]]:
    return [(d, o + by, s, g) for d, o, s, g in fields]


TRACE_EVENTS = [
    TraceEvent("sched", "sched_switch", 316, 64,
               _shift(_SCHED_FIELDS("prev_"), 8) + [("long prev_state", 32, 8, 1)]
               + _shift(_SCHED_FIELDS("next_"), 40),
               '"prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s '
               'next_pid=%d next_prio=%d", REC->prev_comm, REC->prev_pid, REC->prev_prio, '
               '(REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | '
               '0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1)) ? '
               '__print_flags(REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | '
               '0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1), '
               '"|", { 0x00000001, "S" }, { 0x00000002, "D" }, { 0x00000004, "T" }, '
               '{ 0x00000008, "t" }, { 0x00000010, "X" }, { 0x00000020, "Z" }, '
               '{ 0x00000040, "P" }, { 0x00000080, "I" }) : "R", REC->prev_state & '
               '(((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | '
               '0x00000020 | 0x00000040) + 1) << 1) ? "+" : "", REC->next_comm, REC->next_pid, '
               'REC->next_prio', _sched_switch, SCHED_SWITCH_FILL),
    TraceEvent("sched", "sched_wakeup", 318, 36,
               _shift(_SCHED_FIELDS(""), 8) + [("int target_cpu", 32, 4, 1)],
               '"comm=%s pid=%d prio=%d target_cpu=%03d", REC->comm, REC->pid, REC->prio, '
               'REC->target_cpu', _sched_wakeup, SCHED_WAKEUP_FILL),
    TraceEvent("irq", "irq_handler_entry", 139, 16 + IRQ_NAME_MAX,
               [("int irq", 8, 4, 1), ("__data_loc char[] name", 12, 4, 0)],
               '"irq=%d name=%s", REC->irq, __get_str(name)', _irq_handler_entry,
               IRQ_HANDLER_ENTRY_FILL),
    TraceEvent("irq", "irq_handler_exit", 138, 16, [("int irq", 8, 4, 1), ("int ret", 12, 4, 1)],
               '"irq=%d ret=%s", REC->irq, REC->ret ? "handled" : "unhandled"', _irq_handler_exit,
               IRQ_HANDLER_EXIT_FILL),
    TraceEvent("irq", "softirq_entry", 137, 12, [("unsigned int vec", 8, 4, 0)], _SOFTIRQ_PRINT,
               _softirq, SOFTIRQ_FILL),
    TraceEvent("irq", "softirq_exit", 136, 12, [("unsigned int vec", 8, 4, 0)], _SOFTIRQ_PRINT,
               _softirq, SOFTIRQ_FILL),
]
BY_NAME = {e.name: e for e in TRACE_EVENTS}


def find_event(system: str, name: str) -> TraceEvent | None:
    """find_event_file: the event called ``system:name`` exactly."""
    ev = BY_NAME.get(name)
    return ev if ev is not None and ev.system == system else None

for _ev in TRACE_EVENTS:
    EVENT_PRINTERS[_ev.id] = (_ev.name, _ev.printer)


def event_format(ev: TraceEvent) -> str:
    """events/<system>/<event>/format."""
    from .trace_files import COMMON_FIELDS
    body = "".join(f"\tfield:{d};\toffset:{o};\tsize:{s};\tsigned:{g};\n" for d, o, s, g in ev.fields)
    return f"name: {ev.name}\nID: {ev.id}\nformat:\n{COMMON_FIELDS}{body}\nprint fmt: {ev.print_fmt}\n"


@dataclass
class EventFile:
    """struct trace_event_file's flags for one (trace array, event): ENABLED is "the array
    is in the event's list"; SOFT_MODE is held by ``sm_ref`` enable_event/disable_event
    commands; SOFT_DISABLED keeps a registered event from recording."""

    sm_ref: int = 0
    soft_disabled: bool = False


class TraceEvents:
    """The events of one machine: their guest probes, and which trace arrays record each."""

    def __init__(self, tracing: "Tracing", b: CodeBuilder) -> None:
        self.tracing, self.m = tracing, tracing.m
        self.enabled: dict[str, list["TraceArray"]] = {e.name: [] for e in TRACE_EVENTS}
        self.files: dict[tuple["TraceArray", str], EventFile] = {}
        self.pids: dict["TraceArray", EventPids] = {}
        self.list_ptrs: dict[str, int] = {}
        self.probes: dict[str, int] = {}
        slots = self.m.execmem.alloc(8 * len(TRACE_EVENTS), align=64, executable=False)
        tracing.pages.write(slots, bytes(8 * len(TRACE_EVENTS)))
        emit_event_pid_bits(b)
        for i, ev in enumerate(TRACE_EVENTS):
            self.list_ptrs[ev.name] = slots + 8 * i
            pids = {"sched_switch": "switch", "sched_wakeup": "wakeup"}.get(ev.name, "current")
            emit_probe(b, ev.name, ev.id, ev.length, ev.fill, slots + 8 * i, i, pids)
            self.probes[ev.name] = b.labels[f"probe_{ev.name}"]

    def file(self, tr: "TraceArray", name: str) -> EventFile:
        return self.files.setdefault((tr, name), EventFile())

    def is_enabled(self, tr: "TraceArray", name: str) -> bool:
        """EVENT_FILE_FL_ENABLED: the tracepoint is registered for ``tr`` (maybe soft-disabled)."""
        return tr in self.enabled[name]

    def enable_text(self, tr: "TraceArray", name: str) -> str:
        """events/<system>/<event>/enable as event_enable_read prints it: ``1`` recording,
        ``0`` not, ``*`` appended in soft mode (``0*``: registered by an enable_event or
        disable_event command, soft-disabled)."""
        f = self.file(tr, name)
        text = "1" if self.is_enabled(tr, name) and not f.soft_disabled else "0"
        return text + ("*" if f.soft_disabled or f.sm_ref else "") + "\n"

    def ftrace_event_enable_disable(self, tr: "TraceArray", name: str, enable: bool,
                                    soft_disable: bool = False) -> None:
        """__ftrace_event_enable_disable: ``soft_disable`` is an enable_event/disable_event
        command taking (enable) or dropping (not) soft mode; without it, a write of 1 or 0.
        In soft mode a 0 only soft-disables: the tracepoint stays registered so that the
        command can still turn the event on."""
        f = self.file(tr, name)
        if not enable:
            if soft_disable:
                f.sm_ref -= 1
                if f.sm_ref > 0:
                    return
                disable = f.soft_disabled
            else:
                disable = not f.sm_ref
            if disable and self.is_enabled(tr, name):
                self.set_enabled(tr, name, False)
            self.set_soft_disabled(tr, name, bool(f.sm_ref))
            return
        if not soft_disable:
            self.set_soft_disabled(tr, name, False)
        else:
            f.sm_ref += 1
            if f.sm_ref > 1:
                return
        if not self.is_enabled(tr, name):
            if soft_disable:
                self.set_soft_disabled(tr, name, True)
            self.set_enabled(tr, name, True)

    def set_soft_disabled(self, tr: "TraceArray", name: str, on: bool) -> None:
        """EVENT_FILE_FL_SOFT_DISABLED, in the byte the probe tests (one store)."""
        self.file(tr, name).soft_disabled = on
        index = next(i for i, e in enumerate(TRACE_EVENTS) if e.name == name)
        self.tracing.pages.write(tr.va + TR_EVENT_SOFT + index, bytes([on]))

    def forget(self, tr: "TraceArray") -> None:
        """A trace array being removed: out of every event's list, its flags and pid lists
        dropped."""
        for name in self.enabled:
            self.set_enabled(tr, name, False)
            self.files.pop((tr, name), None)
        self.pids.pop(tr).clear()

    def set_enabled(self, tr: "TraceArray", name: str, on: bool) -> None:
        """Record event ``name`` into ``tr`` or stop: publish the new list of arrays, then
        the tracepoint's probe (NULL once nobody listens). The list it replaces is freed
        after a grace period (call_rcu): a vCPU may sit inside the probe, between two slices,
        holding it for any number of host-side changes."""
        arrays = self.enabled[name]
        if (tr in arrays) == on:
            return
        if on and self.tracing.arrays.get(tr.name) is not tr:
            # A file opened before its instance's rmdir, written after: the array is gone.
            raise FtraceError(errno.ENODEV, f"instance {tr.name} was removed")
        if on:
            tr.expand()                       # as tracing_update_buffers on event enable
        arrays.append(tr) if on else arrays.remove(tr)
        block = 0
        if arrays:
            block = self.m.execmem.alloc(8 + 8 * len(arrays), executable=False)
            self.tracing.pages.write(block, struct.pack(f"<{1 + len(arrays)}Q", len(arrays),
                                                        *[a.va for a in arrays]))
        ptr = self.list_ptrs[name]
        old = struct.unpack("<Q", self.tracing.pages.read(ptr, 8))[0]
        self.tracing.pages.write(ptr, struct.pack("<Q", block))
        self.publish_tracepoint(name)
        rcu = self.tracing.ft.x86.rcu
        rcu.call_rcu([old])
        rcu.poll()

    def publish_tracepoint(self, name: str) -> None:
        """__tracepoint_<name>: the event's probe while an array records it, else NULL; for
        sched_switch, fgraph's sleep-time probe (which calls the event's probe on) while
        ``sleep-time`` is off. One aligned store."""
        probe = self.probes[name] if self.enabled[name] else 0
        if name == "sched_switch" and self.tracing.graph_sleep_probe_on:
            probe = self.tracing.graph_sleep_probe
        self.m.write(self.m.symbol_address(f"__tracepoint_{name}"), struct.pack("<Q", probe))

    def state(self) -> tuple:
        return ({k: list(v) for k, v in self.enabled.items()},
                {k: EventFile(f.sm_ref, f.soft_disabled) for k, f in self.files.items()},
                {tr: (p, p.state()) for tr, p in self.pids.items()})

    def restore(self, st: tuple) -> None:
        enabled, files, pids = st
        self.enabled = {k: list(v) for k, v in enabled.items()}
        self.files = {k: EventFile(f.sm_ref, f.soft_disabled) for k, f in files.items()}
        for gone in set(self.pids) - set(pids):
            self.pids[gone].restore((frozenset(), frozenset()))
        self.pids = {tr: p for tr, (p, _) in pids.items()}
        for p, pst in pids.values():
            p.restore(pst)


def _enable_text(flags: list[bool]) -> str:
    return ("1" if all(flags) else "0" if not any(flags) else "X") + "\n"


def _parse_bool(text: str) -> bool:
    word = text.strip()
    if word not in ("0", "1"):
        raise FtraceError(errno.EINVAL, f"expected 0 or 1, got {text!r}")
    return word == "1"


def set_event(events: TraceEvents, tr: "TraceArray", text: str) -> None:
    """set_event (ftrace_set_clr_event): per token ``[!]system:event``, where an empty or
    ``*`` part matches any, or ``[!]name``: every event of the system ``name`` or the event
    ``name``. EINVAL if a token matched nothing."""
    for token in text.split():
        on = not token.startswith("!")
        token = token.removeprefix("!")
        system, sep, name = token.partition(":")
        if sep:
            hits = [e for e in TRACE_EVENTS if system in ("", "*", e.system) and name in ("", "*", e.name)]
        else:
            hits = [e for e in TRACE_EVENTS if token in (e.name, e.system)]
        if not hits:
            raise FtraceError(errno.EINVAL, f"no event matches {token!r}")
        for e in hits:
            events.ftrace_event_enable_disable(tr, e.name, on)


def register_event_files(events: TraceEvents, tr: "TraceArray", fs: "PseudoFS") -> None:
    """events/..., set_event, set_event_pid and set_event_notrace_pid of one trace array."""
    events.pids[tr] = EventPids(tr)
    register_event_pid_files(events.pids[tr], fs)
    def enabled(names: list[str]) -> list[bool]:
        return [events.is_enabled(tr, n) for n in names]

    def setter(names: list[str]) -> Callable[[str], None]:
        def write(text: str) -> None:
            on = _parse_bool(text)
            for n in names:
                events.ftrace_event_enable_disable(tr, n, on)
        return write

    everything = [e.name for e in TRACE_EVENTS]
    fs.register_text("events/enable", lambda: _enable_text(enabled(everything)), setter(everything), mode=0o644)
    for system in sorted({e.system for e in TRACE_EVENTS}):
        names = [e.name for e in TRACE_EVENTS if e.system == system]
        fs.register_text(f"events/{system}/enable", lambda n=names: _enable_text(enabled(n)),
                         setter(names), mode=0o644)
        for n in names:
            ev, d = BY_NAME[n], f"events/{system}/{n}"
            fs.register_text(f"{d}/enable", lambda n=n: events.enable_text(tr, n), setter([n]), mode=0o644)
            fs.register_text(f"{d}/format", lambda ev=ev: event_format(ev))
            fs.register_text(f"{d}/id", lambda ev=ev: f"{ev.id}\n")
    fs.register_text("set_event",
                     lambda: "".join(f"{e.system}:{e.name}\n" for e in TRACE_EVENTS if events.is_enabled(tr, e.name)),
                     lambda t: set_event(events, tr, t), mode=0o644,
                     truncate=lambda: [events.ftrace_event_enable_disable(tr, n, False) for n in everything])

