"""The function profiler (kernel/trace/ftrace.c, CONFIG_FUNCTION_PROFILER with the graph
tracer): ``function_profile_enabled`` and ``trace_stat/function<cpu>``.

Counting and timing run in guest code (arch/x86/profile_64.py) into per-CPU tables in
guest memory, allocated the first time the profiler is enabled with a record for every
function ftrace knows then (``ftrace_update_tot_cnt``) and kept, as the kernel keeps its
pages; enabling again empties them. Python reads the tables only when a ``trace_stat`` file
is opened. The profiler's ops follows the top level's ``set_ftrace_filter`` and
``set_ftrace_notrace`` (``ftrace_ops_set_global_filter``), and the top level's
``graph-time`` option: off, a function's time leaves out its profiled children's.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from emu.pseudofs import fs_error

from .arch.x86.profile_64 import (NO_GRAPH_TIME, P_ENABLED, P_FLAGS, P_SIZE, P_STATS, REC_SIZE,
                                  ST_CAP, ST_NEXT, ST_RECS, emit_profiler)
from .flags import FtraceOpsFlags as FL
from .ops import FtraceOps
from .trace_functions_graph import duration_text

if TYPE_CHECKING:
    from .tracing import Tracing

CODE_SIZE = 0x400
PAGE_SIZE = 4096
# struct ftrace_profile_page: a next pointer and an index, then the records.
PROFILES_PER_PAGE = (PAGE_SIZE - 16) // REC_SIZE
U64 = (1 << 64) - 1
HEADER = ("  Function                               Hit    Time            Avg             s^2\n"
          "  --------                               ---    ----            ---             ---\n")
_rec = struct.Struct("<QQQQQ")


def stat_line(name: str, hits: int, time: int, time_sq: int) -> str:
    """function_stat_show: name and hits, then total, average and variance in the graph
    tracer's duration format. The variance is the kernel's, in u64 arithmetic:
    (n * sum(x^2) - sum(x)^2) / (n * (n - 1) * 1000) (ns^2 to us^2 once; the duration format
    divides by 1000 again)."""
    avg = time // hits
    denom = hits * (hits - 1) * 1000 & U64
    stddev = ((hits * time_sq - time * time) & U64) // denom if denom else 0
    return (f"  {name[:30]:<30}  {hits:10d}    " + duration_text(time) + "    "
            + duration_text(avg) + "    " + duration_text(stddev) + "\n")


class FunctionProfiler:
    """``m.tracing.profiler``: the guest code and tables of the profiler, its ops and files."""

    def __init__(self, tracing: "Tracing") -> None:
        self.tracing = tracing
        m = self.m = tracing.m
        self.ft = tracing.ft
        self.pages = tracing.pages
        self.block = tracing.zeroed_block(P_SIZE)
        labels = tracing.load_code(CODE_SIZE, lambda b: emit_profiler(
            b, self.block, tracing._idle, tracing._tasks, tracing.shadow_table))
        self.ops = FtraceOps(func=labels["profile_graph_entry"], flags=FL.SAVE_REGS)
        self.enabled = False
        self.tables: list[int] = []         # per CPU, made at the first enable
        self.cap = 0                        # records per table
        self.top = self.ft.instances.top
        self.top.listeners.append(self._top_changed)
        m.snapshot_participants.append(self)
        fs = m.tracefs
        fs.register_text("function_profile_enabled", lambda: f"{int(self.enabled)}\n",
                         self._write_enabled, mode=0o644)
        for cpu in range(len(m.cpus)):
            fs.register_text(f"trace_stat/function{cpu}", lambda c=cpu: self.stat_text(c))

    def snapshot_state(self) -> tuple:
        return self.enabled, list(self.tables), self.cap, self.ops.filter_hash, self.ops.notrace_hash

    def restore_state(self, st: tuple) -> None:
        self.enabled, tables, self.cap, self.ops.filter_hash, self.ops.notrace_hash = st
        self.tables = list(tables)
        if self._top_changed not in self.top.listeners:
            self.top.listeners.append(self._top_changed)

    # ---- function_profile_enabled -------------------------------------------------------
    def _write_enabled(self, text: str) -> None:
        word = text[:-1] if text.endswith("\n") else text       # kstrtoul_from_user(.., 10, ..)
        if not word.isdigit() or not word.isascii():
            raise fs_error(errno.EINVAL, detail=f"expected a decimal number, got {text!r}")
        self.set_enabled(int(word) != 0)

    def set_enabled(self, on: bool) -> None:
        """ftrace_profile_write: 1 empties the tables (made on first use) and registers the
        profiler's ops with the global filter; 0 stops counting and unregisters it."""
        if on == self.enabled:
            return
        if on:
            self._profile_init()
            top = self.tracing.ft.instances.top.ops
            self.ft._hash_move_and_update_ops(self.ops, top.filter_hash, True)
            self.ft._hash_move_and_update_ops(self.ops, top.notrace_hash, False)
            self.sync_options()
            self.tracing.ensure_shadow_stacks()
            self.ft.register_ftrace_function(self.ops)
            self.enabled = True
            self.pages.write(self.block + P_ENABLED, struct.pack("<I", 1))
        else:
            self.enabled = False
            self.pages.write(self.block + P_ENABLED, struct.pack("<I", 0))
            self.ft.unregister_ftrace_function(self.ops)

    def _profile_init(self) -> None:
        """ftrace_profile_init: per CPU a hash and records for every function (rounded up to
        whole profile pages, as the kernel preallocates them), or the old ones emptied.
        Nothing counts meanwhile: the ops is not registered and the enabled word is 0."""
        if not self.tables:
            self.cap = -(-len(self.ft.records) // PROFILES_PER_PAGE) * PROFILES_PER_PAGE
            self.tables = [self.m.execmem.alloc(ST_RECS + self.cap * REC_SIZE, align=64,
                                                executable=False) for _ in self.m.cpus]
            for cpu, table in enumerate(self.tables):
                self.pages.write(self.block + P_STATS + 8 * cpu, struct.pack("<Q", table))
        for table in self.tables:
            self.pages.write(table, bytes(ST_RECS + self.cap * REC_SIZE))
            self.pages.write(table + ST_CAP, struct.pack("<Q", self.cap))

    def _u64(self, va: int) -> int:
        return struct.unpack("<Q", self.pages.read(va, 8))[0]

    def _top_changed(self, what: str) -> None:
        """The top level's filter or notrace hash changed: the profiler's follows."""
        if what in ("filter", "notrace") and self.enabled:
            ops = self.top.ops
            new = ops.filter_hash if what == "filter" else ops.notrace_hash
            self.ft._hash_move_and_update_ops(self.ops, new, what == "filter")

    def sync_options(self) -> None:
        """What the guest code reads of the top level's options (graph-time)."""
        top = self.tracing.arrays.get("")
        flags = 0 if top is None or "graph-time" in top.options else NO_GRAPH_TIME
        self.pages.write(self.block + P_FLAGS, struct.pack("<I", flags))

    # ---- trace_stat/function<cpu> ---------------------------------------------------------
    def records(self, cpu: int) -> list[tuple[int, int, int, int]]:
        """(ip, hits, time, time_squared) of every function hit on ``cpu``, in the order
        their records were taken."""
        if not self.tables:
            return []
        table = self.tables[cpu]
        used = self._u64(table + ST_NEXT)
        raw = self.pages.read(table + ST_RECS, used * REC_SIZE)
        out = []
        for i in range(used):
            _next, ip, hits, time, time_sq = _rec.unpack_from(raw, i * REC_SIZE)
            if hits:
                out.append((ip, hits, time, time_sq))
        return out

    def stat_text(self, cpu: int) -> str:
        """trace_stat/function<cpu>: the header, then one line per function hit (whose
        average reaches tracing_thresh, if set), by total time, largest first; equal times
        in reverse order of first hit (the kernel's rbtree puts a new node before its
        equals)."""
        rows = self.records(cpu)
        order = sorted(range(len(rows)), key=lambda i: (-rows[i][2], -i))
        out = [HEADER]
        thresh = self.tracing.tracing_thresh
        for i in order:
            ip, hits, time, time_sq = rows[i]
            if thresh and time // hits < thresh:
                continue                    # function_stat_show: average below tracing_thresh
            sym = self.ft.arch.lookup(ip)
            name = sym[0] if sym else f"0x{ip:x}"
            out.append(stat_line(name, hits, time, time_sq))
        return "".join(out)
