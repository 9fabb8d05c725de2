"""ftrace on a Machine: ``machine.ftrace``, the kernel's API plus the views a user reads.

Attached to every Machine at creation (the ``ftemu.extensions`` entry point), so every call
site is checked and turned into the NOP before the guest runs its first instruction, as
ftrace_init does at boot. Machine option ``ftrace_regs=False`` removes regs support
(no ftrace_regs_caller), as on architectures without DYNAMIC_FTRACE_WITH_REGS.
"""
from __future__ import annotations

import copy
import errno
import struct
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from emu import memlayout as L
from emu.module import MODULE_STATE_COMING, MODULE_STATE_GOING

from . import tracefs, views
from .arch.x86.ftrace import X86Ftrace
from .core import Ftrace
from .errors import FtraceError
from .flags import FtraceOpsFlags as FL
from .ops import FL_USER
from .recursion import TRACE_FTRACE_START, trace_clear_recursion, trace_test_and_set_recursion

if TYPE_CHECKING:
    from emu import Machine
    from emu.module import Module
    from emu.cpu import VCpu

_u32, _u64 = struct.Struct("<I"), struct.Struct("<Q")


class TaskInfo(NamedTuple):
    """What ``ft.current`` tells of a task: pid, comm and state (the kernel's __state:
    0 TASK_RUNNING, 1 TASK_INTERRUPTIBLE, 2 TASK_UNINTERRUPTIBLE, 0x80 TASK_DEAD)."""

    pid: int
    comm: str
    state: int


