"""``m.tracing``: the tracers of one machine (kernel/trace/trace.c's global side): their
guest code (trace clocks, function_trace_call, function_graph_entry, return_to_handler, the
event probes), the tracer registry, saved cmdlines, shadow stacks, max_graph_depth, the
tracing side of every trace array (made and removed through ftrace's ``instances`` hooks),
and their state across machine snapshots."""
from __future__ import annotations

import copy
import errno
import struct
from typing import TYPE_CHECKING, Callable

from emu import memlayout as L

from .arch.x86.asm import CodeBuilder
from .arch.x86.func_stack_64 import emit_function_stack_trace_call
from .arch.x86.fgraph_64 import CELL_GRAPH, CELL_NOTRACE, emit_fgraph
from .arch.x86.fgraph_sleep_64 import emit_graph_sleep_probe
from .arch.x86.trace_64 import (CLK_COUNTER, CLK_GLOBAL_LAST, FAST_CLOCKS, TR_NO_PIDS, TR_PIDS,
                                USER_HZ, clock_page, emit_function_trace_call, emit_trace_clock)
from .calltrace import CallTrace
from .errors import FtraceError
from .flags import FtraceOpsFlags as FL
from .func_probe import kstrtoul
from .ring_buffer import GuestPages
from .trace import TraceArray, Tracer
from .trace_sched_switch import SavedCmdlines, SavedTgids, resize_saved_cmdlines

if TYPE_CHECKING:
    from emu import Machine

    from .instance import FtraceInstance

CODE_SIZE = 0x4000


