"""``ftemu``: boot the guest and watch it (``ftemu boot``); every error is one line, exit 1."""
from __future__ import annotations

import argparse
import sys
import time

from emu import EmuError, Machine
from emu.machine import KSTAT_FIELDS

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


def cmd_boot(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    m = Machine(cpus=args.cpus, memory_mb=args.memory, cmdline=args.cmdline)
    if not args.quiet:
        m.serial.listeners.append(lambda line: (sys.stdout.write(line.decode("utf-8", "replace")),
                                                sys.stdout.flush()))
    m.boot()
    m.run(ms=args.ms)
    print(format_summary(m, time.perf_counter() - t0))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftemu", description="A full-system x86-64 emulator with Linux-style ftrace.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("boot", help="boot the guest kernel, stream its console, summarise")
    b.add_argument("--cpus", type=int, default=2, help="number of vCPUs (1-8, default 2)")
    b.add_argument("--ms", type=float, default=200, help="virtual ms to run after boot (default 200)")
    b.add_argument("--cmdline", default="console=ttyS0", help="kernel command line")
    b.add_argument("--memory", type=int, default=32, help="RAM in MiB (default 32)")
    b.add_argument("--quiet", action="store_true", help="do not stream the console")
    b.set_defaults(func=cmd_boot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (EmuError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"ftemu: error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
