"""ftrace's own files in the machine's tree (kernel/trace/ftrace.c and trace.c): the function
listings, the per-trace-array filter, pid and cpumask files, README, ``instances/``, and
/proc/sys/kernel/ftrace_enabled."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from emu.pseudofs import O_TRUNC, Handle, TextHandle, TextFile, fs_error, wants_write

from . import views
from .filter_file import ops_regex_file
from .func_probe import kstrtoul
from .instance import FtraceInstance, TraceInstances

if TYPE_CHECKING:
    from emu.pseudofs import PseudoFS

    from .machine import MachineFtrace

SYSCTL_KERNEL = "/proc/sys/kernel"
PID_MAX_LIMIT = 4 * 1024 * 1024

README = """\
ftemu tracing mini-HOWTO: the files of this directory, as on Linux.

  echo 0 > tracing_on          stop recording (the hooks stay in place)
  echo 1 > tracing_on          record again
  echo function > current_tracer; cat trace; echo nop > current_tracer

 Files:
  trace                 what the ring buffer holds now; `echo > trace` empties it
  trace_pipe            the same, consumed as it is read; blocks while empty
  current_tracer        the tracer in use; available_tracers lists the others
  error_log             errors of commands that log them (the kernel's event filters,
                        histograms and probes, which ftemu does not have: it stays empty)
  tracing_on            1 records, 0 does not
  buffer_size_kb        per-CPU ring buffer size; buffer_total_size_kb sums them
  free_buffer           closing it shrinks the buffer to its minimum (and turns tracing off
                        with options/disable_on_free)
  trace_clock           the clock of the timestamps: local global counter uptime mono
  trace_options         options by name, `no<name>` turns one off; options/ has one file each
  tracing_cpumask       hex mask of the CPUs that record
  instances             mkdir instances/<name> makes another trace array, rmdir removes it
  trace_marker          text written here is recorded as a tracing_mark_write event
  trace_marker_raw      binary writes: a 4-byte id, then data, recorded as one raw_data event
  saved_cmdlines        the pid -> comm names trace prints tasks by
  saved_cmdlines_size   how many of them are kept (write a number to resize and empty it)
  saved_tgids           pid -> tgid, recorded while options/record-tgid is on
  available_filter_functions  the functions filters can name, one per line
  enabled_functions     the functions that call out to ftrace now, and to what
  set_ftrace_filter     trace only the functions written here
\t     accepts: func_full_name or glob-matching-pattern
\t     modules: :mod:<module-name> selects a module's functions
\t    triggers: <function>:<trigger>[:count] acts when the function is hit
\t     trigger: traceon, traceoff, stacktrace, snapshot, dump, cpudump
\t     example: echo schedule:traceoff:3 > set_ftrace_filter
\t              (at most 3 times, counting only hits that turned tracing off)
\t      remove: echo '!schedule:traceoff:0' >> set_ftrace_filter (a counted trigger)
\t              echo '!schedule:traceoff' >> set_ftrace_filter (an unlimited one)
\t     Changes take effect when the file is closed; `>` starts from an empty list
\t     but keeps triggers, `>>` adds; a leading `!` removes.
  set_ftrace_notrace    never trace the functions written here (same patterns, no triggers)
  set_ftrace_pid        trace only these pids (function tracers); `no pid` when empty
  set_ftrace_notrace_pid  never trace these pids
  set_graph_function    function_graph: trace these functions and what they call
  set_graph_notrace     function_graph: leave out these functions and what they call
  max_graph_depth       function_graph: nesting depth recorded (0: no limit)
  tracing_thresh        function_graph: record only the returns of calls that took at least
                        this many microseconds (0: off); trace_stat leaves out faster ones
  options/sleep-time    0: time a task spends scheduled out does not count in its calls'
                        durations (function_graph, function profiler)
  snapshot              a second buffer: `echo 1 > snapshot` allocates it and swaps it with
                        the live one, `echo 2` clears it, `echo 0` frees it; per_cpu/cpuN/snapshot
                        swaps one CPU; per_cpu/cpuN/snapshot_raw reads its pages as trace_pipe_raw
  function_profile_enabled  1 counts hits and time per function in trace_stat/functionN
  stack_trace           the deepest kernel stack seen while the stack tracer runs
  stack_max_size        its size in bytes; write 0 to start over
  stack_trace_filter    like set_ftrace_filter, for the stack tracer
  /proc/sys/kernel/ftrace_enabled        0 turns every call site back into a NOP
  /proc/sys/kernel/stack_tracer_enabled  1 starts the stack tracer