class Tracing:
    """``m.tracing``: the guest code of the tracers, the tracer registry, the saved cmdlines,
    the top-level trace array (``m.tracing.top``) and the instances."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self.ft = machine.ftrace
        self.pages = GuestPages(machine)
        self.cmdlines = SavedCmdlines()
        self.tgids = SavedTgids()
        self.tracers: dict[str, Tracer] = {}
        from .trace_functions import FunctionTracer
        from .trace_functions_graph import FunctionGraphTracer
        for t in (Tracer(), FunctionTracer(), FunctionGraphTracer()):
            self.tracers[t.name] = t
        self.max_graph_depth = 0
        self.tracing_thresh = 0             # ns (tracing_thresh holds it as written x 1000)
        # set_graph_function / set_graph_notrace (ftrace_graph_hash / ftrace_graph_notrace_hash):
        # machine-wide, as in the kernel; the guest reads them through graph_cells.
        self.graph_hash: frozenset[int] = frozenset()
        self.graph_notrace_hash: frozenset[int] = frozenset()
        self._shadow_ready = False
        self._build_code()
        self.arrays: dict[str, TraceArray] = {}
        machine.ftrace.instances.add_hooks(self.trace_array_create, self.trace_array_destroy)
        self.top = self.arrays[""]
        self.call_traces: list[CallTrace] = []
        machine.snapshot_participants.append(self)
        from .ftrace_profile import FunctionProfiler
        from .trace_stack import StackTracer
        self.profiler = FunctionProfiler(self)
        self.stack_tracer = StackTracer(self)

    # ---- snapshots: the host half of every trace array follows the guest memory ---------
    _ARRAY_FIELDS = ("expanded", "tracer", "clock", "_on", "graph_used", "time_start")

    def snapshot_state(self) -> tuple:
        arrays = {}
        for name, tr in self.arrays.items():
            bufs = tuple((b, None if b is None else (list(b.nr_pages), list(b.tables), b.overwrite))
                         for b in (tr.buffer, tr.snap.buffer))
            arrays[name] = (tr, {f: copy.copy(getattr(tr, f)) for f in self._ARRAY_FIELDS}, set(tr.options),
                            bufs, tr.snap.owner)
        return (arrays, copy.deepcopy((self.cmdlines, self.tgids)), self.max_graph_depth, self._shadow_ready,
                self.events.state(), self.graph_hash, self.graph_notrace_hash, self.tracing_thresh)

    def restore_state(self, st: tuple) -> None:
        (arrays, cmdlines, self.max_graph_depth, self._shadow_ready, events,
         self.graph_hash, self.graph_notrace_hash, self.tracing_thresh) = st
        self.events.restore(events)
        self.cmdlines, self.tgids = copy.deepcopy(cmdlines)
        self.arrays = {}
        for name, (tr, fields, options, bufs, tr.snap.owner) in arrays.items():
            for f, v in fields.items():
                setattr(tr, f, copy.copy(v))
            tr.options = set(options)
            tr.buffer, tr.snap.buffer = (b for b, _state in bufs)
            for buf, state in bufs:
                if buf is not None:
                    buf.nr_pages, buf.tables, buf.overwrite = list(state[0]), list(state[1]), state[2]
            tr.inst.trace = tr
            if tr._inst_changed not in tr.inst.listeners:
                tr.inst.listeners.append(tr._inst_changed)
            self.arrays[name] = tr

    def __call__(self, *patterns: str) -> CallTrace:
        """``with m.tracing("schedule", "try_to_wake_up") as t:`` records those functions'
        calls during the block (``t.count``, ``t.order``, ``t.contexts`` ...); the recent
        ones stay in ``call_traces`` (the pytest plugin's failure report shows them)."""
        t = CallTrace(self.m, patterns)
        self.call_traces = self.call_traces[-7:] + [t]
        return t

    def _build_code(self) -> None:
        m = self.m
        self.clock_data = m.execmem.alloc(4096, align=4096, executable=False)
        self.pages.write(self.clock_data, clock_page(self.clock_data))
        base = m.execmem.alloc(CODE_SIZE, align=64)
        b = CodeBuilder(base)
        emit_trace_clock(b, self.clock_data, m.symbol_address("jiffies"))
        emit_function_trace_call(b, self.clock_data)
        emit_function_stack_trace_call(b)
        idle, tasks = m.image.symbol("idle_tasks"), m.image.symbol("tasks")
        self.task_slots = self._task_slots(idle, tasks)
        self.shadow_table = m.execmem.alloc(8 * (((idle.size + 63) & ~63) + tasks.size) // 64 + 8, align=64,
                                            executable=False)
        self.pages.write(self.shadow_table, bytes(8 * (((idle.size + 63) & ~63) + tasks.size) // 64 + 8))
        self._idle, self._tasks = (idle.addr, idle.size), (tasks.addr, tasks.size)
        self.graph_cells = m.execmem.alloc(16, executable=False)
        self.pages.write(self.graph_cells, bytes(16))
        emit_fgraph(b, self._idle, self._tasks, self.shadow_table, self.graph_cells, self.clock_data)
        from .trace_events import TraceEvents
        self.events = TraceEvents(self, b)
        emit_graph_sleep_probe(b, self._idle, self._tasks, self.shadow_table,
                               self.events.probes["sched_switch"])
        self.graph_sleep_probe = b.labels["ftrace_graph_probe_sched_switch"]
        if len(b.code) > CODE_SIZE:
            raise RuntimeError("tracer guest code outgrew its block")
        self.pages.write(base, bytes(b.code))
        m.invalidate_code(base, len(b.code))
        # Event writes are atomic to interrupts and NMIs, without cli/popfq on the fast paths.
        m.hold_interrupts_in(base, base + CODE_SIZE)
        # Grace periods (rcu_tasks) must see a vCPU inside an event probe or return_to_handler.
        self.ft.x86.code_ranges.append((base, base + CODE_SIZE))
        # Where host-written messages say they come from: trace_marker entries (the kernel's
        # tracing_mark_write) and the snapshot command's (tracing_snapshot_instance_cond).
        for name in ("tracing_mark_write", "tracing_snapshot_instance_cond"):
            b.align()
            b.label(name)
            b.emit("ret")
        self.tracing_mark_write = b.labels["tracing_mark_write"]
        self.snapshot_instance_cond = b.labels["tracing_snapshot_instance_cond"]
        self.code_range = (base, base + CODE_SIZE)      # where a guest writer may be
        self.function_trace_call = b.labels["function_trace_call"]
        self._fast_entries = {(kind, name): b.labels[f"{kind}_{name}"] for name in FAST_CLOCKS.values()
                              for kind in ("function_trace_call", "function_graph_entry")}
        self.function_stack_trace_call = b.labels["function_stack_trace_call"]
        self.function_graph_entry = b.labels["function_graph_entry"]
        self.return_to_handler = b.labels["return_to_handler"]
        names = sorted(b.labels.items(), key=lambda kv: kv[1])
        for (name, addr), nxt in zip(names, [a for _, a in names[1:]] + [base + len(b.code)]):
            self.ft.x86.symbols[addr] = (name, nxt - addr)

    def function_trace_entry(self, clock: str) -> int:
        """Where a trace array's function tracer thunk jumps while ``clock`` is its trace
        clock: the fast variant for that clock if there is one, else the general code."""
        return self._fast_entries.get(("function_trace_call", clock), self.function_trace_call)

    def function_graph_entry_for(self, clock: str) -> int:
        """The same for the function_graph thunk."""
        return self._fast_entries.get(("function_graph_entry", clock), self.function_graph_entry)

    def load_code(self, size: int, emit: "Callable[[CodeBuilder], None]") -> dict[str, int]:
        """Guest code of its own for a tracer (the profiler, the stack tracer): ``emit`` fills
        an executable block of ``size`` bytes; its labels become symbols (%pS,
        enabled_functions) and are returned. Not in the grace periods' code ranges: its
        callbacks build no frame, so a trampoline that called one is seen in the innermost
        frame, and a return hijacked into it never returns into a trampoline."""
        base = self.m.execmem.alloc(size, align=64)
        b = CodeBuilder(base)
        emit(b)
        if len(b.code) > size:
            raise RuntimeError("tracer guest code outgrew its block")
        self.pages.write(base, bytes(b.code))
        self.m.invalidate_code(base, len(b.code))
        names = sorted(b.labels.items(), key=lambda kv: kv[1])
        for (name, addr), nxt in zip(names, [a for _, a in names[1:]] + [base + len(b.code)]):
            self.ft.x86.symbols[addr] = (name, nxt - addr)
        return b.labels

    def zeroed_block(self, size: int) -> int:
        """A data block (NX) for what guest code keeps, zeroed."""
        va = self.m.execmem.alloc(size, executable=False)
        self.pages.write(va, bytes(size))
        return va

    def _task_slots(self, idle, tasks) -> list[tuple[int, int]]:
        """(task struct address, shadow-table index) for every slot of idle_tasks[] and tasks[]."""
        stride = idle.size // L.NCPU
        idle_span = (idle.size + 63) & ~63
        out = [(idle.addr + i * stride, (i * stride) >> 6) for i in range(L.NCPU)]
        out += [(tasks.addr + i * stride, (idle_span + i * stride) >> 6)
                for i in range(tasks.size // stride)]
        return out

    def ensure_shadow_stacks(self) -> None:
        """A shadow-stack page for every task slot, the first time function_graph runs (kept:
        a hijacked return may come back long after the tracer stopped)."""
        if self._shadow_ready:
            return
        pages = self.pages.alloc_pages(len(self.task_slots))
        for (_task, index), page in zip(self.task_slots, pages):
            self.pages.write(page, struct.pack("<Q", 0xFFFFFFFFFFFFFFFF))      # no owner yet
            self.pages.write(self.shadow_table + 8 * index, struct.pack("<Q", page))
        self._shadow_ready = True

    def current_pid(self, cpu: int) -> int:
        task = self.m.kernel.current(cpu)
        return struct.unpack("<i", self.m.read(task + L.TASK_PID, 4))[0] if task else 0

    def clock_now(self, tr: TraceArray, cpu: int) -> int:
        """What trace_clock returns now on ``cpu`` for ``tr``'s clock (host-written events
        take their time from the same clocks as guest-written ones)."""
        now = self.m.cpus[cpu].now()
        if tr.clock == "counter":
            value = struct.unpack("<Q", self.pages.read(self.clock_data + CLK_COUNTER, 8))[0] + 1
            self.pages.write(self.clock_data + CLK_COUNTER, struct.pack("<Q", value))
            return value
        if tr.clock == "uptime":
            return self.m.read_u64(self.m.symbol_address("jiffies")) // (L.HZ // USER_HZ)
        if tr.clock in ("global", "mono"):
            last = struct.unpack("<Q", self.pages.read(self.clock_data + CLK_GLOBAL_LAST, 8))[0]
            now = max(now, last)
            self.pages.write(self.clock_data + CLK_GLOBAL_LAST, struct.pack("<Q", now))
        return now

    def clock_peek(self, tr: TraceArray) -> int:
        """What ``tr``'s clock reads now, for a buffer's time_start. The counter clock is
        read without counting (the kernel's read takes a count, which would shift every
        later counter stamp by one after each ``echo > trace``)."""
        if tr.clock == "counter":
            return struct.unpack("<Q", self.pages.read(self.clock_data + CLK_COUNTER, 8))[0]
        return self.clock_now(tr, self.m.online_cpus()[0])

    @property
    def graph_sleep_probe_on(self) -> bool:
        """fgraph_sleep_time off (the ``sleep-time`` option, one for every trace array as
        the kernel's graph tracer flags are): the sched_switch probe takes the time a task
        was scheduled out off its calls."""
        top = self.arrays.get("")
        return top is not None and "sleep-time" not in top.options

    def set_max_graph_depth(self, depth: int) -> None:
        """max_graph_depth: 0 = no limit; entries at depth >= the limit are not recorded."""
        if depth < 0:
            raise FtraceError(errno.EINVAL, "max_graph_depth must be >= 0")
        self.max_graph_depth = depth
        for tr in self.arrays.values():
            tr.sync_graph_settings()

    def tracing_thresh_text(self) -> str:
        """tracing_thresh (tracing_nsecs_read): microseconds."""
        return f"{self.tracing_thresh // 1000}\n"

    def set_tracing_thresh(self, text: str) -> None:
        """tracing_thresh (tracing_nsecs_write): decimal microseconds, kept as ns (0: off).
        function_graph then writes only the returns of calls that lasted at least that
        long, and trace_stat leaves out functions whose average is below it."""
        self.tracing_thresh = kstrtoul(text, base=10) * 1000 & (1 << 64) - 1
        for tr in self.arrays.values():
            tr.sync_graph_settings()

    def set_graph_hash(self, new: frozenset[int], notrace: bool) -> None:
        """Publish set_graph_function (or, ``notrace``, set_graph_notrace): a new sorted ip
        array with one pointer store; the one it replaces is freed after a grace period
        (call_rcu), as a return_to_handler or entry callback on another vCPU may be reading it."""
        ips = sorted(new)
        block = 0
        if ips:
            block = self.m.execmem.alloc(8 + 8 * len(ips), executable=False)
            self.pages.write(block, struct.pack(f"<Q{len(ips)}Q", len(ips), *ips))
        cell = self.graph_cells + (CELL_NOTRACE if notrace else CELL_GRAPH)
        old = struct.unpack("<Q", self.pages.read(cell, 8))[0]
        self.pages.write(cell, struct.pack("<Q", block))
        if notrace:
            self.graph_notrace_hash = frozenset(ips)
        else:
            self.graph_hash = frozenset(ips)
        if old:
            self.ft.x86.rcu.call_rcu([old])

    # ---- helpers the formatter uses -----------------------------------------------------
    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        return self.ft.arch.lookup(addr)

    def comm(self, pid: int) -> str | None:
        return self.cmdlines.find(pid)

    def tgid(self, pid: int) -> int:
        return self.tgids.find(pid)

    def refresh_cmdlines(self) -> None:
        """Save the comm of every live task (the kernel saves them at sched_switch), and
        its tgid while an array records tgids (sched_tgid_ref)."""
        tgids = any("record-tgid" in tr.options for tr in self.arrays.values())
        for t in self.m.kernel.tasks():
            pid, comm = self.m.kernel.task_name(t)
            self.cmdlines.save(pid, comm)
            if tgids:
                self.tgids.save(pid, pid)

    def saved_cmdlines_text(self) -> str:
        """saved_cmdlines: ``<pid> <comm>`` per line."""
        self.refresh_cmdlines()
        return self.cmdlines.text()

    def saved_cmdlines_size_write(self, text: str) -> None:
        """saved_cmdlines_size: a new, empty map of (at least) that many slots."""
        self.cmdlines = resize_saved_cmdlines(text)

    def saved_tgids_text(self) -> str:
        """saved_tgids: ``<pid> <tgid>`` per line."""
        self.refresh_cmdlines()
        return self.tgids.text()

    def available_tracers(self) -> str:
        """Most recently registered first, as register_tracer links them."""
        return " ".join(reversed(list(self.tracers))) + "\n"

    # ---- instances ------------------------------------------------------------------------
    def trace_array_create(self, inst: "FtraceInstance") -> TraceArray:
        """The tracing side of a new trace array (the top level, or ``mkdir instances/x``)
        with its files in the trace array's directory."""
        from .trace_events import register_event_files
        from .trace_files import register_trace_files
        tr = self.arrays[inst.name] = TraceArray(self, inst)
        register_trace_files(self, tr, inst.fs)
        register_event_files(self.events, tr, inst.fs)
        return tr

    def trace_array_destroy(self, inst: "FtraceInstance") -> None:
        """``rmdir instances/x``: the tracer is stopped and the buffer's memory freed. While
        someone other than a tracer has the array's ops registered, the ftrace side refuses
        the rmdir (EBUSY) after the hooks, so nothing is torn down here.

        Unpublished first (tracer, events), freed only after a grace period: a vCPU that
        stopped inside an event probe between two slices still holds this trace_array and
        writes into its buffer when it runs on. If the wait runs out of budget the array's
        memory is kept (a leak, said in the log), never freed under a writer."""
        tr = self.arrays[inst.name]
        if tr.refs:
            raise FtraceError(errno.EBUSY, f"instance {inst.name} has files open")
        if tr.tracer.name == "nop" and inst.ops.flags & FL.ENABLED:
            return
        del self.arrays[inst.name]
        tr.set_tracer("nop")
        self.events.forget(tr)
        tr.tracing_on = False
        inst.listeners.remove(tr._inst_changed)
        inst.trace = None
        if not self.ft.x86.rcu.synchronize():
            self.ft.log_lines.append(f"tracing: instance {inst.name} may still be written to: "
                                     "keeping its buffer")
            return
        for buf in (tr.buffer, tr.snap.buffer):
            if buf is not None:
                buf.free()
        blocks = [struct.unpack("<Q", self.pages.read(tr.va + f, 8))[0] for f in (TR_PIDS, TR_NO_PIDS)]
        # A return hijacked for this array may still come back and read its trace_array
        # (it finds tracing off): that page is kept once function_graph has used it.
        keep = tr.va if tr.graph_used else 0
        for va in (tr.va, tr.callback, tr.graph_callback, tr.stack_callback, *blocks):
            if va and va != keep:
                self.m.execmem.free(va)
