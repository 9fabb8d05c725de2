"""tracefs costs, each beside its fair peer in one run, as min/median/max of paired ratios:
- a FUSE read (``cat`` of available_filter_functions through ``ftemu mount``) against ``cat``
  of the same bytes from a regular file: what the mount adds per file read;
- a filter change through the mount (``echo 'sched*' > set_ftrace_filter``) against the same
  change through m.fs in-process, both with a registered ops to patch;
- a filter change through m.fs against ftrace_set_filter (the file's parsing and listing
  machinery against the kernel API it ends in).

Run: .venv/bin/python tools/bench/bench_tracefs.py  (needs fuse3 for the first two)
"""
from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import row

from emu import Machine
from ftrace import FtraceOps

ROUNDS = 15


def spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}"


def ms(samples: list[float]) -> str:
    return f"(median {statistics.median(samples) * 1e3:.1f} ms)"


def clock(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_in_process() -> None:
    m = Machine(cpus=2)
    m.boot()
    ops = FtraceOps(lambda *a: None)
    m.ftrace.ftrace_set_filter(ops, "kfree", True)
    m.ftrace.register_ftrace_function(ops)
    inst = m.ftrace.instances.top
    inst.ops.func = lambda *a: None
    m.ftrace.register_ftrace_function(inst.ops)
    ratios, files = [], []
    for i in range(ROUNDS):
        pattern = "sched*" if i % 2 else "*lock*"
        t_file = clock(lambda: m.tracefs.write("set_ftrace_filter", pattern + "\n"))
        t_api = clock(lambda: m.ftrace.ftrace_set_filter(ops, pattern, True))
        ratios.append(t_file / t_api)
        files.append(t_file)
    row("filter change: m.fs set_ftrace_filter / ftrace_set_filter", spread(ratios), ms(files))


def bench_mount() -> None:
    if not shutil.which("fusermount3"):
        row("FUSE rows", "skipped", "(install fuse3)")
        return
    root = Path(tempfile.mkdtemp())
    proc = subprocess.Popen([sys.executable, "-m", "ftemu", "mount", str(root), "--quiet"],
                            stderr=subprocess.DEVNULL)
    tracing = root / "sys/kernel/tracing"
    try:
        while not tracing.is_dir():
            time.sleep(0.05)
        plain = Path(tempfile.mkdtemp()) / "available_filter_functions"
        plain.write_bytes((tracing / "available_filter_functions").read_bytes())
        reads, writes, t_reads, t_writes = [], [], [], []
        for i in range(ROUNDS):
            t_fuse = clock(lambda: subprocess.run(["cat", str(tracing / "available_filter_functions")],
                                                  stdout=subprocess.DEVNULL, check=True))
            t_plain = clock(lambda: subprocess.run(["cat", str(plain)], stdout=subprocess.DEVNULL,
                                                   check=True))
            reads.append(t_fuse / t_plain)
            t_reads.append(t_fuse)
            pattern = "sched*" if i % 2 else "*lock*"
            t_mount = clock(lambda: subprocess.run(
                ["sh", "-c", f"echo '{pattern}' > {tracing}/set_ftrace_filter"], check=True))
            t_shell = clock(lambda: subprocess.run(["sh", "-c", f"echo '{pattern}' > {plain}"],
                                                   check=True))
            writes.append(t_mount / t_shell)
            t_writes.append(t_mount)
        row("cat available_filter_functions: FUSE / regular file", spread(reads), ms(t_reads))
        row("echo pattern > set_ftrace_filter: FUSE / regular file", spread(writes),
            ms(t_writes))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    print("tracefs (min / median / max of paired ratios, one run)")
    bench_in_process()
    bench_mount()
