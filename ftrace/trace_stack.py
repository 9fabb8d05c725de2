"""The stack tracer (kernel/trace/trace_stack.c): ``stack_trace``, ``stack_max_size``,
``stack_trace_filter``, ``/proc/sys/kernel/stack_tracer_enabled`` and the ``stacktrace`` /
``stacktrace_filter=`` kernel command line options.

Every traced call measures its stack depth in guest code (arch/x86/stack_64.py); only a
new maximum reaches the host, which does what check_stack does then: the return addresses
of the frame-pointer chain (stack_trace_save), the traced function's own first, each found
in the stack to give its depth, and on the first maximum ever the size of the tracer's own
frames (``tracer_frame``), taken off every later measurement.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_R11, UC_X86_REG_RBP, UC_X86_REG_RCX, UC_X86_REG_RDI

from emu.pseudofs import fs_error

from .arch.x86.stack_64 import (HCALL_STACK_PORT, K_MAX_SIZE, K_SIZE, K_TRACER_FRAME,
                                emit_stack_trace_call)
from .filter_file import ops_regex_file
from .flags import FtraceOpsFlags as FL
from .ops import FtraceOps
from .tracefs import SYSCTL_KERNEL, proc_dointvec_minmax
from .views import sprint_symbol

if TYPE_CHECKING:
    from emu.cpu import VCpu

    from .tracing import Tracing

STACK_TRACE_ENTRIES = 500
MCOUNT_INSN_SIZE = 5
CODE_SIZE = 0x100
INT_MAX = (1 << 31) - 1
U64_MAX = (1 << 64) - 1
DISABLED_HELP = ("#\n"
                 "#  Stack tracer disabled\n"
                 "#\n"
                 "# To enable the stack tracer, either add 'stacktrace' to the\n"
                 "# kernel command line\n"
                 "# or 'echo 1 > /proc/sys/kernel/stack_tracer_enabled'\n"
                 "#\n")


def stack_trace_text(entries: list[tuple[int, str]], help_block: bool) -> str:
    """The ``stack_trace`` file: ``entries`` are (depth in bytes, %pS location), deepest
    first; each row's size is its depth less the next one's (the last: its whole depth)."""
    out = [f"        Depth    Size   Location    ({len(entries)} entries)\n"
           "        -----    ----   --------\n"]
    if help_block:
        out.append(DISABLED_HELP)
    for i, (depth, where) in enumerate(entries):
        size = depth - entries[i + 1][0] if i + 1 < len(entries) else depth
        out.append(f"{i:3d}) {depth:8d}   {size:5d}   {where}\n")
    return "".join(out)


class StackTracer:
    """``m.tracing.stack_tracer``: the guest callback, its block, the ops (no flags, as the
    kernel's trace_ops) and the files."""

    def __init__(self, tracing: "Tracing") -> None:
        m = self.m = tracing.m
        self.ft = tracing.ft
        self.pages = tracing.pages
        self.block = tracing.zeroed_block(K_SIZE)
        labels = tracing.load_code(CODE_SIZE, lambda b: emit_stack_trace_call(b, self.block))
        self.ops = FtraceOps(func=labels["stack_trace_call"])
        self.sysctl = 0                     # stack_tracer_enabled, as written
        self.dump: list[int] = []           # stack_dump_trace
        self.index: list[int] = []          # stack_trace_index
        m.add_port(HCALL_STACK_PORT, self._check_stack)
        m.snapshot_participants.append(self)
        fs = m.tracefs
        fs.register_text("stack_max_size", lambda: f"{self.max_size}\n", self._write_max_size,
                         mode=0o644)
        fs.register_text("stack_trace", self.stack_trace)
        fs.register("stack_trace_filter", ops_regex_file(self.ft, self.ops, True, commands=False))
        m.fs.register_text(f"{SYSCTL_KERNEL}/stack_tracer_enabled", lambda: f"{self.sysctl}\n",
                           lambda t: self.set_enabled(proc_dointvec_minmax(t, -INT_MAX - 1, INT_MAX)),
                           mode=0o644)
        self._boot_hook = None
        self._boot_options(m.cmdline)

    def _boot_options(self, cmdline: str) -> None:
        """``stacktrace`` (and ``stacktrace_filter=f1,f2``, which implies it): the tracer
        runs from boot. A filter pattern that matches nothing is ignored, as
        ftrace_set_early_filter ignores it."""
        for word in cmdline.split():
            if word != "stacktrace" and not word.startswith("stacktrace_filter="):
                continue
            for pattern in word.partition("=")[2].split(","):
                if pattern:
                    try:
                        self.ft.ftrace_set_filter(self.ops, pattern, False)
                    except OSError:
                        pass
            self.sysctl = 1
            self._boot_hook = self.m.add_code_hook(self.m.symbol_address("kernel_init"),
                                                   lambda cpu: self.m.defer(self._initcall))

    def _initcall(self) -> None:
        """stack_trace_init, a device_initcall: the ops is registered when kernel_init
        starts (the kernel's page tables and allocator are up by then)."""
        if self._boot_hook is not None:
            self._boot_hook.remove()
            self._boot_hook = None
            self.set_enabled(self.sysctl)

    def snapshot_state(self) -> tuple:
        return self.sysctl, list(self.dump), list(self.index), self.ops.filter_hash, self.ops.notrace_hash

    def restore_state(self, st: tuple) -> None:
        self.sysctl, dump, index, self.ops.filter_hash, self.ops.notrace_hash = st
        self.dump, self.index = list(dump), list(index)

    # ---- files ----------------------------------------------------------------------------
    def _u64(self, off: int) -> int:
        return struct.unpack("<Q", self.pages.read(self.block + off, 8))[0]

    @property
    def max_size(self) -> int:
        """stack_trace_max_size, in bytes."""
        return self._u64(K_MAX_SIZE)

    def _write_max_size(self, text: str) -> None:
        word = text.strip()
        if not word.isdigit() or int(word) > U64_MAX:
            raise fs_error(errno.EINVAL, detail=f"expected a decimal number, got {text!r}")
        value = int(word)
        self.pages.write(self.block + K_MAX_SIZE, struct.pack("<Q", value))

    def set_enabled(self, value: int) -> None:
        """stack_trace_sysctl: the ops is registered when the value turns non-zero and
        unregistered when it turns zero."""
        if bool(value) != bool(self.ops.flags & FL.ENABLED):
            if value:
                self.ft.register_ftrace_function(self.ops)
            else:
                self.ft.unregister_ftrace_function(self.ops)
        self.sysctl = value

    def stack_trace(self) -> str:
        """The deepest stack seen: depth, size and location per frame (the help block while
        the tracer has never run)."""
        entries = [(self.index[i], sprint_symbol(self.ft, a)) for i, a in enumerate(self.dump)]
        return stack_trace_text(entries, not self.sysctl and not self.max_size)

    # ---- the slow half of check_stack (a new maximum) -------------------------------------
    def _check_stack(self, cpu: "VCpu", port: int, value: int) -> None:
        regs = cpu.regs
        ip = regs.read(UC_X86_REG_RDI) + MCOUNT_INSN_SIZE
        stack, top = regs.read(UC_X86_REG_RCX), regs.read(UC_X86_REG_R11)
        frame = self._u64(K_TRACER_FRAME)
        this_size = top - stack - frame
        if this_size <= self.max_size:
            return
        max_size = this_size
        trace = self.m.return_addresses(cpu, regs.read(UC_X86_REG_RBP), STACK_TRACE_ENTRIES - 1)
        words = struct.unpack(f"<{(top - stack) // 8}Q", self.m.read(stack, top - stack & ~7))
        i = trace.index(ip) if ip in trace else 0      # skip the tracer's own frames
        dump, index = [], []
        start = 0
        while i < len(trace):
            found = False
            for p in range(start, len(words)):
                if i >= len(trace):
                    break
                if words[p] == trace[i]:
                    dump.append(trace[i])
                    i += 1
                    this_size = (len(words) - p) * 8
                    index.append(this_size)
                    found, start = True, p + 1
                    if not frame:
                        frame = p * 8
                        max_size -= frame
                        self.pages.write(self.block + K_TRACER_FRAME, struct.pack("<Q", frame))
            if not found:
                i += 1
        self.dump, self.index = dump, index
        self.pages.write(self.block + K_MAX_SIZE, struct.pack("<Q", max_size))