class MachineFtrace(Ftrace):
    """The Ftrace of one machine (register_ftrace_function, filters, ftrace_enabled, ...)
    with the guest-state helpers callbacks use and the tracefs-style views."""

    def __init__(self, machine: "Machine", supports_regs: bool = True) -> None:
        self.machine = machine
        self.log_lines: list[str] = []
        arch = X86Ftrace(machine, supports_regs, log=self.log_lines.append)
        sites = machine.image.u64_array("__mcount_loc") if "__mcount_loc" in machine.image.sections else []
        super().__init__(arch, sites, log=self.log_lines.append)
        arch.core = self
        self.x86 = arch
        self.ftrace_init()
        machine.snapshot_participants.append(self)
        machine.add_symbol_source(self._generated_code_symbol)
        machine.modules.register_notifier(self._module_notifier)

    def _module_notifier(self, state: int, mod: "Module") -> None:
        """load_module / free_module: a module's sites come before its init, go after exit."""
        if state == MODULE_STATE_COMING:
            self.ftrace_module_init(mod.name, mod.mcount_loc)
        elif state == MODULE_STATE_GOING:
            self.ftrace_release_mod(mod.name)

    # ---- snapshots: the host half of ftrace's state follows the guest's ----------
    _CORE_FIELDS = ("ops_list", "ftrace_disabled", "ftrace_start_up", "ftrace_trace_function",
                    "ftrace_call", "removed_ops", "_ftrace_enabled", "_last_ftrace_enabled",
                    "_saved_ftrace_func")
    _OPS_FIELDS = ("flags", "filter_hash", "notrace_hash", "old_filter_hash", "old_notrace_hash",
                   "func", "saved_func", "trampoline", "trampoline_size")

    def snapshot_state(self) -> tuple:
        known = {id(o): o for o in self.x86.known_ops()}
        return ({f: copy.copy(getattr(self, f)) for f in self._CORE_FIELDS},
                self.records.state(),
                {k: (o, {f: getattr(o, f) for f in self._OPS_FIELDS}) for k, o in known.items()},
                self.x86.snapshot_state(), list(self.log_lines))

    def restore_state(self, st: tuple) -> None:
        core, rec_flags, ops_state, arch, log = st
        for f, v in core.items():
            setattr(self, f, copy.copy(v))
        self.records.set_state(rec_flags)
        for o in self.x86.known_ops():
            if id(o) not in ops_state:      # registered after the snapshot: as if never
                o.flags &= FL_USER
                o.trampoline = o.trampoline_size = 0
        for o, fields in ops_state.values():
            for f, v in fields.items():
                setattr(o, f, v)
        self.x86.restore_state(arch)
        self.log_lines[:] = log

    # ---- where a callback runs -----------------------------------------------
    def _cpu(self, cpu: int | None) -> "VCpu":
        if cpu is not None:
            return self.machine.cpus[cpu]
        return self.x86.current_cpu or self.machine.cpus[0]

    def _pcpu(self, cpu: "VCpu", field: int) -> int:
        """Address of a per-CPU field (ENODEV for a kernel without per-CPU data)."""
        try:
            return self.machine.kernel.pcpu(cpu.index, field)
        except LookupError as e:
            raise FtraceError(errno.ENODEV, str(e)) from None

    def preempt_count(self, cpu: int | None = None) -> int:
        """preempt_count of the CPU the callback runs on (or of ``cpu``)."""
        c = self._cpu(cpu)
        return _u32.unpack(self.machine.read(self._pcpu(c, L.PCPU_PREEMPT_COUNT), 4))[0]

    def rcu_is_watching(self, cpu: int | None = None) -> bool:
        """Is RCU watching the CPU the callback runs on? False in idle, user mode, offline."""
        c = self._cpu(cpu)
        return bool(_u32.unpack(self.machine.read(self._pcpu(c, L.PCPU_RCU_WATCHING), 4))[0])

    def current_context(self, cpu: int | None = None) -> str:
        """"nmi", "irq", "softirq" or "normal", from preempt_count as in_nmi() & co. read it."""
        pc = self.preempt_count(cpu)
        if pc & L.NMI_MASK:
            return "nmi"
        if pc & L.HARDIRQ_MASK:
            return "irq"
        if pc & L.SOFTIRQ_OFFSET:
            return "softirq"
        return "normal"

    def _current_task(self, c: "VCpu") -> int:
        return _u64.unpack(self.machine.read(self._pcpu(c, L.PCPU_CURRENT), 8))[0]

    def smp_processor_id(self) -> int:
        """The CPU the callback runs on (CPU 0 outside callbacks)."""
        return self._cpu(None).index

    @property
    def current(self) -> TaskInfo:
        """The task running on the callback's CPU (ENODEV before the CPU has one)."""
        task = self._current_task(self._cpu(None))
        if not task:
            raise FtraceError(errno.ENODEV, "no task runs on this CPU yet")
        pid, comm = self.machine.kernel.task_name(task)
        state = struct.unpack("<i", self.machine.read(task + L.TASK_STATE, 4))[0]
        return TaskInfo(pid, comm, state)

    def trace_clock(self) -> int:
        """trace_clock(): the callback's CPU's virtual time in ns, exact to the instruction
        (deterministic: the same run gives the same values)."""
        return self._cpu(None).now()

    def stack_trace_save(self) -> list[int]:
        """stack_trace_save(): the return addresses of the callback's CPU, innermost first,
        starting in the traced function (ftrace's own frames skipped): the traced function's
        caller is the second entry, thanks to save_mcount_regs' two frames."""
        from unicorn.x86_const import UC_X86_REG_RBP
        c = self._cpu(None)
        addrs = self.machine.return_addresses(c, c.regs.read(UC_X86_REG_RBP))
        while addrs and self.x86._in_code(addrs[0]):
            addrs.pop(0)
        return addrs

    def on_text_poke_step(self, fn: Callable[[int, dict[int, bytes]], None]) -> Callable[[], None]:
        """Call ``fn(step, batch)`` after each of the int3 protocol's three steps is written
        (1: int3 on every site, 2: the tail bytes, 3: the new first byte), before the other
        vCPUs run; ``batch`` maps each site to its new bytes. Returns the remover."""
        return self.x86.poker.hooks.add("step", fn)

    def on_text_poke_int3(self, fn: Callable[[int, int, bytes], None]) -> Callable[[], None]:
        """Call ``fn(cpu, ip, insn)`` when a vCPU hits the int3 of a site being patched (the
        handler then emulates ``insn``, the new instruction). Returns the remover."""
        return self.x86.poker.hooks.add("int3", fn)

    def ftrace_test_recursion_trylock(self, ip: int, parent_ip: int) -> int:
        """The kernel's helper on the current task's trace_recursion: a bit >= 0 (preemption
        now disabled in the guest) or -1 when this context is already inside (recorded)."""
        c = self._cpu(None)
        task = self._current_task(c)
        if not task:
            return -1
        word = _u64.unpack(self.machine.read(task + L.TASK_TRACE_RECURSION, 8))[0]
        new, bit = trace_test_and_set_recursion(word, self.preempt_count(c.index), TRACE_FTRACE_START)
        if bit < 0:
            self.x86.recursion.ftrace_record_recursion(ip, parent_ip)
            return -1
        self.machine.write(task + L.TASK_TRACE_RECURSION, _u64.pack(new))
        self._add_preempt(c, 1)
        return bit

    def ftrace_test_recursion_unlock(self, bit: int) -> None:
        """Release ``bit`` and enable preemption again."""
        c = self._cpu(None)
        task = self._current_task(c)
        word = _u64.unpack(self.machine.read(task + L.TASK_TRACE_RECURSION, 8))[0]
        self._add_preempt(c, -1)
        self.machine.write(task + L.TASK_TRACE_RECURSION, _u64.pack(trace_clear_recursion(word, bit)))

    def _add_preempt(self, c: "VCpu", delta: int) -> None:
        addr = self._pcpu(c, L.PCPU_PREEMPT_COUNT)
        self.machine.write(addr, _u32.pack((self.preempt_count(c.index) + delta) & 0xFFFFFFFF))

    # ---- views -----------------------------------------------------------------
    @property
    def available_filter_functions(self) -> str:
        return views.available_filter_functions(self)

    @property
    def enabled_functions(self) -> str:
        return views.enabled_functions(self)

    @property
    def touched_functions(self) -> str:
        return views.touched_functions(self)

    @property
    def recursed_functions(self) -> str:
        return self.x86.recursion.show(lambda a: views.sprint_symbol(self, a))

    def _generated_code_symbol(self, addr: int) -> str | None:
        """%pS of ftrace's own code (callers, trampolines, stubs) for the machine's lookup."""
        text = views.sprint_symbol(self, addr)
        return None if text.startswith("0x") else text

    def function_address(self, name: str) -> int:
        """The call-site ip of function ``name`` (what callbacks get as ``ip``)."""
        return self.records.ftrace_location(self.machine.symbol_address(name), self.arch.lookup)


def attach(machine: "Machine", options: dict[str, Any]) -> MachineFtrace:
    """The ``ftemu.extensions`` entry point: ftrace for a new machine."""
    ft = MachineFtrace(machine, supports_regs=bool(options.pop("ftrace_regs", True)))
    ft.instances = tracefs.register_ftrace_files(ft)
    return ft
