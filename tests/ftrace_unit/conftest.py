"""A small kernel image (symbols and call sites) and a recording arch double for ftrace/."""

from __future__ import annotations

import bisect
import contextlib
import errno

import pytest

from ftrace.core import Ftrace
from ftrace.errors import FtracePatchError
from ftrace.flags import FTRACE_OPS_FL_ALLOC_TRAMP, FTRACE_OPS_FL_SAVE_REGS
from ftrace.ops import FtraceOps
from ftrace.update import FtraceUpdate

BASE = 0xFFFFFFFF81000000
# name, site offset into the function (None: notrace, no site). Each function is 0x40 bytes.
FUNCS = [
    ("schedule", 0), ("preempt_schedule", 0), ("schedule_timeout", 0),
    ("_raw_spin_lock", 0), ("_raw_spin_unlock", 0), ("mutex_lock", 0), ("mutex_unlock", 0),
    ("sys_read", 0), ("SyS_write", 0), ("sched_clock", 4), ("weak_dead", 0x10),
    ("notrace_helper", None),
]
ADDR = {name: BASE + 0x40 * i for i, (name, _) in enumerate(FUNCS)}
SITE = {name: ADDR[name] + off for name, off in FUNCS if off is not None}
SITES = sorted(SITE.values())

FTRACE_CALLER = BASE + 0x1000
FTRACE_REGS_CALLER = BASE + 0x1100
FTRACE_STUB = BASE + 0x1200
FTRACE_OPS_LIST_FUNC = BASE + 0x1300
FTRACE_OPS_ASSIST_FUNC = BASE + 0x1500
GUEST_CB = BASE + 0x1600
FENTRY = BASE + 0x1700
TRAMP_BASE = 0xFFFFFFFFA0000000
TRAMP_SIZE = 0xA5
REGS_TRAMP_SIZE = 0x10D

SYMBOLS = sorted([(a, n, 0x40) for n, a in ADDR.items()] + [
    (FTRACE_CALLER, "ftrace_caller", 0xA0), (FTRACE_REGS_CALLER, "ftrace_regs_caller", 0x100),
    (FTRACE_STUB, "ftrace_stub", 0x10), (FTRACE_OPS_LIST_FUNC, "ftrace_ops_list_func", 0x150),
    (FTRACE_OPS_ASSIST_FUNC, "ftrace_ops_assist_func", 0x80), (GUEST_CB, "my_guest_cb", 0x30),
    (FENTRY, "__fentry__", 0x10),
])

NOP_BYTES = bytes.fromhex("0f1f440000")


def lookup(addr: int) -> tuple[str, int, int] | None:
    i = bisect.bisect_right([s[0] for s in SYMBOLS], addr) - 1
    if i < 0 or addr >= SYMBOLS[i][0] + SYMBOLS[i][2]:
        return None
    return SYMBOLS[i][1], addr - SYMBOLS[i][0], SYMBOLS[i][2]


def encode(ip: int, target: int | None) -> bytes:
    """The 5 bytes at a site: the NOP (None) or `call target`."""
    if target is None:
        return NOP_BYTES
    return b"\xe8" + ((target - (ip + 5)) & 0xFFFFFFFF).to_bytes(4, "little")


