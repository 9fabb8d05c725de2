"""The events' function commands (trace_events.c's event_enable_func):
``<glob>:enable_event:<system>:<event>[:N]`` and ``<glob>:disable_event:...`` in
set_ftrace_filter. Registering one puts the event into soft mode in that trace array (its
tracepoint registered, soft-disabled unless it was already on: ``enable`` reads ``0*``);
each hit of a matched function then turns the event on (``1*``) or off (``0*``), at most N
times (counting only real changes) when N is given. Removing the last function of a command
ends soft mode, leaving the event as the command left it unless soft-disabled.

One probe per (trace array, command variant), as the kernel's four ftrace_probe_ops; each
function's data is the registration's EventProbeData, shared by every function one write
attached (its count too), listed as ``func:enable_event:sched:sched_switch:count=N``.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.pseudofs import fs_error

from .func_probe import (UNLIMITED, FuncProbe, ProbeOps, find_probe, kstrtoul,
                         register_ftrace_command, unregister_function_probe)

if TYPE_CHECKING:
    from .instance import FtraceInstance
    from .trace import TraceArray
    from .trace_events import TraceEvents

ENABLE_EVENT_STR, DISABLE_EVENT_STR = "enable_event", "disable_event"


@dataclass
class EventProbeData:
    """struct event_probe_data: which event of which trace array, on or off, how many more
    times (-1: unlimited)."""

    events: "TraceEvents"
    tr: "TraceArray"
    system: str
    name: str
    enable: bool
    count: int

    def soft_disabled(self) -> bool:
        return self.events.file(self.tr, self.name).soft_disabled


def _event_enable_probe(tr: Any, data: dict[int, Any], ip: int, cpu: int) -> None:
    d: EventProbeData = data[ip]
    d.events.set_soft_disabled(d.tr, d.name, not d.enable)


def _event_enable_count_probe(tr: Any, data: dict[int, Any], ip: int, cpu: int) -> None:
    d: EventProbeData = data[ip]
    if not d.count or d.enable == (not d.soft_disabled()):
        return                     # used up, or already in the state it switches to
    if d.count != UNLIMITED:
        d.count -= 1
    _event_enable_probe(tr, data, ip, cpu)


def _event_enable_print(func: str, d: EventProbeData) -> str:
    cmd = ENABLE_EVENT_STR if d.enable else DISABLE_EVENT_STR
    tail = "unlimited" if d.count == UNLIMITED else f"count={d.count}"
    return f"{func}:{cmd}:{d.system}:{d.name}:{tail}\n"


def _event_enable_free(d: EventProbeData) -> None:
    """No function holds this registration any more: it gives up its soft-mode reference
    (nothing to do once its trace array is gone)."""
    if d.tr in d.events.tracing.arrays.values():
        d.events.ftrace_event_enable_disable(d.tr, d.name, False, soft_disable=True)


EVENT_PROBE_OPS = {
    kind: ProbeOps(kind.removesuffix("_count"), True, func, _event_enable_print, _event_enable_free)
    for kind, func in ((f"{ENABLE_EVENT_STR}", _event_enable_probe),
                       (f"{ENABLE_EVENT_STR}_count", _event_enable_count_probe),
                       (f"{DISABLE_EVENT_STR}", _event_enable_probe),
                       (f"{DISABLE_EVENT_STR}_count", _event_enable_count_probe))
}


def event_enable_func(inst: "FtraceInstance", glob: str, cmd: str, param: str | None,
                      enable: bool) -> None:
    """event_enable_func: ``param`` is ``system:event[:count]``. EINVAL for a missing or
    unknown event, a bad count or a glob matching no function, ENOENT if it matched only
    functions that already have this command (the soft mode it took is given back)."""
    from .trace_events import find_event
    if not enable or param is None:
        raise fs_error(errno.EINVAL, detail=f"{cmd}: needs <system>:<event>")
    system, sep, rest = param.partition(":")
    if not sep:
        raise fs_error(errno.EINVAL, detail=f"{cmd}: needs <system>:<event>")
    event, counted, number = rest.partition(":")
    tr = inst.require_trace()
    events: "TraceEvents" = tr.tracing.events
    ev = find_event(system, event)
    if ev is None:
        raise fs_error(errno.EINVAL, detail=f"{cmd}: no event {system}:{event}")
    kind = f"{cmd}_count" if counted else cmd
    if glob.startswith("!"):
        unregister_function_probe(inst, kind, glob[1:])
        return
    count = UNLIMITED
    if counted:
        number = number.split(":", 1)[0]
        if not number:
            raise fs_error(errno.EINVAL, detail=f"{cmd}: empty count")
        count = kstrtoul(number)
    data = EventProbeData(events, tr, ev.system, ev.name, cmd == ENABLE_EVENT_STR, count)
    events.ftrace_event_enable_disable(tr, ev.name, True, soft_disable=True)
    probe = find_probe(inst, kind) or FuncProbe(inst, kind, EVENT_PROBE_OPS[kind])
    try:
        if not probe.register(glob, data):
            raise fs_error(errno.ENOENT, detail=f"{glob!r}: no new function to attach to")
    except OSError:
        events.ftrace_event_enable_disable(tr, ev.name, False, soft_disable=True)
        raise


for _cmd in (ENABLE_EVENT_STR, DISABLE_EVENT_STR):
    register_ftrace_command(_cmd, event_enable_func)
