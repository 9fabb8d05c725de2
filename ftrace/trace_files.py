"""The tracefs files of a trace array (kernel/trace/trace.c's tracer_init_tracefs and
init_tracer_tracefs): buffers, tracers, options, clocks, per-CPU files and the ftrace event
formats, registered in the machine's tree for the top level and for each instance."""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.pseudofs import Handle, TextFile, TextHandle, fs_error, wants_read, wants_write

from .filter_file import RegexFile
from .ring_buffer_format import PAGE_SIZE, header_event_format, header_page_format
from .trace import CLOCK_IN_NS, TRACE_CLOCKS, TRACE_OPTIONS, tracer_options
from .trace_output import merge_by_time

if TYPE_CHECKING:
    from emu.pseudofs import PseudoFS

    from .ring_buffer import RingBuffer
    from .trace import TraceArray, Tracing

COMMON_FIELDS = ("\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                 "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
                 "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
                 "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n")

# events/ftrace/<name>/format: (ID, fields, print fmt), as trace_entries.h declares them.
FTRACE_EVENTS = {
    "function": (1, [("unsigned long ip", 8, 8, 0), ("unsigned long parent_ip", 16, 8, 0)],
                 '" %ps <-- %ps", (void *)REC->ip, (void *)REC->parent_ip'),
    "funcgraph_entry": (11, [("unsigned long func", 8, 8, 0), ("int depth", 16, 4, 1)],
                        '"--> %ps (%d)", (void *)REC->func, REC->depth'),
    "funcgraph_exit": (10, [("unsigned long func", 8, 8, 0), ("unsigned long retval", 16, 8, 0),
                            ("int depth", 24, 4, 1), ("unsigned int overrun", 28, 4, 0),
                            ("unsigned long long calltime", 32, 8, 0),
                            ("unsigned long long rettime", 40, 8, 0)],
                       '"<-- %ps (%d) (start: %llx  end: %llx) over: %d retval: %lx", '
                       '(void *)REC->func, REC->depth, REC->calltime, REC->rettime, REC->depth, '
                       'REC->retval'),
    "kernel_stack": (4, [("int size", 8, 4, 1), ("unsigned long caller[size]", 16, 0, 0)],
                     '"\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n\\t=> %ps\\n", '
                     '(void *)REC->caller[0], (void *)REC->caller[1], (void *)REC->caller[2], '
                     '(void *)REC->caller[3], (void *)REC->caller[4], (void *)REC->caller[5], '
                     '(void *)REC->caller[6], (void *)REC->caller[7]'),
    "print": (5, [("unsigned long ip", 8, 8, 0), ("char buf[]", 16, 0, 1)],
              '"%ps: %s", (void *)REC->ip, REC->buf'),
    "raw_data": (18, [("unsigned int id", 8, 4, 0), ("char buf[]", 12, 0, 1)],
                 '"id:%04x %08x", REC->id, (int)REC->buf[0]'),
}


def event_format(name: str) -> str:
    """The ``format`` file of an ftrace-internal event."""
    eid, fields, fmt = FTRACE_EVENTS[name]
    body = "".join(f"\tfield:{decl};\toffset:{off};\tsize:{size};\tsigned:{signed};\n"
                   for decl, off, size, signed in fields)
    return f"name: {name}\nID: {eid}\nformat:\n{COMMON_FIELDS}{body}\nprint fmt: {fmt}\n"


def _bool(text: str) -> int:
    word = text.strip()
    if not word.isdigit():
        raise fs_error(errno.EINVAL, detail=f"expected a number, got {text!r}")
    return int(word)


