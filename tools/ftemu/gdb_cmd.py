"""``ftemu gdb``: a guest under the GDB remote stub, for ``gdb kernel.elf -ex 'target remote :1234'``."""
from __future__ import annotations

import argparse
import sys

from emu import Machine
from emu.gdbstub import GdbServer

from .options import UsageError, add_command, add_machine_options, flag_errors


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError("--port", f"must be 0..65535, not {args.port}")

    def echo(line: bytes) -> None:
        sys.stdout.write(line.decode("utf-8", "replace"))
        sys.stdout.flush()
    with flag_errors():
        m = Machine(cpus=args.cpus, memory_mb=args.memory, cmdline=args.cmdline)
    if not args.quiet:
        m.serial.listeners.append(echo)
    if not args.stopped:
        m.boot()
    server = GdbServer(m, args.port, log=lambda msg: print(f"ftemu gdb: {msg}", flush=True))
    server.running = not args.stopped
    where = "stopped at its first instruction" if args.stopped else "running"
    print(f"ftemu gdb: the guest is {where}; {len(m.cpus)} vCPUs are threads 1-{len(m.cpus)}\n"
          f"ftemu gdb: listening on 127.0.0.1:{server.port}; connect with\n"
          f"  gdb {m.image.path} -ex 'target remote :{server.port}'", flush=True)
    try:
        server.serve()
    finally:
        server.close()
    return 0


def register(sub) -> None:
    p = add_command(sub, "gdb", "serve the guest to gdb over the remote protocol (loopback)",
                    "ftemu gdb --cpus 4 --port 1234")
    add_machine_options(p, ms=None)
    p.add_argument("--port", type=int, default=1234, metavar="PORT",
                   help="TCP port on 127.0.0.1 (default 1234; 0 picks a free one)")
    p.add_argument("--stopped", action="store_true",
                   help="wait for gdb at the kernel's first instruction instead of booting")
    p.add_argument("--quiet", action="store_true", help="do not stream the console")
    p.set_defaults(func=run)
