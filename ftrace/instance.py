"""The ftrace side of one trace array (the top level or an ``instances/<name>``), and the
``instances/`` directory that makes and removes them (kernel/trace/trace.c's
trace_array_create/instance_mkdir and the ftrace.c fields of struct trace_array).

What lives here is what the ftrace files set; the tracers read it:
- ``ops`` is the trace array's function-tracer ops (``tr->ops``). It exists from the start so
  ``set_ftrace_filter``/``set_ftrace_notrace`` always have a hash to set; a tracer adopts it
  whole (sets ``ops.func`` and registers it) instead of making its own.
- ``pids``/``no_pids`` (``set_ftrace_pid``/``set_ftrace_notrace_pid``), ``tracing_cpumask``,
  with listeners told after each change.
- ``trace``: the tracers' trace_array, once attached (see TraceActions); the function commands
  (traceon, snapshot, ...) act through it and are refused with ENODEV without it.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from emu.module import MODULE_STATE_COMING, MODULE_STATE_GOING
from emu.pseudofs import fs_error

from .filter_file import process_cached_mods
from .flags import FtraceOpsFlags as FL
from .ops import FtraceOps
from .pid_filter import PidFilter

if TYPE_CHECKING:
    from emu.pseudofs import PseudoFS

    from .func_probe import FuncProbe
    from .machine import MachineFtrace

INSTANCES = "instances"


class TraceActions(Protocol):
    """What the function commands ask of a trace array (trace.c); provided by the tracers.
    Each may run inside a probe callback, on the vCPU that hit the function."""

    def tracer_tracing_is_on(self) -> bool: ...
    def tracer_tracing_on(self) -> None: ...
    def tracer_tracing_off(self) -> None: ...
    def tracing_alloc_snapshot(self) -> None: ...           # may raise OSError (ENOMEM)
    def tracing_snapshot(self, cpu: int) -> None: ...
    def ftrace_dump(self, cpu: int | None) -> None: ...     # None: every CPU (DUMP_ALL)
    def trace_dump_stack(self, cpu: int) -> None: ...


class FtraceInstance:
    """ftrace's state of one trace array. ``name`` is "" for the top level; ``fs`` is the
    trace array's directory (m.tracefs, or instances/<name>)."""

    def __init__(self, ft: "MachineFtrace", name: str, fs: "PseudoFS") -> None:
        self.ft, self.name, self.fs = ft, name, fs
        self.ops = FtraceOps(ft.arch.ftrace_stub, FL.TRACE_ARRAY, private=self)
        self.mod_trace: list[tuple[str, str]] = []      # cached (func, module) of :mod:
        self.mod_notrace: list[tuple[str, str]] = []
        self.probes: list[FuncProbe] = []               # newest first, as tr->func_probes
        self.pids: frozenset[int] = frozenset()
        self.no_pids: frozenset[int] = frozenset()
        self.tracing_cpumask = (1 << len(ft.machine.cpus)) - 1
        self.pid_filter = PidFilter(self)                 # function-fork
        self.trace: TraceActions | None = None
        self.listeners: list[Callable[[str], None]] = []

    def state(self) -> tuple:
        """Everything the files set, for machine snapshots (hashes are immutable)."""
        return (self.ops.func, self.ops.filter_hash, self.ops.notrace_hash,
                list(self.mod_trace), list(self.mod_notrace),
                [(p, dict(p.counts), p.ops.filter_hash) for p in self.probes],
                self.pids, self.no_pids, self.tracing_cpumask, self.trace)

    def restore(self, st: tuple) -> None:
        (self.ops.func, self.ops.filter_hash, self.ops.notrace_hash, mod_trace, mod_notrace,
         probes, self.pids, self.no_pids, self.tracing_cpumask, self.trace) = st
        self.mod_trace[:], self.mod_notrace[:] = mod_trace, mod_notrace
        self.probes[:] = [p for p, _, _ in probes]
        for p, counts, filter_hash in probes:
            p.counts, p.ops.filter_hash = dict(counts), filter_hash

    def set_pids(self, attr: str, pids: frozenset[int]) -> None:
        """set_ftrace_pid (``pids``) or set_ftrace_notrace_pid (``no_pids``) now lists
        ``pids``; the tracers publish them to their guest callbacks at once."""
        setattr(self, attr, pids)
        self.changed(attr)

    def changed(self, what: str) -> None:
        """Tell the tracers that ``what`` changed: "pids", "no_pids" or "tracing_cpumask"."""
        for fn in list(self.listeners):
            fn(what)

    def require_trace(self) -> TraceActions:
        """The trace array for a command; ENODEV while no tracer side is attached."""
        if self.trace is None:
            raise fs_error(errno.ENODEV, detail="no trace array behind these files")
        return self.trace

    def __repr__(self) -> str:
        return f"<FtraceInstance {self.name or '(top)'}>"


