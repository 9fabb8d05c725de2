"""``ftemu boot``: boot the guest, stream its console, summarise what every CPU did."""
from __future__ import annotations

import argparse
import sys
import time

from emu import Machine
from emu.machine import KSTAT_FIELDS

from .options import add_command, add_machine_options, make_machine, run_for

LABELS = {"timer_interrupts": "timer interrupts", "softirqs": "softirqs", "nmis": "NMIs",
          "syscalls": "syscalls", "context_switches": "context switches",
          "idle_entries": "idle entries", "cpu_offline": "CPU offline events",
          "cpu_online": "CPU online events", "page_faults": "page faults",
          "ipis": "IPIs received", "instructions": "instructions"}


def format_summary(m: Machine, host_seconds: float) -> str:
    """One screen: what ran, for how long, and the per-CPU counts of stats()."""
    st = m.stats()
    n = len(st["cpus"])
    head = (f"--- ftemu: {n} CPU{'s' if n > 1 else ''}, {m.ram_size >> 20} MiB, "
            f"{st['virtual_ns'] / 1e6:.1f} ms virtual in {host_seconds:.2f} s host")
    cols = [f"CPU{i}" for i in range(n)] + ["total"]
    lines = [head, f"{'':20}" + "".join(f"{c:>12}" for c in cols)]
    for key in (*KSTAT_FIELDS, "instructions"):
        values = [c[key] for c in st["cpus"]] + [st["total"][key]]
        lines.append(f"{LABELS[key]:20}" + "".join(f"{v:>12}" for v in values))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()

    def echo(line: bytes) -> None:
        sys.stdout.write(line.decode("utf-8", "replace"))
        sys.stdout.flush()
    m = make_machine(args, console=None if args.quiet else echo)
    run_for(m, args.ms)
    print(format_summary(m, time.perf_counter() - t0))
    return 0


def register(sub) -> None:
    p = add_command(sub, "boot", "boot the guest kernel, stream its console, summarise",
                    "ftemu boot --cpus 4 --ms 500")
    add_machine_options(p, ms=200)
    p.add_argument("--quiet", action="store_true", help="do not stream the console")
    p.set_defaults(func=run)
