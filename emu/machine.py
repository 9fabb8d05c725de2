"""The machine: vCPUs over shared RAM, run alternately in instruction slices, in virtual time.

Each round gives every running vCPU the same number of instructions, so runs are
deterministic and ``lock`` operations stay atomic. Between slices the host expires APIC
timers, delivers pending interrupts and NMIs, starts application processors, and skips idle
time when every vCPU waits in ``hlt``.
"""
from __future__ import annotations

import errno
import mmap
import struct
from pathlib import Path
from typing import Any, Callable

from unicorn.x86_const import (UC_X86_REG_CR3, UC_X86_REG_RAX, UC_X86_REG_RDI, UC_X86_REG_RIP,
                               UC_X86_REG_RSP)

from . import checks, crash, kbuild, loader, machine_files, snapshot
from . import memlayout as L
from .apic import NEVER
from .cpu import HALTED, RUNNING, STOPPED, VCpu
from .devices import ExitPort, Serial16550
from .dynamic_debug import DynamicDebug
from .elf import KernelImage
from .callctx import CallbackContext, DeferredWork
from .ctrlc import DeferredCtrlC
from .errors import BudgetExceeded, CallbackError, EmuError, GuestPanic
from .execmem import ExecMem
from .guestcall import enter_kernel_call, run_to_return
from .guestmem import GuestMemory
from .kernelview import KernelView
from .module import Module, ModuleLoader
from .paging import PageWalker
from .pseudofs import PseudoFS
from .ramimage import RamImage
from .printk import LOGLEVEL_INFO, KernelLog
from .snapshot import Snapshot
from .symbols import Symbols
from .sysfs import Sysfs
from .ticker import MIN_SLICE_NS, SliceTicker

KSTAT_FIELDS = ("timer_interrupts", "softirqs", "nmis", "syscalls", "context_switches",
                "idle_entries", "cpu_offline", "cpu_online", "page_faults", "ipis")
INIT_UP, TESTS_PASSED = "init: up", "ALL TESTS PASSED"
FREE_SLICE_MAX_NS = 2_000_000
TRACEFS = "/sys/kernel/tracing"
MAX_CALL_DEPTH = 16         # Machine.call nested from callbacks, outermost call included


class CodeHook:
    """A code hook on every vCPU; ``remove()`` takes it off all of them."""

    def __init__(self, machine: "Machine", entry: tuple, handles: list) -> None:
        self._machine, self._entry, self._handles = machine, entry, handles

    def remove(self) -> None:
        if self._entry in self._machine.code_hooks:
            self._machine.code_hooks.remove(self._entry)
        for cpu, h in self._handles:
            cpu.remove_code_hook(h)
        self._handles = []


def _extensions() -> list:
    """Installed ``ftemu.extensions`` entry points (read once)."""
    global _EXTENSIONS
    if _EXTENSIONS is None:
        from importlib.metadata import entry_points
        _EXTENSIONS = sorted(entry_points(group="ftemu.extensions"), key=lambda ep: ep.name)
    return _EXTENSIONS


_EXTENSIONS: list | None = None