InstanceHook = Callable[[FtraceInstance], None]


class TraceInstances:
    """The top-level trace array and ``instances/``: mkdir makes an FtraceInstance with its
    ftrace files, then runs every ``on_create`` hook (the tracers add their trace array and
    files); rmdir runs the ``on_destroy`` hooks (which may refuse with EBUSY) before the
    instance's ops and probes are torn down."""

    def __init__(self, ft: "MachineFtrace", add_files: Callable[[FtraceInstance], None]) -> None:
        self.ft = ft
        self._add_files = add_files
        self.on_create: list[InstanceHook] = []
        self.on_destroy: list[InstanceHook] = []
        self.top = FtraceInstance(ft, "", ft.machine.tracefs)
        self.instances: dict[str, FtraceInstance] = {}
        self._dirs: dict[str, Any] = {}
        add_files(self.top)
        ft.machine.tracefs.register_dir(INSTANCES, self.mkdir, self.rmdir)
        ft.machine.snapshot_participants.append(self)
        ft.machine.modules.register_notifier(self._module_notifier)

    def _module_notifier(self, state: int, mod: Any) -> None:
        """After ftrace's own notifier: a COMING module gets the cached ``:mod:`` patterns
        (ftrace_module_enable); a GOING one leaves zeroed ips in the hashes of trace arrays
        whose ops is not registered (core clears the registered ones), as
        clear_mod_from_hashes does for every trace array."""
        for inst in self.all():
            if state == MODULE_STATE_COMING:
                process_cached_mods(inst, mod.name)
            elif state == MODULE_STATE_GOING and not inst.ops.flags & FL.ENABLED:
                gone = set(mod.mcount_loc)
                inst.ops.filter_hash, inst.ops.notrace_hash = (
                    frozenset(0 if ip in gone else ip for ip in h)
                    for h in (inst.ops.filter_hash, inst.ops.notrace_hash))

    def all(self) -> list[FtraceInstance]:
        return [self.top, *self.instances.values()]

    def add_hooks(self, create: InstanceHook, destroy: InstanceHook | None = None) -> None:
        """Run ``create`` for every trace array, existing and future, ``destroy`` on rmdir."""
        self.on_create.append(create)
        if destroy is not None:
            self.on_destroy.append(destroy)
        for inst in self.all():
            create(inst)

    def mkdir(self, name: str) -> None:
        fs = self.ft.machine.tracefs
        self._dirs[name] = fs.register_dir(f"{INSTANCES}/{name}")
        inst = FtraceInstance(self.ft, name, fs.view(f"{INSTANCES}/{name}"))
        try:
            self._add_files(inst)
            for hook in self.on_create:
                hook(inst)
        except BaseException:
            fs.unregister(f"{INSTANCES}/{name}")
            del self._dirs[name]
            raise
        self.instances[name] = inst

    def rmdir(self, name: str) -> None:
        inst = self.instances[name]
        for hook in self.on_destroy:
            hook(inst)            # may refuse (EBUSY while its trace_pipe is open)
        if inst.ops.flags & FL.ENABLED:
            raise fs_error(errno.EBUSY, detail=f"instance {name}'s function ops is registered")
        for probe in list(inst.probes):
            probe.unregister_all()
        inst.pid_filter.follow_fork(False)
        self._forget(name)

    def _forget(self, name: str) -> None:
        del self.instances[name]
        self.ft.machine.tracefs.unregister(f"{INSTANCES}/{name}")

    def lookup(self, name: str) -> FtraceInstance:
        """The trace array called ``name`` ("" for the top level); KeyError if none."""
        return self.top if name == "" else self.instances[name]

    # ---- snapshots: the trace arrays and their files follow the machine ----------------
    def snapshot_state(self) -> dict[str, tuple[FtraceInstance, tuple]]:
        return {inst.name: (inst, inst.state()) for inst in self.all()}

    def restore_state(self, st: dict[str, tuple[FtraceInstance, tuple]]) -> None:
        for name in [n for n in self.instances if n not in st]:
            self._forget(name)                         # made after the snapshot
        for name, (inst, state) in st.items():
            if name and name not in self.instances:    # removed after it: back, files and all
                self.ft.machine.tracefs.register(f"{INSTANCES}/{name}", self._dirs[name])
                self.instances[name] = inst
            inst.restore(state)
