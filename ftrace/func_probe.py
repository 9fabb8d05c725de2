"""Function probes and the filter commands of set_ftrace_filter (ftrace.c
register_ftrace_function_probe, trace_functions.c's traceon/traceoff/stacktrace/dump/cpudump,
trace.c's snapshot): ``<glob>:<command>[:<count>]`` and ``!<glob>:<command>[:...]``.

One probe per (trace array, command variant), each an ftrace_ops whose filter hash holds the
functions it is attached to; counted variants keep one counter per function. The actions go
through the trace array's TraceActions (instance.py), on the vCPU that hit the function.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.pseudofs import fs_error

from .flags import FtraceOpsFlags as FL
from .hash import match_records
from .ops import EMPTY_HASH, FtraceOps
from .regex import MatchType, filter_parse_regex, ftrace_match

if TYPE_CHECKING:
    from .instance import FtraceInstance, TraceActions

UNLIMITED = -1


@dataclass(frozen=True)
class ProbeOps:
    """struct ftrace_probe_ops: the listing name, whether it keeps per-function data (a
    count, or a command's own data), what a hit does: ``func(trace, counts, ip, cpu)``; and
    for commands with their own data, its listing line (``print(func_name, data)``) and
    what to do once no function holds that data any more (``free(data)``)."""

    name: str
    counted: bool
    func: Callable[["TraceActions", dict[int, Any], int, int], None]
    print: Callable[[str, Any], str] | None = None
    free: Callable[[Any], None] | None = None


def _traceon(on: bool) -> Callable:
    def hit(tr: "TraceActions", counts: dict[int, int], ip: int, cpu: int) -> None:
        if on != tr.tracer_tracing_is_on():
            tr.tracer_tracing_on() if on else tr.tracer_tracing_off()
    return hit


def _traceon_count(on: bool) -> Callable:
    def hit(tr: "TraceActions", counts: dict[int, int], ip: int, cpu: int) -> None:
        """update_traceon_count: acts at most count times, counting only real changes."""
        if counts[ip] <= 0 or on == tr.tracer_tracing_is_on():
            return
        tr.tracer_tracing_on() if on else tr.tracer_tracing_off()
        counts[ip] -= 1
    return hit


def _counted(action: Callable[["TraceActions", int], None]) -> Callable:
    """update_count, then act: a counted function acts while its count is positive."""
    def hit(tr: "TraceActions", counts: dict[int, int], ip: int, cpu: int) -> None:
        if ip in counts:
            if counts[ip] <= 0:
                return
            counts[ip] -= 1
        action(tr, cpu)
    return hit


def _stacktrace_count(tr: "TraceActions", counts: dict[int, int], ip: int, cpu: int) -> None:
    # The kernel tests the global tracing_is_on() here; the instance's own state is what
    # an instance's trigger can see in ftemu, so that is what is tested.
    if not tr.tracer_tracing_is_on() or counts[ip] == 0:
        return
    counts[ip] -= 1
    tr.trace_dump_stack(cpu)


PROBE_OPS = {
    "traceon": ProbeOps("traceon", False, _traceon(True)),
    "traceon_count": ProbeOps("traceon", True, _traceon_count(True)),
    "traceoff": ProbeOps("traceoff", False, _traceon(False)),
    "traceoff_count": ProbeOps("traceoff", True, _traceon_count(False)),
    "stacktrace": ProbeOps("stacktrace", False, lambda tr, c, ip, cpu: tr.trace_dump_stack(cpu)),
    "stacktrace_count": ProbeOps("stacktrace", True, _stacktrace_count),
    "dump": ProbeOps("dump", True, _counted(lambda tr, cpu: tr.ftrace_dump(None))),
    "cpudump": ProbeOps("cpudump", False, _counted(lambda tr, cpu: tr.ftrace_dump(cpu))),
    "snapshot": ProbeOps("snapshot", False, lambda tr, c, ip, cpu: tr.tracing_snapshot(cpu)),
    "snapshot_count": ProbeOps("snapshot", True,
                               _counted(lambda tr, cpu: tr.tracing_snapshot(cpu))),
}


class FuncProbe:
    """struct ftrace_func_probe: one command variant attached to functions of one trace
    array; registered while it is attached anywhere, dropped when it is attached nowhere."""

    def __init__(self, inst: "FtraceInstance", kind: str, probe_ops: ProbeOps | None = None) -> None:
        self.inst, self.kind = inst, kind
        self.probe_ops = probe_ops or PROBE_OPS[kind]
        self.counts: dict[int, int] = {}
        self.ops = FtraceOps(self._call, private=inst)

    def _call(self, ip: int, parent_ip: int, op: FtraceOps, regs: Any) -> None:
        """function_trace_probe_call: the command's action, on the CPU that hit ``ip``. A
        hit on a function no longer attached (a vCPU that entered the trampoline before the
        probe let go of it) does nothing, as ftrace_func_mapper_find_ip finds no data."""
        tr = self.inst.trace
        if tr is None or (self.probe_ops.counted and ip not in self.counts):
            return
        self.probe_ops.func(tr, self.counts, ip, self.inst.ft.smp_processor_id())

    def listing(self, name_of: Callable[[int], str]) -> list[str]:
        """``func:cmd:unlimited`` / ``func:cmd:count=N`` per attached function."""
        out = []
        for ip in sorted(self.ops.filter_hash):
            if self.probe_ops.print is not None:
                out.append(self.probe_ops.print(name_of(ip), self.counts[ip]))
                continue
            count = self.counts.get(ip) if self.probe_ops.counted else None
            tail = "unlimited" if count is None else f"count={count}"
            out.append(f"{name_of(ip)}:{self.probe_ops.name}:{tail}\n")
        return out

    def register(self, glob: str, count: Any) -> int:
        """register_ftrace_function_probe: attach to every function ``glob`` matches that
        does not have this probe yet, with ``count`` (or the command's data) as each one's
        data; returns how many were new. EINVAL if ``glob`` matched nothing."""
        ft = self.inst.ft
        old = self.ops.filter_hash
        new, _, found = match_records(ft.records, ft.arch.lookup, old, glob)
        added = new - old
        if not found:
            raise fs_error(errno.EINVAL, detail=f"{glob!r}: no such function")
        if not added:
            return 0
        # Each function's data first: the ops fires while _move still runs the machine
        # (patching, grace periods), and a hit must find it.
        if self.probe_ops.counted:
            self.counts.update(dict.fromkeys(added, count))
        try:
            self._move(new)
        except BaseException:
            for ip in added:
                self.counts.pop(ip, None)
            raise
        if self not in self.inst.probes:
            self.inst.probes.insert(0, self)
        return len(added)

    def unregister(self, glob: str) -> None:
        """unregister_ftrace_function_probe_func: detach from the functions ``glob`` names
        (empty or ``*``: all); EINVAL if none."""
        ft = self.inst.ft
        if glob in ("", "*"):
            gone = set(self.ops.filter_hash)
        else:
            g = filter_parse_regex(glob)
            if g.type == MatchType.MATCH_INDEX:
                gone = set()        # the kernel matches names here, never indexes
            else:
                gone = {ip for ip in self.ops.filter_hash
                        if (sym := ft.arch.lookup(ip)) and ftrace_match(sym[0], g)}
        if not gone:
            raise fs_error(errno.EINVAL, detail=f"{glob!r}: not attached to any such function")
        self._move(frozenset(self.ops.filter_hash - gone))
        dropped = [self.counts.pop(ip, None) for ip in gone]
        if self.probe_ops.free is not None:
            held = list(self.counts.values())
            for data in {id(d): d for d in dropped}.values():
                if not any(d is data for d in held):
                    self.probe_ops.free(data)

    def unregister_all(self) -> None:
        if self.ops.filter_hash:
            self.unregister("")

    def _move(self, new: frozenset[int]) -> None:
        """Publish the new hash: registering the ops on its first function, unregistering
        it (then dropping the probe) when it has none left."""
        ft = self.inst.ft
        enabled = bool(self.ops.flags & FL.ENABLED)
        if not new:
            if enabled:
                ft.unregister_ftrace_function(self.ops)
            ft._hash_move_and_update_ops(self.ops, EMPTY_HASH, True)
            if self in self.inst.probes:
                self.inst.probes.remove(self)
            return
        ft._hash_move_and_update_ops(self.ops, new, True)
        if not enabled:
            ft.register_ftrace_function(self.ops)


def find_probe(inst: "FtraceInstance", kind: str) -> FuncProbe | None:
    """The trace array's probe of that command variant, if it has one."""
    return next((p for p in inst.probes if p.kind == kind), None)


def kstrtoul(text: str, base: int = 0) -> int:
    """kstrtoul(text, base): with base 0, 0x.. hex, 0.. octal, else decimal; with base 10
    decimal only; one trailing newline; EINVAL for anything else."""
    word = text[:-1] if text.endswith("\n") else text
    word = word[1:] if word.startswith("+") else word
    digits = word
    if base == 0:
        base = 10
        if word[:2] in ("0x", "0X"):
            base, digits = 16, word[2:]
        elif word.startswith("0") and len(word) > 1:
            base, digits = 8, word[1:]
    try:
        if not digits or not digits.isalnum():
            raise ValueError
        return int(digits, base)
    except ValueError:
        raise fs_error(errno.EINVAL, detail=f"not a number: {text!r}") from None


def _parse_count(param: str | None) -> int:
    """The optional count (up to the next ``:``); none or empty means unlimited (-1)."""
    number = "" if param is None else param.split(":", 1)[0]
    return kstrtoul(number) if number else UNLIMITED


def unregister_function_probe(inst: "FtraceInstance", kind: str, glob: str) -> None:
    """unregister_ftrace_function_probe_func: detach the ``kind`` probe from the functions
    ``glob`` names; ENODEV if the trace array has no such probe."""
    probe = find_probe(inst, kind)
    if probe is None:
        raise fs_error(errno.ENODEV, detail=f"no {kind} probe to remove")
    probe.unregister(glob)


def probe_command(inst: "FtraceInstance", glob: str, cmd: str, param: str | None,
                  enable: bool) -> None:
    """ftrace_trace_probe_callback and its callers: which variant (counted when a parameter
    was given), then register, or unregister for a leading ``!``."""
    if inst.trace is None:
        raise fs_error(errno.ENODEV, detail=f"{cmd}: no trace array behind this file")
    if not enable:
        raise fs_error(errno.EINVAL, detail=f"{cmd}: commands go to set_ftrace_filter only")
    if cmd in ("dump", "cpudump"):
        kind, param = cmd, "1"              # "Only dump once" (cpudump keeps no counter)
    else:
        kind = f"{cmd}_count" if param is not None else cmd
    if glob.startswith("!"):
        unregister_function_probe(inst, kind, glob[1:])
        return
    count = _parse_count(param)
    if cmd == "snapshot":
        inst.trace.tracing_alloc_snapshot()
    probe = find_probe(inst, kind) or FuncProbe(inst, kind)
    if not probe.register(glob, count):
        raise fs_error(errno.EINVAL, detail=f"{glob!r}: no new function to attach to")


Command = Callable[["FtraceInstance", str, str, "str | None", bool], None]
# The commands of set_ftrace_filter (register_ftrace_command): ``fn(inst, glob, cmd, param,
# enable)``; others (the events' enable_event/disable_event) add theirs.
FTRACE_COMMANDS: dict[str, Command] = dict.fromkeys(
    ("traceon", "traceoff", "stacktrace", "dump", "cpudump", "snapshot"), probe_command)


def register_ftrace_command(name: str, fn: Command) -> None:
    """register_ftrace_command: ``<glob>:name[:param]`` in set_ftrace_filter calls ``fn``."""
    FTRACE_COMMANDS[name] = fn
