"""trace-cmd's ``trace.dat`` container, file format version 6 (trace-cmd.dat.v6(5)): the
tracing directory's self-description (header_page, header_event, event formats, kallsyms,
printk formats, saved_cmdlines, trace_clock) and the per-CPU ring-buffer pages exactly as
``trace_pipe_raw`` gives them. ``trace-cmd report`` and KernelShark read what ``write``
produces; ``read`` reads trace-cmd's own v6 files too."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x17\x08\x44tracing"
VERSION = b"6"

# enum of trace-cmd-private.h (TRACECMD_OPTION_*): the ones a v6 recording carries
OPTION_DONE = 0
OPTION_DATE = 1
OPTION_CPUSTAT = 2
OPTION_BUFFER = 3
OPTION_TRACECLOCK = 4
OPTION_UNAME = 5
OPTION_HOOK = 6
OPTION_OFFSET = 7
OPTION_CPUCOUNT = 8
OPTION_VERSION = 9
OPTION_TRACEID = 11

DEFAULT_CLOCKS = "[local] global counter uptime perf mono mono_raw boot\n"


@dataclass
class TraceDat:
    """Everything a v6 trace.dat holds, as the tracing directory's files give it.

    ``ftrace_formats`` are ``events/ftrace/*/format``; ``event_formats`` maps each other
    event system to its ``format`` files; ``cpu_data[n]`` is CPU n's ring-buffer pages
    (a multiple of ``page_size``); ``trace_clock`` is the ``trace_clock`` file ("[local]
    global ..."); ``options`` are further (id, payload) pairs such as uname and cpustat."""

    header_page: bytes
    header_event: bytes
    ftrace_formats: list[bytes]
    event_formats: dict[str, list[bytes]] = field(default_factory=dict)
    kallsyms: bytes = b""
    printk_formats: bytes = b""
    cmdlines: bytes = b""
    cpu_data: list[bytes] = field(default_factory=list)
    trace_clock: str = DEFAULT_CLOCKS
    options: list[tuple[int, bytes]] = field(default_factory=list)
    page_size: int = 4096
    long_size: int = 8

    @property
    def clock(self) -> str:
        """The selected clock: the bracketed name in ``trace_clock``."""
        for word in self.trace_clock.split():
            if word.startswith("["):
                return word.strip("[]")
        return "local"

    def option(self, ident: int) -> list[bytes]:
        """The payloads of every option ``ident`` (there may be several, e.g. cpustat)."""
        return [data for i, data in self.options if i == ident]

    def pages(self, cpu: int) -> list[bytes]:
        """CPU ``cpu``'s ring-buffer pages, in the order they were read."""
        data, size = self.cpu_data[cpu], self.page_size
        return [data[i:i + size] for i in range(0, len(data), size)]


def _cstr(text: bytes | str) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\0"


def dumps(td: TraceDat) -> bytes:
    """The file's bytes (little endian, as x86-64 writes it)."""
    if td.page_size & (td.page_size - 1):
        raise ValueError(f"page_size must be a power of two, not {td.page_size}")
    for cpu, data in enumerate(td.cpu_data):
        if len(data) % td.page_size:
            raise ValueError(f"CPU {cpu} data is not whole pages of {td.page_size} bytes")
    out = bytearray(MAGIC + _cstr(VERSION) + struct.pack("<BBI", 0, td.long_size, td.page_size))
    out += _cstr("header_page") + struct.pack("<Q", len(td.header_page)) + td.header_page
    out += _cstr("header_event") + struct.pack("<Q", len(td.header_event)) + td.header_event
    out += struct.pack("<I", len(td.ftrace_formats))
    for fmt in td.ftrace_formats:
        out += struct.pack("<Q", len(fmt)) + fmt
    out += struct.pack("<I", len(td.event_formats))
    for system, formats in td.event_formats.items():
        out += _cstr(system) + struct.pack("<I", len(formats))
        for fmt in formats:
            out += struct.pack("<Q", len(fmt)) + fmt
    out += struct.pack("<I", len(td.kallsyms)) + td.kallsyms
    out += struct.pack("<I", len(td.printk_formats)) + td.printk_formats
    out += struct.pack("<Q", len(td.cmdlines)) + td.cmdlines
    out += struct.pack("<I", len(td.cpu_data))
    # trace-cmd record stores the whole trace_clock file as an option, then (v6 only) the
    # selected clock again after the flyrecord table: its reader expects both.
    out += b"options  \0"
    for ident, data in [(OPTION_TRACECLOCK, _cstr(td.trace_clock)), *td.options]:
        out += struct.pack("<HI", ident, len(data)) + data
    out += struct.pack("<H", OPTION_DONE)
    out += b"flyrecord\0"
    table = len(out)
    out += bytes(16 * len(td.cpu_data))
    selected = f"[{td.clock}]".encode()
    out += struct.pack("<Q", len(selected)) + selected
    for cpu, data in enumerate(td.cpu_data):
        offset = -len(out) % td.page_size + len(out)
        out += bytes(offset - len(out)) + data
        struct.pack_into("<QQ", out, table + 16 * cpu, offset, len(data))
    return bytes(out)


def write(path: str | Path, td: TraceDat) -> None:
    """Write ``td`` as a trace.dat file at ``path``."""
    Path(path).write_bytes(dumps(td))


class _Cursor:
    """Sequential reads with the file's endianness; a short file is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.endian = data, 0, "<"

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"trace.dat is truncated (wanted {n} bytes at offset {self.pos})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def num(self, size: int) -> int:
        code = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
        return struct.unpack(self.endian + code, self.take(size))[0]

    def cstr(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"trace.dat is truncated (unterminated string at {self.pos})")
        text = self.data[self.pos:end]
        self.pos = end + 1
        return text

    def expect(self, text: bytes) -> None:
        got = self.take(len(text))
        if got != text:
            raise ValueError(f"not a trace.dat section: expected {text!r} at offset "
                             f"{self.pos - len(text)}, found {got!r}")


def loads(data: bytes) -> TraceDat:
    """Parse a v6 trace.dat; ValueError says what is wrong where."""
    c = _Cursor(data)
    if data[:len(MAGIC)] != MAGIC:
        raise ValueError("not a trace.dat file (no trace-cmd magic)")
    c.pos = len(MAGIC)
    version = c.cstr()
    if version != VERSION:
        raise ValueError(f"trace.dat version {version.decode(errors='replace')} is not "
                         "supported (only version 6)")
    c.endian = ">" if c.num(1) else "<"
    long_size, page_size = c.num(1), c.num(4)
    c.expect(b"header_page\0")
    header_page = c.take(c.num(8))
    c.expect(b"header_event\0")
    header_event = c.take(c.num(8))
    ftrace_formats = [c.take(c.num(8)) for _ in range(c.num(4))]
    event_formats = {}
    for _ in range(c.num(4)):
        system = c.cstr().decode()
        event_formats[system] = [c.take(c.num(8)) for _ in range(c.num(4))]
    kallsyms = c.take(c.num(4))
    printk_formats = c.take(c.num(4))
    cmdlines = c.take(c.num(8))
    cpus = c.num(4)
    kind = c.take(10)
    options, trace_clock = [], None
    if kind.startswith(b"options"):
        while (ident := c.num(2)) != OPTION_DONE:
            payload = c.take(c.num(4))
            if ident == OPTION_TRACECLOCK:
                trace_clock = payload.rstrip(b"\0").decode()
            else:
                options.append((ident, payload))
        kind = c.take(10)
    if kind != b"flyrecord\0":
        raise ValueError(f"unsupported trace.dat data section {kind.rstrip(bytes(1))!r} "
                         "(only flyrecord)")
    table = [(c.num(8), c.num(8)) for _ in range(cpus)]
    if trace_clock is not None:
        c.take(c.num(8))                    # the selected clock again: "[local]"
    cpu_data = []
    for cpu, (offset, size) in enumerate(table):
        if offset + size > len(data):
            raise ValueError(f"trace.dat is truncated (CPU {cpu} data ends past the file)")
        cpu_data.append(data[offset:offset + size])
    return TraceDat(header_page, header_event, ftrace_formats, event_formats, kallsyms,
                    printk_formats, cmdlines, cpu_data, trace_clock or DEFAULT_CLOCKS, options,
                    page_size, long_size)


def read(path: str | Path) -> TraceDat:
    """Read the trace.dat file at ``path``."""
    return loads(Path(path).read_bytes())


def from_tracefs(fs, cpu_data: list[bytes], tracing: str = "/sys/kernel/tracing") -> TraceDat:
    """What ``trace-cmd record`` takes from a tracing directory, read through the machine's
    file tree ``fs`` (``m.fs``): the headers, every event format, /proc/kallsyms,
    printk_formats, saved_cmdlines, trace_clock and each CPU's stats; ``cpu_data`` are the
    pages already read from ``per_cpu/cpuN/trace_pipe_raw``."""
    def text(path: str) -> bytes:
        return fs.read_bytes(path) if fs.exists(path) else b""

    events = f"{tracing}/events"
    ftrace_formats = [fs.read_bytes(f"{events}/ftrace/{name}/format")
                      for name in sorted(fs.listdir(f"{events}/ftrace"))
                      if fs.exists(f"{events}/ftrace/{name}/format")]
    systems = {}
    for system in sorted(fs.listdir(events)):
        if system == "ftrace" or not fs.isdir(f"{events}/{system}"):
            continue
        formats = [fs.read_bytes(f"{events}/{system}/{ev}/format")
                   for ev in sorted(fs.listdir(f"{events}/{system}"))
                   if fs.exists(f"{events}/{system}/{ev}/format")]
        if formats:
            systems[system] = formats
    # as trace-cmd record saves them: "CPU: N" and the stats file
    cpustats = [(OPTION_CPUSTAT, _cstr(f"CPU: {cpu}\n".encode()
                                       + text(f"{tracing}/per_cpu/cpu{cpu}/stats")))
                for cpu in range(len(cpu_data))]
    return TraceDat(fs.read_bytes(f"{events}/header_page"), fs.read_bytes(f"{events}/header_event"),
                    ftrace_formats, systems, text("/proc/kallsyms"),
                    text(f"{tracing}/printk_formats"), text(f"{tracing}/saved_cmdlines"),
                    cpu_data, fs.read(f"{tracing}/trace_clock"), cpustats)
