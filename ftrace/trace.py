"""Trace arrays (kernel/trace/trace.c): a ring buffer, a current tracer, tracing_on, options,
the trace clock and tracing_cpumask, for the top level and for each instance; ``m.tracing``.

A trace array is also a guest struct (TR_* in arch/x86/trace_64.py) that the tracers' guest
callbacks read through their ops' private pointer; the host changes it with single aligned
stores between guest instructions. The top level's ring buffer is allocated at minimum size
(two pages per CPU) when first needed and expanded to ``trace_buf_size`` the first time a
tracer runs; an instance's is ``trace_buf_size`` from the start, as the kernel does.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any

from emu import memlayout as L

from .arch.x86.fgraph_64 import TR_MAX_DEPTH, TR_THRESH
from .arch.x86.trace_64 import (CLOCK_COUNTER, CLOCK_GLOBAL, CLOCK_LOCAL, CLOCK_MONO,
                                CLOCK_UPTIME, TR_BUFFERS, TR_CLOCK, TR_CPUMASK, TR_NO_PIDS,
                                TR_ON, TR_PIDS, function_trace_thunk)
from .errors import FtraceError
from .ring_buffer import RB_NEST, RingBuffer
from .ring_buffer_format import BUF_PAGE_SIZE, TRACE_BUF_SIZE_DEFAULT, nr_pages_for
from .trace_output import (TraceEntry, TraceFormatter,
                           format_trace, merge_by_time)
from .trace_marker import HostEvents
from .trace_snapshot import TraceSnapshot

if TYPE_CHECKING:
    from emu import Machine

    from .instance import FtraceInstance
    from .tracing import Tracing

TRACE_CLOCKS = {"local": CLOCK_LOCAL, "global": CLOCK_GLOBAL, "counter": CLOCK_COUNTER,
                "uptime": CLOCK_UPTIME, "mono": CLOCK_MONO}
CLOCK_IN_NS = {"local": True, "global": True, "counter": False, "uptime": False, "mono": True}
DESCRIPTORS = 0x400          # offset of the ring_buffer_per_cpu array in a trace array's page
SNAPSHOT_DESCRIPTORS = 0x800  # and of the other one (the live and snapshot buffers swap them)

# Trace options (trace.h TRACE_FLAGS) in the kernel's listing order, with their defaults.
TRACE_OPTIONS: dict[str, bool] = {
    "print-parent": True, "sym-offset": False, "sym-addr": False, "verbose": False,
    "raw": False, "hex": False, "bin": False, "block": False, "fields": False,
    "trace_printk": True, "annotate": True, "userstacktrace": False, "sym-userobj": False,
    "printk-msg-only": False, "context-info": True, "latency-format": False,
    "record-cmd": True, "record-tgid": False, "overwrite": True, "disable_on_free": False,
    "irq-info": True, "markers": True, "event-fork": False, "pause-on-trace": False,
    "hash-ptr": True, "function-trace": True, "function-fork": False, "display-graph": False,
    "stacktrace": False,
}


# Tracer options whose effect is machine-wide (fgraph_graph_time, fgraph_sleep_time): one
# value for every trace array, as the kernel keeps one set of flags per tracer.
GLOBAL_TRACER_OPTIONS = ("graph-time", "sleep-time")


def tracer_options(tracer: str | None = None) -> dict[str, bool]:
    """The tracers' own options with their defaults: one tracer's, or every tracer's."""
    from .trace_functions import FUNC_OPTIONS
    from .trace_functions_graph import GRAPH_OPTIONS
    per = {"function": FUNC_OPTIONS, "function_graph": GRAPH_OPTIONS}
    return per.get(tracer, {}) if tracer is not None else FUNC_OPTIONS | GRAPH_OPTIONS


class Tracer:
    """struct tracer: a name and what starting and stopping it does to a trace array."""

    name = "nop"

    def init(self, tr: "TraceArray") -> None:
        """Start tracing into ``tr``."""

    def reset(self, tr: "TraceArray") -> None:
        """Stop tracing into ``tr``."""

    def set_flag(self, tr: "TraceArray", name: str, on: bool) -> None:
        """One of the tracer's own options is about to change (tracer->set_flag)."""