class Machine(GuestMemory, Symbols, CallbackContext):
    """An x86-64 PC with ``cpus`` vCPUs and ``memory_mb`` of RAM running the guest kernel.

    ``kernel`` is an ELF path (default: the bundled guest, built on first use). ``quantum``
    is the slice length in instructions; ``slice_seed`` makes slice lengths pseudo-random
    (still deterministic for one seed). ``nmi_period_ms`` raises an NMI on every CPU
    periodically, like a watchdog. Other keyword ``options`` go to the extensions
    (``ftemu.extensions`` entry points, e.g. ftrace's ``ftrace_regs``). ``deterministic=False`` is the free-running mode: no
    instruction counting (faster), virtual time follows the host clock, runs differ."""

    def __init__(self, cpus: int = 1, memory_mb: int = 32, kernel: str | Path | None = None,
                 cmdline: str = "console=ttyS0", *, quantum: int = 20000,
                 slice_seed: int | None = None, nmi_period_ms: float | None = None,
                 deterministic: bool = True, **options: Any) -> None:
        nmi_period = checks.machine_args(cpus, memory_mb, kernel, cmdline, quantum, slice_seed,
                                         nmi_period_ms, deterministic)
        self.image = KernelImage(kernel or kbuild.kernel_path())
        self.cmdline = cmdline
        self.ram_size = memory_mb << 20
        self._mmap = mmap.mmap(-1, self.ram_size)
        self.ram = memoryview(self._mmap)
        import ctypes
        self.ram_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._mmap))
        self.ram_image: RamImage | None = None     # what the RAM is mapped from (RamImage.map_over)
        self.walker = PageWalker(self.ram)
        self.execmem = ExecMem()
        self.now = 0
        self.quantum = quantum
        self.deterministic = deterministic
        self.ticker = None if deterministic else SliceTicker()
        self._rng = None
        if slice_seed is not None:
            import random
            self._rng = random.Random(slice_seed)
        self.nmi_period = nmi_period
        self._ctrlc = DeferredCtrlC()
        self._next_nmi = self.nmi_period or NEVER
        self.interrupt_holds: list[tuple[int, int]] = []
        self.exit_code: int | None = None
        self._exit_cpu: VCpu | None = None
        self.serial = Serial16550()
        self.serial.rewrite = lambda line: crash.symbolise_line(self, line)
        self.serial.watch |= {INIT_UP, TESTS_PASSED}
        self.port_out: dict[int, Callable] = {}
        self.port_in: dict[int, Callable] = {}
        self.trap_hooks: dict[int, list[Callable[[VCpu], bool]]] = {}
        self.code_hooks: list[tuple[int, Callable[[VCpu], None]]] = []
        self.delivery_listeners: list[Callable[[VCpu, int], None]] = []
        self._deferred = DeferredWork()
        self.snapshot_participants: list[Any] = [self._deferred]
        self.symbol_sources: list[Callable[[int], str | None]] = []
        self._defer_holds = 0
        self._deferred_error: EmuError | None = None
        self._call_depth = 0
        self.last_call_instructions = 0
        for port in self.serial.ports():
            self.add_port(port, lambda cpu, p, v: self.serial.write(p, v), lambda cpu, p: self.serial.read(p))
        exit_port = ExitPort(self._power_off)
        self.add_port(L.EXIT_PORT, lambda cpu, p, v: (setattr(self, "_exit_cpu", cpu), exit_port.write(p, v)))
        # Not page-aligned: Unicorn raises a spurious #PF for an ``until`` address at the
        # start of a page that follows an unmapped one.
        self.call_return_va = self.execmem.alloc(32) + 16
        # Page tables that map nothing (a zero PML4): VCpu._io_fault's way to stop a block.
        self.no_pages_pa = ExecMem.to_phys(self.execmem.alloc(4096, 4096, executable=False))
        self.ram[ExecMem.to_phys(self.call_return_va)] = 0xCC
        self.add_symbol_source(lambda a: f"{crash.CALL_RETURN}+0x0/0x1" if a == self.call_return_va else None)
        self.cpus = [VCpu(self, i) for i in range(cpus)]
        loader.load_image(self.ram, self.image)
        loader.write_boot_params(self.ram, cpus, cmdline)
        loader.write_boot_tables(self.ram)
        for c in self.cpus:
            loader.reset_cpu(c)
        self._reset_ctx = [c.uc.context_save() for c in self.cpus]
        boot = self.cpus[0]
        boot.regs.write(UC_X86_REG_RIP, self.image.entry)
        boot.regs.write(UC_X86_REG_RDI, L.BOOT_PARAMS_PA)
        boot.state = RUNNING
        self.kernel = KernelView(self)
        for c in self.cpus:
            c.attach_pvclock()
        self.log = KernelLog(self)
        self.modules = ModuleLoader(self)
        self.fs = PseudoFS(waiter=self._wait_event)     # each layer registers its files
        self.tracefs = self.fs.view(TRACEFS)
        self.dynamic_debug = DynamicDebug(self)     # pr_debug sites the layers register
        self.sysfs = Sysfs(self)                    # the guest's kobjects under /sys
        machine_files.register(self)
        self._attach_extensions(dict(options))

    def _attach_extensions(self, options: dict[str, Any]) -> None:
        """Instantiate every installed extension as an attribute (``machine.ftrace``)."""
        for ep in _extensions():
            setattr(self, ep.name, ep.load()(self, options))
        if options:
            raise ValueError(f"unknown machine option(s): {', '.join(sorted(options))}")

    # ---- extension points (used by ftrace) ----------------------------------
    def add_port(self, port: int, out_fn: Callable | None = None, in_fn: Callable | None = None) -> None:
        """Route ``out``/``in`` on ``port`` to ``out_fn(cpu, port, value)`` / ``in_fn(cpu, port)``."""
        if out_fn is not None:
            self.port_out[port] = out_fn
        if in_fn is not None:
            self.port_in[port] = in_fn

    def add_trap_hook(self, vector: int, fn: Callable[[VCpu], bool]) -> None:
        """Let ``fn(cpu)`` see exception ``vector`` first; it returns True if it handled it."""
        self.trap_hooks.setdefault(vector, []).append(fn)

    def add_code_hook(self, addr: int, fn: Callable[[VCpu], None]) -> "CodeHook":
        """Call ``fn(cpu)`` whenever any vCPU is about to execute ``addr``; ``.remove()`` it."""
        entry = (addr, fn)
        self.code_hooks.append(entry)
        handles = [(c, c.add_code_hook(addr, fn)) for c in getattr(self, "cpus", [])]
        return CodeHook(self, entry, handles)

    def hold_interrupts_in(self, start: int, end: int) -> None:
        """Host-generated guest code in [start, end) runs as if interrupts and NMIs were off:
        a vCPU whose slice ends there takes what is pending at a later slice end, as a vCPU
        with IF=0 does. For code that must not be interrupted half-way (the tracers' event
        writes) and cannot afford cli/popfq (popfq leaves Unicorn's translated code)."""
        self.interrupt_holds.append((start, end))

    def holds_interrupts(self, rip: int) -> bool:
        for start, end in self.interrupt_holds:       # a loop: this runs at every tick
            if start <= rip < end:
                return True
        return False

    def sync_cores(self, burst: int = 64) -> None:
        """Serialize every other vCPU, as the kernel's sync_core IPI does; since vCPUs really
        run concurrently, each running one first executes a short burst of instructions
        (jittered by ``slice_seed``), so it may meet text that is half-way through a change."""
        for c in self.cpus:
            if c.state == RUNNING and not c.in_slice:
                n = burst if self._rng is None else self._rng.randint(1, 2 * burst)
                try:
                    c.run_from(c.now(), n)
                except CallbackError as e:     # mid-update: raised by the next run or call
                    self.defer_error(e)

    def trace_delivery(self, cpu: VCpu, vector: int) -> None:
        for fn in self.delivery_listeners:
            fn(cpu, vector)

    # ---- devices -----------------------------------------------------------
    @property
    def console(self) -> str:
        """All text the guest has printed on the serial console."""
        return self.serial.text()

    def _power_off(self, code: int) -> None:
        self.exit_code = code
        for c in self.cpus:
            c.request_stop()

    def nmi(self, cpu: int | None = None) -> None:
        """Raise an NMI on one CPU, or on every CPU."""
        for c in self.cpus if cpu is None else [self.cpus[cpu]]:
            c.apic.nmi_pending = True

    def start_ap(self, cpu: VCpu) -> None:
        """INIT + STARTUP: restart ``cpu`` at boot_params.ap_entry."""
        bp = L.BOOT_PARAMS_PA
        entry, stack, cr3 = struct.unpack_from("<QQQ", self.ram, bp + L.BP_AP_ENTRY)
        cpu.uc.context_restore(self._reset_ctx[cpu.index])
        cpu.uc.reg_write(UC_X86_REG_CR3, cr3)
        cpu.regs.write(UC_X86_REG_RIP, entry)
        cpu.regs.write(UC_X86_REG_RSP, stack)
        cpu.regs.write(UC_X86_REG_RDI, cpu.index)
        cpu.flush_tb()
        cpu.apic.reset()
        cpu.state = RUNNING

    # ---- running -----------------------------------------------------------
    def _check_exit(self) -> None:
        if self.exit_code is None:
            return
        if self.exit_code == L.EXIT_PANIC:
            cpu = self._exit_cpu or self.cpus[0]
            msg = next((ln for ln in reversed(self.console.splitlines()) if ln.startswith("panic:")),
                       "panic")
            raise cpu.fatal(GuestPanic, f"guest {msg}")

    def _slice_length(self, limit_ns: int) -> int:
        """Instructions for the next round: the quantum (jittered with ``slice_seed``), cut at
        the next event. Free-running slices go straight to the next event, but last at least
        ``MIN_SLICE_NS`` (an event is then up to that late): each slice costs a ticker
        hand-off, so fewer, longer slices are cheaper."""
        if not self.deterministic:
            return max(MIN_SLICE_NS, min(limit_ns, FREE_SLICE_MAX_NS)) // L.NS_PER_INSN
        q = self.quantum if self._rng is None else self._rng.randint(max(1, self.quantum // 8), self.quantum)
        return max(1, min(q, limit_ns // L.NS_PER_INSN))

    def _run(self, until_ns: int, stop_when: Callable[[], bool] | None = None) -> None:
        with self._ctrlc:
            self._rounds(until_ns, stop_when)

    def _rounds(self, until_ns: int, stop_when: Callable[[], bool] | None) -> None:
        cpus = self.cpus
        deferred = self._deferred.queue
        while True:
            self._ctrlc.check()
            while deferred and not self._defer_holds:
                deferred.pop(0)()
            self._check_exit()
            if self.exit_code is not None:
                return
            if stop_when is not None and stop_when():
                return
            now = self.now
            if now >= until_ns:
                return
            if now >= self._next_nmi:          # a watchdog: online CPUs only
                for c in cpus:
                    if c.state in (RUNNING, HALTED):
                        c.apic.nmi_pending = True
                self._next_nmi += self.nmi_period
            for c in cpus:
                c.apic.expire(now)
            next_event = min(min(c.apic.deadline for c in cpus), self._next_nmi, until_ns)
            count = self._slice_length(next_event - now)
            used = 0
            for c in cpus:
                c.deliver_pending()
                if c.state == RUNNING:
                    used = max(used, c.run_from(now, count))
                    if self.exit_code is not None:
                        break
            if used:
                self.now = now + used
            elif next_event >= NEVER:
                raise EmuError("every CPU is idle and no timer is armed: the guest hangs")
            else:
                self.now = max(now + L.NS_PER_INSN, next_event)

    def run(self, ms: float) -> None:
        """Run for ``ms`` milliseconds of virtual time."""
        self._top_level("run")
        self._run(self.now + int(checks.duration_ms("ms", ms) * 1e6))

    def run_until(self, stop_when: Callable[[], bool], budget_ms: float) -> None:
        """Run until ``stop_when()`` is true; BudgetExceeded after ``budget_ms`` of virtual time."""
        self._top_level("run_until")
        if not callable(stop_when):
            raise TypeError(f"stop_when must be callable, not {type(stop_when).__name__}")
        deadline = self.now + int(checks.duration_ms("budget_ms", budget_ms) * 1e6)
        self._run(deadline, stop_when)
        if not stop_when() and self.exit_code is None:
            cpu = next((c for c in self.cpus if c.state == RUNNING), self.cpus[0])
            raise cpu.fatal(BudgetExceeded, f"still not done after {budget_ms:g} ms of virtual time")

    def _wait_event(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """m.fs's waiter: run the guest until ``cond()`` or ``timeout_s`` of virtual time."""
        deadline = self.now + int(timeout_s * 1e9)
        self._run(deadline, cond)
        return cond()

    def boot(self, budget_ms: float = 5000) -> None:
        """Run until the in-kernel tests passed and init is up in user mode."""
        self._top_level("boot")
        self.run_until(lambda: INIT_UP in self.serial.lines_seen, budget_ms)
        if self.exit_code is not None:
            raise EmuError(f"the guest powered off during boot (exit code {self.exit_code})")
        if TESTS_PASSED not in self.serial.lines_seen:
            raise EmuError("init came up but the in-kernel tests did not print ALL TESTS PASSED")

    def call(self, func: str | int, *args: int, cpu: int = 0, max_insns: int = 50_000_000) -> int:
        """Run guest function ``func(*args)`` to completion on ``cpu`` in kernel context with
        interrupts off, and return its rax (``last_call_instructions`` says how many
        instructions it took). Works from callbacks too, nested up to MAX_CALL_DEPTH calls
        deep (EmuError beyond). Ctrl-C stops it within ``CALL_CHUNK`` instructions, the vCPU
        put back as before the call."""
        args = checks.call_args(func, args, cpu, len(self.cpus), max_insns)
        if self._call_depth >= MAX_CALL_DEPTH:
            raise EmuError(f"Machine.call nested deeper than {MAX_CALL_DEPTH} calls")
        if not self.in_guest():
            self._top_level("call")
        addr = func if isinstance(func, int) else self.symbol_address(func)
        c = self.cpus[cpu]
        if c.state == STOPPED:
            raise EmuError(f"CPU {cpu} is not running: cannot call {self.lookup(addr)} there")
        saved = c.uc.context_save()
        counters = c.save_counters()
        in_slice, slice_start = c.in_slice, c.slice_start
        start = c.now()
        self._call_depth += 1
        try:
            c.slice_start, c.in_slice = start, True
            with self._ctrlc:
                enter_kernel_call(self, c, addr, args)
                self.last_call_instructions = run_to_return(self, c, addr, max_insns, self._ctrlc)
            return c.regs.read(UC_X86_REG_RAX)
        finally:
            c.uc.context_restore(saved)
            c.restore_counters(counters)
            c.resume_after_call(in_slice, slice_start, c.slice_start - start)
            self._call_depth -= 1

    # ---- modules and the kernel log ---------------------------------------------
    def insmod(self, path: str | Path, params: str | dict | None = None) -> Module:
        """Load a module built by ``ftemu kmod build`` and run its init (``insmod path a=1``);
        ``ModuleError`` (an OSError with the kernel's errno) on failure, nothing left loaded."""
        return self.modules.load_module(path, params)

    def rmmod(self, name: str) -> None:
        """Run a module's exit and unload it; EBUSY while it is in use (a live patch)."""
        self.modules.delete_module(name)

    @property
    def dmesg(self) -> str:
        """The kernel log, one line per record, without timestamps (``dmesg -t``)."""
        return self.log.text

    def printk(self, text: str, level: int = LOGLEVEL_INFO) -> None:
        """Log a line on the kernel's behalf (the host's half of the kernel prints here)."""
        self.log.printk(text, level)

    def gdbserver(self, port: int = 1234, host: str = "127.0.0.1", sessions: int | None = None) -> str:
        """Serve the GDB remote protocol on ``host:port`` (loopback) until gdb kills the target
        or ``sessions`` debugger sessions ended; the guest is stopped while gdb holds it and
        runs between sessions once gdb detached. See ``emu.gdbstub``."""
        from .gdbstub import GdbServer
        server = GdbServer(self, port, host)
        try:
            return server.serve(sessions)
        finally:
            server.close()

    # ---- hotplug -----------------------------------------------------------
    def _hotplug(self, cpu: int, up: int, budget_ms: float) -> None:
        checks.integer("cpu", cpu, -(1 << 31), (1 << 31) - 1)       # the guest's int
        ret = self.call("hotplug_request", cpu, up) & 0xFFFFFFFF
        ret -= (ret >> 31) << 32                                   # int: 0 or -errno
        if ret:
            name = errno.errorcode.get(-ret, str(ret))
            raise EmuError(f"hotplug_request(cpu {cpu}, {'up' if up else 'down'}) failed: {name}")
        pending = self.symbol_address("hotplug_pending")
        self.run_until(lambda: struct.unpack("<i", self.read(pending, 4))[0] == 0, budget_ms)

    def cpu_down(self, cpu: int, budget_ms: float = 1000) -> None:
        """Take ``cpu`` offline the way the kernel's hotplug thread does, and wait for it."""
        self._hotplug(cpu, 0, budget_ms)

    def cpu_up(self, cpu: int, budget_ms: float = 1000) -> None:
        """Bring ``cpu`` back online and wait for it."""
        self._hotplug(cpu, 1, budget_ms)

    def online_cpus(self) -> list[int]:
        mask = self.read_u64(self.symbol_address("cpu_online_mask"))
        return [i for i in range(len(self.cpus)) if mask >> i & 1]

    # ---- statistics and snapshots ------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts per CPU (kernel kstat + host instruction counts) and their totals."""
        base = self.symbol_address("kstat")
        raw = self.read(base, 8 * L.NCPU * L.KSTAT_NR)
        per_cpu = []
        for c in self.cpus:
            row = struct.unpack_from(f"<{L.KSTAT_NR}Q", raw, 8 * L.KSTAT_NR * c.index)
            d = dict(zip(KSTAT_FIELDS, row))
            d["instructions"] = c.instructions
            per_cpu.append(d)
        total = {k: sum(d[k] for d in per_cpu) for k in per_cpu[0]}
        return {"virtual_ns": self.now, "cpus": per_cpu, "total": total}

    def snapshot(self) -> Snapshot:
        """Capture RAM, every CPU and the devices."""
        self._top_level("snapshot", raise_kept=False)
        return snapshot.take(self)

    def restore(self, snap: Snapshot) -> None:
        """Continue from ``snap`` exactly as the machine would have from that moment."""
        self._top_level("restore", raise_kept=False)
        self._deferred_error = None           # it belonged to the abandoned continuation
        snapshot.restore(self, snap)