class FakeArch:
    """Implements FtraceArch over a dict of sites; records every call it gets."""

    def __init__(self, supports_regs: bool = True) -> None:
        self.ftrace_caller = FTRACE_CALLER
        self.ftrace_regs_caller = FTRACE_REGS_CALLER
        self.ftrace_stub = FTRACE_STUB
        self.ftrace_ops_list_func = FTRACE_OPS_LIST_FUNC
        self.ftrace_ops_assist_func = FTRACE_OPS_ASSIST_FUNC
        self.supports_regs = supports_regs
        self.text: dict[int, int | None] = {ip: FENTRY for ip in SITES}  # None = NOP
        self.plans: list[list[FtraceUpdate]] = []
        self.events: list[tuple] = []
        self.core_data: set[int] = set()
        self._next_tramp = TRAMP_BASE
        self.callback_depth = 0

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        return lookup(addr)

    def is_kernel_core_data(self, ops: FtraceOps) -> bool:
        return id(ops) in self.core_data

    def ftrace_make_nop_init(self, rec) -> None:
        self._verify(rec, FENTRY)
        self.text[rec.ip] = None

    def arch_ftrace_update_trampoline(self, ops: FtraceOps) -> None:
        if ops.trampoline:
            self.events.append(("update_trampoline", ops))
            return
        ops.trampoline = self._next_tramp
        ops.trampoline_size = REGS_TRAMP_SIZE if ops.flags & FTRACE_OPS_FL_SAVE_REGS else TRAMP_SIZE
        ops.flags |= FTRACE_OPS_FL_ALLOC_TRAMP
        self._next_tramp += 0x1000
        self.events.append(("alloc_trampoline", ops))

    def arch_ftrace_trampoline_free(self, ops: FtraceOps, synced: bool = True) -> None:
        if ops.flags & FTRACE_OPS_FL_ALLOC_TRAMP:
            ops.trampoline = 0
            self.events.append(("free_trampoline", ops))

    def ftrace_update_ftrace_func(self, func) -> None:
        self.events.append(("ftrace_call", func))

    def ftrace_replace_code(self, plan) -> None:
        for step in plan:
            self._verify(step.rec, step.old)
        for step in plan:
            self.text[step.rec.ip] = step.new
        self.plans.append(list(plan))

    def ftrace_ops_alloc(self, ops: FtraceOps) -> None:
        self.events.append(("ops_alloc", ops))

    def ftrace_ops_free_unpublished(self, ops: FtraceOps) -> None:
        self.events.append(("ops_free_unpublished", ops))

    def ftrace_ops_list_add(self, ops: FtraceOps) -> None:
        self.events.append(("list_add", ops))

    def ftrace_ops_list_del(self, ops: FtraceOps) -> None:
        self.events.append(("list_del", ops))

    def ftrace_hash_alloc(self, filter_hash, notrace_hash) -> tuple:
        return (filter_hash, notrace_hash)

    def ftrace_hash_free(self, block) -> None:
        self.events.append(("hash_free", block))

    def ftrace_ops_publish_hashes(self, ops: FtraceOps, block) -> None:
        self.events.append(("publish_hashes", ops))

    def synchronize_rcu_tasks(self) -> bool:
        self.events.append(("synchronize_rcu_tasks",))
        return True

    def in_callback(self) -> bool:
        return self.callback_depth > 0

    def ftrace_lock(self):
        return contextlib.nullcontext()

    def _verify(self, rec, expected: int | None) -> None:
        if self.text[rec.ip] != expected:
            raise FtracePatchError(errno.EINVAL, "mismatch", rec,
                                   encode(rec.ip, self.text[rec.ip]), encode(rec.ip, expected))


def steps(plan: list[FtraceUpdate]) -> list[tuple]:
    """A plan as (function name, action name, old, new) tuples."""
    return [(lookup(s.rec.ip)[0], s.action.name.removeprefix("FTRACE_UPDATE_"), s.old, s.new)
            for s in plan]


def cb(ip, parent_ip, op, regs):
    """A Python callback."""


def cb2(ip, parent_ip, op, regs):
    """Another Python callback."""


@pytest.fixture
def arch() -> FakeArch:
    return FakeArch()


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def ft(arch: FakeArch, log: list[str]) -> Ftrace:
    """Booted ftrace: every site a NOP, ftrace_enabled = 1, logs and events cleared."""
    ft = Ftrace(arch, SITES, log=log.append)
    ft.ftrace_init()
    log.clear()
    arch.events.clear()
    return ft


def rec_of(ft: Ftrace, name: str):
    return ft.records.lookup_rec(SITE[name], SITE[name])