class PipeHandle(Handle):
    """trace_pipe (text), trace_pipe_raw or snapshot_raw (pages of the live buffer, or of
    the snapshot): consuming reads that block while the buffer is empty (EAGAIN with
    O_NONBLOCK) and end once tracing is off after data came."""

    def __init__(self, tr: "TraceArray", fs: "PseudoFS", cpu: int | None, raw: bool, flags: int,
                 snapshot: bool = False) -> None:
        self.tr, self.fs, self.cpu, self.raw, self.snapshot = tr, fs, cpu, raw, snapshot
        self.nonblock = bool(flags & os.O_NONBLOCK)
        self.pending = b""
        self.seen = False
        tr.refs += 1

    def release(self) -> None:
        self.tr.refs -= 1

    def _buffer(self) -> "RingBuffer | None":
        """The buffer read: the snapshot's is looked up at each read, as a swap makes the
        live one the snapshot (wait_on_pipe re-reads tr->max_buffer)."""
        return self.tr.snap.buffer if self.snapshot else self.tr.buffer

    def _fetch(self, size: int) -> bytes:
        buf = self._buffer()
        if buf is None:
            return b""
        if self.raw:
            return buf.read_full_page(self.cpu) or b""
        return self.tr.consume(self.cpu, max(1, size // 48)).encode()

    def read(self, size: int, offset: int) -> bytes:
        while not self.pending:
            self.pending = self._fetch(size)
            if self.pending:
                break
            if self.nonblock:
                raise fs_error(errno.EAGAIN)
            if self.seen and not self.tr.tracing_on:
                return b""
            self.fs.wait_event(self._has_data, 1.0)
        if self.raw and size < PAGE_SIZE:
            raise fs_error(errno.EINVAL, detail="trace_pipe_raw reads whole pages")
        out, self.pending = self.pending[:size], self.pending[size:]
        self.seen = True
        return out

    def _has_data(self) -> bool:
        buf = self._buffer()
        if buf is None:
            return False
        cpus = range(buf.ncpus) if self.cpu is None else [self.cpu]
        return any(buf.counts(c)[0] for c in cpus)


class PipeFile:
    mode = 0o444

    def __init__(self, tr: "TraceArray", fs: "PseudoFS", cpu: int | None, raw: bool,
                 snapshot: bool = False) -> None:
        self.tr, self.fs, self.cpu, self.raw, self.snapshot = tr, fs, cpu, raw, snapshot

    def open(self, flags: int) -> Handle:
        if wants_write(flags):
            raise fs_error(errno.EACCES)
        return PipeHandle(self.tr, self.fs, self.cpu, self.raw, flags, self.snapshot)


class ArrayTextFile(TextFile):
    """A text file that reads a trace array's buffers (``trace``, ``snapshot``, per_cpu
    ``trace``/``snapshot``/``stats``): an open handle holds a reference on the array, so
    ``rmdir`` of its instance is refused meanwhile (EBUSY, as trace_array_get makes it).
    With ``pause``, a read open under the pause-on-trace option also stops recording
    until its release (__tracing_open / tracing_release)."""

    def __init__(self, tr: "TraceArray", read: Callable[[], str],
                 write: Callable[[str], None] | None = None,
                 truncate: Callable[[], None] | None = None, pause: bool = False) -> None:
        super().__init__(read, write, 0o644 if write or truncate else 0o444, truncate)
        self.tr, self.pause = tr, pause

    def open(self, flags: int) -> Handle:
        super().open(flags)
        paused = self.pause and wants_read(flags) and "pause-on-trace" in self.tr.options
        if paused:
            self.tr.tracing_stop()
        self.tr.refs += 1
        return ArrayTextHandle(self, paused)


class ArrayTextHandle(TextHandle):
    def __init__(self, node: ArrayTextFile, paused: bool) -> None:
        super().__init__(node)
        self.tr, self.paused = node.tr, paused

    def release(self) -> None:
        self.tr.refs -= 1
        if self.paused:
            self.tr.tracing_start()


class MarkerHandle(Handle):
    """trace_marker / trace_marker_raw: each write(2) is one entry; a short count sends the
    rest to the next."""

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self.write_entry = write

    def write(self, data: bytes, offset: int) -> int:
        return self.write_entry(data)


class MarkerFile:
    mode = 0o220

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self.write_entry = write

    def open(self, flags: int) -> Handle:
        if not wants_write(flags) or wants_read(flags):
            raise fs_error(errno.EACCES)
        return MarkerHandle(self.write_entry)


class FreeBufferHandle(Handle):
    """free_buffer: writes are accepted and ignored; the close frees (tracing_free_buffer_
    release). The FUSE view frees at the flush, as close(2) returns before FUSE's RELEASE."""

    def __init__(self, tr: "TraceArray") -> None:
        self.tr, self.done = tr, False
        tr.refs += 1

    def write(self, data: bytes, offset: int) -> int:
        return len(data)

    def flush(self) -> None:
        if not self.done:
            self.done = True
            self.tr.free_buffer()

    def release(self) -> None:
        self.tr.refs -= 1
        self.flush()


class FreeBufferFile:
    mode = 0o200

    def __init__(self, tr: "TraceArray") -> None:
        self.tr = tr

    def open(self, flags: int) -> Handle:
        if not wants_write(flags) or wants_read(flags):
            raise fs_error(errno.EACCES)
        return FreeBufferHandle(self.tr)


def _cpu_trace(tr: "TraceArray", cpu: int) -> str:
    """per_cpu/cpuN/trace: that CPU's entries, formatted by the current tracer as ``trace``."""
    tr.tracing.refresh_cmdlines()
    buf = tr.buffer
    entries = list(merge_by_time([(cpu, buf.events(cpu))])) if buf is not None else []
    return tr.format(entries, buf.counts(cpu) if buf is not None else (0, 0), cpus=[cpu])


def _stats(tr: "TraceArray", cpu: int) -> str:
    buf = tr.ring_buffer()
    st = buf.stats(cpu, tr.m.cpus[cpu].now())

    def ts(v: int) -> str:
        if CLOCK_IN_NS[tr.clock]:
            us = (v + 500) // 1000
            return f"{us // 1000000:5d}.{us % 1000000:06d}"
        return f"{v}"
    return (f"entries: {st.entries}\noverrun: {st.overrun}\ncommit overrun: {st.commit_overrun}\n"
            f"bytes: {st.bytes}\noldest event ts: {ts(st.oldest_event_ts)}\nnow ts: {ts(st.now_ts)}\n"
            f"dropped events: {st.dropped_events}\nread events: {st.read_events}\n")


def register_trace_files(tracing: "Tracing", tr: "TraceArray", fs: "PseudoFS") -> None:
    """Every file of ``tr`` under ``fs`` (the tracefs root or an instance directory)."""
    top = tr.name == ""
    fs.register_text("available_tracers", tracing.available_tracers)
    fs.register_text("current_tracer", lambda: tr.tracer.name + "\n", tr.set_tracer, mode=0o644)
    fs.register_text("tracing_on", lambda: f"{int(tr.tracing_on)}\n",
                     lambda t: setattr(tr, "tracing_on", _bool(t)), mode=0o644)
    fs.register("trace", ArrayTextFile(tr, tr.trace, truncate=tr.reset_buffer, pause=True))
    fs.register("snapshot", ArrayTextFile(tr, lambda: tr.snap.read(None), lambda t: tr.snap.write(t, None)))
    fs.register("trace_pipe", PipeFile(tr, fs, None, raw=False))
    fs.register_text("buffer_size_kb", tr.buffer_size_kb, lambda t: tr.resize(_bool(t)), mode=0o644)
    fs.register_text("buffer_total_size_kb", tr.buffer_total_size_kb)
    fs.register_text("trace_clock", lambda: " ".join(f"[{c}]" if c == tr.clock else c for c in TRACE_CLOCKS) + "\n",
                     lambda t: tr.set_clock(t.strip()), mode=0o644)
    fs.register_text("trace_options", tr.trace_options, tr.set_option, mode=0o644)
    for name in [*TRACE_OPTIONS, *tracer_options()]:
        fs.register_text(f"options/{name}", lambda n=name: f"{int(n in tr.options)}\n",
                         lambda t, n=name: tr.set_option(n if _bool(t) else "no" + n), mode=0o644)
    for cpu in range(len(tr.m.cpus)):
        d = f"per_cpu/cpu{cpu}"
        fs.register(f"{d}/trace", ArrayTextFile(tr, lambda c=cpu: _cpu_trace(tr, c), pause=True,
                                                truncate=lambda c=cpu: tr.buffer and tr.buffer.reset_cpu(c)))
        fs.register(f"{d}/trace_pipe", PipeFile(tr, fs, cpu, raw=False))
        fs.register(f"{d}/trace_pipe_raw", PipeFile(tr, fs, cpu, raw=True))
        fs.register(f"{d}/stats", ArrayTextFile(tr, lambda c=cpu: _stats(tr, c)))
        fs.register(f"{d}/snapshot", ArrayTextFile(tr, lambda c=cpu: tr.snap.read(c),
                                                   lambda t, c=cpu: tr.snap.write(t, c)))
        fs.register(f"{d}/snapshot_raw", PipeFile(tr, fs, cpu, raw=True, snapshot=True))
        fs.register_text(f"{d}/buffer_size_kb", lambda c=cpu: tr.buffer_size_kb(c),
                         lambda t, c=cpu: tr.resize(_bool(t), c), mode=0o644)
    # error_log: what tracing_log_err records. The kernel logs only the errors of event
    # filters, histograms, synthetic events and probes, none of which ftemu has, so it
    # reads empty; opening it with O_TRUNC clears it and writes are accepted, as there.
    fs.register_text("error_log", lambda: "", truncate=lambda: None, mode=0o644)
    fs.register("free_buffer", FreeBufferFile(tr))
    fs.register("trace_marker", MarkerFile(tr.trace_marker_write))
    fs.register("trace_marker_raw", MarkerFile(tr.trace_marker_raw_write))
    fs.register_text("events/header_page", header_page_format)
    fs.register_text("events/header_event", header_event_format)
    for name in FTRACE_EVENTS:
        fs.register_text(f"events/ftrace/{name}/format", lambda n=name: event_format(n))
    if top:
        fs.register_text("saved_cmdlines", tracing.saved_cmdlines_text)
        fs.register_text("saved_cmdlines_size", lambda: f"{tracing.cmdlines.num}\n",
                         tracing.saved_cmdlines_size_write, mode=0o644)
        fs.register_text("saved_tgids", tracing.saved_tgids_text)
        fs.register_text("tracing_thresh", tracing.tracing_thresh_text, tracing.set_tracing_thresh, mode=0o644)
        fs.register_text("max_graph_depth", lambda: f"{tracing.max_graph_depth}\n",
                         lambda t: tracing.set_max_graph_depth(_bool(t)), mode=0o644)
        for name, notrace in (("set_graph_function", False), ("set_graph_notrace", True)):
            fs.register(name, RegexFile(
                tracing.ft, lambda n=notrace: tracing.graph_notrace_hash if n else tracing.graph_hash,
                lambda new, n=notrace: tracing.set_graph_hash(new, n), not notrace, commands=False))