class TraceArray(HostEvents):
    """One trace array: the top level (``name`` "") or an instance. ``inst`` is the ftrace
    side the tracefs files set (filters, pids, cpumask, tr->ops); this is the tracing side,
    and the TraceActions the function commands (traceon, dump, ...) act through."""

    def __init__(self, tracing: "Tracing", inst: "FtraceInstance") -> None:
        self.tracing, self.m, self.inst, self.name = tracing, tracing.m, inst, inst.name
        self.va = self.m.execmem.alloc(4096, align=4096, executable=False)
        self.pages = tracing.pages
        self.buffer: RingBuffer | None = None
        self.expanded = bool(self.name)         # trace_array_create: instances start expanded
        self.snap = TraceSnapshot(self, (self.va + DESCRIPTORS, self.va + SNAPSHOT_DESCRIPTORS))
        self.tracer: Tracer = tracing.tracers["nop"]
        self.options = {k for k, on in (TRACE_OPTIONS | tracer_options()).items() if on}
        top = tracing.arrays.get("")
        if top is not None:
            self.options = self.options - set(GLOBAL_TRACER_OPTIONS) | top.options & set(GLOBAL_TRACER_OPTIONS)
        self.clock = "local"
        self.time_start = 0                     # array_buffer.time_start: the last reset
        self._on = True
        self.stop_count = 0                     # tracing_stop_tr nesting (pause-on-trace)
        self.refs = 0                           # open files reading its buffers (tr->ref)
        # tr->ops: the function tracer registers it with this array's guest callback.
        self.ops = inst.ops
        self.callback = self._thunk(tracing.function_trace_entry(self.clock))
        self.graph_callback = self._thunk(tracing.function_graph_entry_for(self.clock))
        self.stack_callback = self._thunk(tracing.function_stack_trace_call)
        self.graph_used = False
        raw = bytearray(4096)
        struct.pack_into("<QII", raw, TR_BUFFERS, self.va + DESCRIPTORS, 1, CLOCK_LOCAL)
        self.pages.write(self.va, bytes(raw))
        for what in ("tracing_cpumask", "pids", "no_pids"):
            self._inst_changed(what)
        inst.listeners.append(self._inst_changed)
        inst.trace = self

    # ---- the guest struct -------------------------------------------------------------
    def _thunk(self, target: int) -> int:
        """This array's entry to a shared guest callback (r8 = this trace_array)."""
        va = self.m.execmem.alloc(32)
        self._point_thunk(va, target)
        return va

    def _point_thunk(self, va: int, target: int) -> None:
        """(Re)write the thunk at ``va``; between two guest instructions, so a vCPU takes
        the old target or the new one, whole."""
        code = function_trace_thunk(va, self.va, target)
        self.pages.write(va, code)
        self.m.invalidate_code(va, len(code))

    def sync_graph_settings(self) -> None:
        """max_graph_depth, tracing_thresh and the funcgraph options the guest code reads."""
        from .trace_functions_graph import graph_flags
        self.pages.write(self.va + TR_THRESH, struct.pack("<Q", self.tracing.tracing_thresh))
        self.pages.write(self.va + TR_MAX_DEPTH, struct.pack(
            "<II", self.tracing.max_graph_depth, graph_flags(self)))

    def _store32(self, off: int, v: int) -> None:
        self.pages.write(self.va + off, struct.pack("<I", v))

    @property
    def tracing_on(self) -> bool:
        """tracer_tracing_is_on: recording into the ring buffer (the hooks stay in place)."""
        return self._on

    @tracing_on.setter
    def tracing_on(self, on: bool) -> None:
        self._on = bool(on)
        self._store_on()

    def _store_on(self) -> None:
        """What the guest writers read: tracing_on, unless a reader stopped recording."""
        self._store32(TR_ON, int(self._on and not self.stop_count))

    def tracing_stop(self) -> None:
        """tracing_stop_tr: recording pauses (``tracing_on`` still reads as set), nested."""
        self.stop_count += 1
        self._store_on()

    def tracing_start(self) -> None:
        """tracing_start_tr: the last of the nested stops ends, recording resumes."""
        self.stop_count = max(0, self.stop_count - 1)
        self._store_on()

    def set_clock(self, name: str) -> None:
        """trace_clock: one of TRACE_CLOCKS; the buffer is reset (timestamps of different
        clocks cannot be compared)."""
        if name not in TRACE_CLOCKS:
            raise FtraceError(errno.EINVAL, f"unknown trace clock {name!r}")
        self.clock = name
        self._store32(TR_CLOCK, TRACE_CLOCKS[name])
        self._point_thunk(self.callback, self.tracing.function_trace_entry(name))
        self._point_thunk(self.graph_callback, self.tracing.function_graph_entry_for(name))
        self.reset_buffer()
        self.snap.clear()

    def _inst_changed(self, what: str) -> None:
        """A file of the ftrace side changed: tracing_cpumask (CPUs outside it do not
        record), set_ftrace_pid / set_ftrace_notrace_pid (published as a new array with one
        pointer store; the array it replaces is freed after a grace period, call_rcu: a vCPU
        stopped inside the function tracer's pid_gate holds it for any number of changes)."""
        if what == "tracing_cpumask":
            self.pages.write(self.va + TR_CPUMASK, struct.pack("<Q", self.inst.tracing_cpumask))
        elif what in ("pids", "no_pids"):
            pids = sorted(getattr(self.inst, what))
            block = 0
            if pids:
                block = self.m.execmem.alloc(4 + 4 * len(pids), executable=False)
                self.pages.write(block, struct.pack(f"<I{len(pids)}I", len(pids), *pids))
            field = TR_PIDS if what == "pids" else TR_NO_PIDS
            old = struct.unpack("<Q", self.pages.read(self.va + field, 8))[0]
            self.pages.write(self.va + field, struct.pack("<Q", block))
            rcu = self.tracing.ft.x86.rcu
            rcu.call_rcu([old])
            rcu.poll()

    # ---- TraceActions: what the function commands do -----------------------------------
    def tracer_tracing_is_on(self) -> bool:
        return self.tracing_on

    def tracer_tracing_on(self) -> None:
        self.tracing_on = True

    def tracer_tracing_off(self) -> None:
        self.tracing_on = False

    def tracing_alloc_snapshot(self) -> None:
        """The snapshot command's registration: the snapshot buffer, if not there yet."""
        self.expand()
        self.snap.alloc()

    def tracing_snapshot(self, cpu: int) -> None:
        """tracing_snapshot_instance_cond, from the snapshot command on ``cpu``: swap the
        live and snapshot buffers; from an NMI, or with the snapshot freed, a message in
        the live buffer instead (and, freed, tracing stops)."""
        if self.tracing.ft.preempt_count(cpu) & L.NMI_MASK:
            self._printk(cpu, "*** SNAPSHOT CALLED FROM NMI CONTEXT ***\n",
                         "*** snapshot is being ignored        ***\n")
        elif not self.snap.allocated:
            self._printk(cpu, "*** SNAPSHOT NOT ALLOCATED ***\n", "*** stopping trace here!   ***\n")
            self.tracing_on = False
        else:
            self.snap.swap(cpu)

    def ftrace_dump(self, cpu: int | None) -> None:
        """ftrace_dump: the buffer (every CPU, or one) to the console log, consumed; a dump
        of every CPU also turns tracing off, as DUMP_ALL does."""
        log = self.tracing.ft.log_lines
        if cpu is None:
            self.tracing_on = False
        log.append("Dumping ftrace buffer:")
        log.append("---------------------------------")
        log.extend(self.consume(cpu).splitlines())
        log.append("---------------------------------")

    # ---- buffer --------------------------------------------------------------------------
    def ring_buffer(self) -> RingBuffer:
        """The buffer, allocated on first use (while nothing records: the descriptors are
        still zero, so no writer can reach it): at minimum size, or expanded already."""
        if self.buffer is None:
            size = TRACE_BUF_SIZE_DEFAULT if self.expanded else 1
            self.buffer = RingBuffer(self.m, self.va + DESCRIPTORS, len(self.m.cpus), size, self.pages)
            self.buffer.set_overwrite("overwrite" in self.options)
        return self.buffer

    def expand(self) -> None:
        """tracing_update_buffers: the default size the first time a tracer is used."""
        if not self.expanded:
            self._resize(TRACE_BUF_SIZE_DEFAULT, None)
        self.ring_buffer()

    def _resize(self, size: int, cpu: int | None) -> None:
        """Resize with recording off (ring_buffer_record_disable): the guest allocator the
        pages come from is itself traced."""
        self._store32(TR_ON, 0)
        try:
            self.quiesce_writers()
            self.ring_buffer().resize(size, cpu)
            self.snap.resize(cpu)
            self.expanded = True
        finally:
            self._store_on()

    def quiesce_writers(self) -> None:
        """Wait until no vCPU is in the middle of writing an event into this array's
        buffers (live or snapshot): none is in the tracers' guest code (where a writer
        holds a buffer pointer it loaded) and no interrupted write holds a nest flag."""
        bufs = [b for b in (self.buffer, self.snap.buffer) if b is not None]
        lo, hi = self.tracing.code_range

        def idle() -> bool:
            return (not any(lo <= c.rip() < hi for c in self.m.cpus) and
                    not any(struct.unpack("<I", self.pages.read(b.desc(c) + RB_NEST, 4))[0]
                            for b in bufs for c in range(b.ncpus)))
        if bufs and not idle():
            self.m.run_until(idle, 100)

    def reset_buffer(self) -> None:
        """tracing_reset_online_cpus: empty every CPU's buffer (``echo > trace``)."""
        if self.buffer is not None:
            self.quiesce_writers()
            self.buffer.reset()
        self.time_start = self.tracing.clock_peek(self)

    def resize(self, kb: int, cpu: int | None = None) -> None:
        """buffer_size_kb: per-CPU size in KiB (0 -> EINVAL)."""
        if kb <= 0:
            raise FtraceError(errno.EINVAL, "buffer size must be positive")
        self._resize(kb << 10, cpu)

    def free_buffer(self) -> None:
        """free_buffer's close: tracing off if ``disable_on_free`` is set, then the buffers
        (the snapshot's too) resized to 0, which is their minimum of two pages per CPU."""
        if "disable_on_free" in self.options:
            self.tracer_tracing_off()
        self._resize(0, None)

    def buffer_size_kb(self, cpu: int | None = None) -> str:
        """What buffer_size_kb reads: ``N``, ``N (expanded: M)`` or ``X`` if CPUs differ."""
        sizes = [self._size(c) for c in (range(len(self.m.cpus)) if cpu is None else [cpu])]
        if len(set(sizes)) > 1:
            return "X\n"
        if not self.expanded:
            return f"{sizes[0] >> 10} (expanded: {TRACE_BUF_SIZE_DEFAULT >> 10})\n"
        return f"{sizes[0] >> 10}\n"

    def buffer_total_size_kb(self) -> str:
        total = sum(self._size(c) >> 10 for c in range(len(self.m.cpus)))
        if not self.expanded:
            return f"{total} (expanded: {len(self.m.cpus) * (TRACE_BUF_SIZE_DEFAULT >> 10)})\n"
        return f"{total}\n"

    def _size(self, cpu: int) -> int:
        if self.buffer is not None:
            return self.buffer.size(cpu)
        return nr_pages_for(TRACE_BUF_SIZE_DEFAULT if self.expanded else 1) * BUF_PAGE_SIZE

    # ---- tracers and options -------------------------------------------------------------
    def set_tracer(self, name: str) -> None:
        """current_tracer: EINVAL for an unknown name; the old tracer is stopped first."""
        name = name.strip()
        tracer = self.tracing.tracers.get(name)
        if tracer is None:
            raise FtraceError(errno.EINVAL, f"no tracer named {name!r}")
        if tracer is self.tracer:
            return
        if name != "nop":
            self.expand()
        self.tracer.reset(self)
        self.tracer = self.tracing.tracers["nop"]
        self.reset_buffer()                     # tracer_init starts from an empty buffer
        tracer.init(self)
        self.tracer = tracer

    def set_option(self, text: str) -> None:
        """trace_options: ``name`` or ``no<name>`` (general options, or the tracer options of
        function and function_graph); EINVAL for an unknown option."""
        from .trace_functions import FUNC_OPTIONS
        word = text.strip()
        on = not word.startswith("no")
        name = word if on else word[2:]
        if name not in TRACE_OPTIONS and name not in tracer_options():
            raise FtraceError(errno.EINVAL, f"no trace option {word!r}")
        if name in FUNC_OPTIONS and (name in self.options) != on:
            self.tracer.set_flag(self, name, on)
        if name == "function-fork":
            self.inst.pid_filter.follow_fork(on)
        if name == "record-tgid" and on:
            self.tracing.tgids.allocated = True     # trace_alloc_tgid_map
        (self.options.add if on else self.options.discard)(name)
        if name == "overwrite":
            for buf in (self.buffer, self.snap.buffer):
                if buf is not None:
                    buf.set_overwrite(on)
        if name in GLOBAL_TRACER_OPTIONS:
            for tr in self.tracing.arrays.values():
                (tr.options.add if on else tr.options.discard)(name)
            self.tracing.profiler.sync_options()
            self.tracing.events.publish_tracepoint("sched_switch")
        self.sync_graph_settings()

    def trace_options(self) -> str:
        """The general options, then the current tracer's own."""
        names = list(TRACE_OPTIONS) + list(tracer_options(self.tracer.name))
        return "".join(f"{'' if k in self.options else 'no'}{k}\n" for k in names)

    # ---- reading -------------------------------------------------------------------------
    def formatter(self, time_start: int | None = None) -> TraceFormatter:
        return TraceFormatter(self.tracing.lookup, self.tracing.comm, self.options,
                              CLOCK_IN_NS[self.clock], self.time_start if time_start is None else time_start,
                              self.tracing.tgid)

    def _cpus(self) -> list[int]:
        return list(range(len(self.m.cpus))) if self.buffer is not None else []

    def entries(self) -> list[TraceEntry]:
        """Every unread entry, all CPUs merged by time, without consuming."""
        if self.buffer is None:
            return []
        buf = self.buffer
        return list(merge_by_time((c, buf.events(c)) for c in self._cpus()))

    def counts(self) -> tuple[int, int]:
        """(entries in buffer, entries written) summed over CPUs."""
        if self.buffer is None:
            return 0, 0
        per = [self.buffer.counts(c) for c in self._cpus()]
        return sum(p[0] for p in per), sum(p[1] for p in per)

    def trace(self) -> str:
        """The ``trace`` file."""
        self.tracing.refresh_cmdlines()
        return self.format(self.entries(), self.counts())

    def format(self, entries: list[TraceEntry], counts: tuple[int, int],
               snapshot: "TraceSnapshot | None" = None, cpus: list[int] | None = None) -> str:
        """``trace`` text of ``entries`` (of the live buffer, or of the ``snapshot``'s; of
        every CPU, or of ``cpus``): the current tracer's header and lines."""
        buf, time_start, owner = self.buffer, None, (0, ("", 0))
        if snapshot is not None:          # __update_max_tr: the snapshot's start and taker
            buf, time_start, owner = snapshot.buffer, 0, snapshot.owner
        fmt, online = self.formatter(time_start), len(self.m.online_cpus())
        if self.tracer.name == "function_graph":
            from .trace_functions_graph import GraphFormatter
            g = GraphFormatter(fmt, len(self.m.cpus))
            head = ""
            if "latency-format" in self.options and "context-info" in self.options:
                if not entries:             # print_graph_headers_flags: nothing when empty
                    return f"# tracer: {self.tracer.name}\n#\n"
                head = fmt.latency_header(self.tracer.name, counts, online, *owner)
            return f"# tracer: {self.tracer.name}\n#\n" + head + g.header() + g.format(entries)
        overruns = buf is not None and any(buf.stats(c, 0).overrun for c in cpus or self._cpus())
        return format_trace(self.tracer.name, fmt, entries, counts, online,
                            annotate_cpus=overruns, lat_owner=owner)

    def consume(self, cpu: int | None = None, max_entries: int = 1 << 30) -> str:
        """trace_pipe: format and consume the oldest entries (of one CPU, or all merged);
        ``CPU:n [LOST m EVENTS]`` first where the writer overwrote unread events."""
        if self.buffer is None:
            return ""
        self.tracing.refresh_cmdlines()
        buf, fmt = self.buffer, self.formatter()
        cpus = self._cpus() if cpu is None else [cpu]
        lost = {c: buf.take_lost(c) for c in cpus}
        out, taken = [], {c: 0 for c in cpus}
        entries = []
        for e in merge_by_time((c, buf.events(c)) for c in cpus):
            if len(entries) >= max_entries:
                break
            entries.append(e)
            taken[e.cpu] += 1
        for c, n in lost.items():
            if n:
                out.append(f"CPU:{c} [LOST {n} EVENTS]\n")
        if self.tracer.name == "function_graph":
            from .trace_functions_graph import GraphFormatter
            out.append(GraphFormatter(fmt, len(self.m.cpus)).format(entries))
        else:
            out += fmt.lines(entries)
        for c, n in taken.items():
            if n:
                buf.consume(c, n)
        return "".join(out)


def attach(machine: "Machine", options: dict[str, Any]) -> "Tracing | None":
    """The ``ftemu.extensions`` entry point: tracers for a new machine (after ftrace). None
    for a kernel without what the buffers need (its page allocator and per-CPU areas, e.g.
    the tests' tiny guest): nothing is written into such a guest's memory."""
    from .tracing import Tracing
    if not all(machine.image.has_symbol(s) for s in ("kalloc", "kfree", "percpu", "jiffies")):
        return None
    return Tracing(machine)