"""

def proc_dointvec_minmax(text: str, lo: int, hi: int) -> int:
    """A sysctl integer write: optional sign and decimal digits around whitespace, within
    [lo, hi]; EINVAL otherwise (nothing is changed)."""
    word = text.strip()
    digits = word[1:] if word[:1] in "+-" else word
    if not digits.isdigit() or not lo <= int(word) <= hi:
        raise fs_error(errno.EINVAL, detail=f"expected an integer in {lo}..{hi}, got {text!r}")
    return int(word)


class PidFile(TextFile):
    """set_ftrace_pid / set_ftrace_notrace_pid: ``no pid`` or one pid per line, ascending.
    O_TRUNC clears; each write adds its pids (a write with none clears the list, as
    trace_pid_write does); changes apply at once and are told to the tracers."""

    def __init__(self, inst: FtraceInstance, attr: str) -> None:
        self.inst, self.attr = inst, attr
        super().__init__(self.show, self.add, 0o644)

    def open(self, flags: int) -> Handle:
        if wants_write(flags) and flags & O_TRUNC and getattr(self.inst, self.attr):
            self._set(frozenset())
        return TextHandle(self)

    def show(self) -> str:
        pids = sorted(getattr(self.inst, self.attr))
        return "".join(f"{p}\n" for p in pids) if pids else "no pid\n"

    def add(self, text: str) -> None:
        new = set()
        for word in text.split():
            pid = kstrtoul(word)
            if pid >= PID_MAX_LIMIT:
                raise fs_error(errno.EINVAL, detail=f"pid {pid} is beyond pid_max")
            new.add(pid)
        self._set(frozenset(getattr(self.inst, self.attr) | new) if new else frozenset())

    def _set(self, pids: frozenset[int]) -> None:
        self.inst.set_pids(self.attr, pids)


def cpumask_show(mask: int, nbits: int) -> str:
    """``%*pb``: the mask in hex, zero-padded to the CPU count, 32-bit groups split by commas."""
    digits = f"{mask:0{(nbits + 3) // 4}x}"
    groups = []
    while len(digits) > 8:
        groups.insert(0, digits[-8:])
        digits = digits[:-8]
    return ",".join([digits, *groups]) + "\n"


def cpumask_parse(text: str, nbits: int) -> int:
    """bitmap_parse: hex digits in comma-separated 32-bit groups, one trailing newline;
    EINVAL for junk, EOVERFLOW for CPUs beyond ``nbits``."""
    word = text[:-1] if text.endswith("\n") else text
    groups = word.split(",")
    if not word or any(not g or len(g) > 8 or any(c not in "0123456789abcdefABCDEF" for c in g)
                       for g in groups):
        raise fs_error(errno.EINVAL, detail=f"not a hex cpu mask: {text!r}")
    mask = 0
    for g in groups:
        mask = mask << 32 | int(g, 16)
    if mask >> nbits:
        raise fs_error(errno.EOVERFLOW, detail=f"mask {word} names CPUs beyond {nbits - 1}")
    return mask


def add_instance_files(inst: FtraceInstance) -> None:
    """The ftrace files every trace array has (ftrace_create_function_files & co)."""
    ft, fs = inst.ft, inst.fs
    fs.register("set_ftrace_filter", ops_regex_file(ft, inst.ops, True, inst))
    fs.register("set_ftrace_notrace", ops_regex_file(ft, inst.ops, False, inst))
    fs.register("set_ftrace_pid", PidFile(inst, "pids"))
    fs.register("set_ftrace_notrace_pid", PidFile(inst, "no_pids"))
    ncpus = len(ft.machine.cpus)

    def set_cpumask(text: str) -> None:
        inst.tracing_cpumask = cpumask_parse(text, ncpus)
        inst.changed("tracing_cpumask")
    fs.register_text("tracing_cpumask", lambda: cpumask_show(inst.tracing_cpumask, ncpus),
                     set_cpumask, mode=0o644)


def register_ftrace_files(ft: "MachineFtrace") -> TraceInstances:
    """The top-level files of ftrace.c (called when ftrace attaches to the machine); returns
    the trace arrays (the top level, then ``instances/``)."""
    tfs: PseudoFS = ft.machine.tracefs
    tfs.register_text("README", lambda: README)
    tfs.register_text("available_filter_functions", lambda: views.available_filter_functions(ft))
    tfs.register_text("available_filter_functions_addrs",
                      lambda: views.available_filter_functions_addrs(ft))
    tfs.register_text("enabled_functions", lambda: views.enabled_functions(ft))
    tfs.register_text("touched_functions", lambda: views.touched_functions(ft))
    tfs.register_text("recursed_functions", lambda: ft.recursed_functions,
                      truncate=ft.x86.recursion.clear, mode=0o644)

    def set_ftrace_enabled(text: str) -> None:
        ft.ftrace_enabled = proc_dointvec_minmax(text, 0, 1)
    ft.machine.fs.register_text(f"{SYSCTL_KERNEL}/ftrace_enabled",
                                lambda: f"{ft.ftrace_enabled}\n", set_ftrace_enabled, mode=0o644)
    return TraceInstances(ft, add_instance_files)
