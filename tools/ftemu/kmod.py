"""``ftemu kmod build FILE.c [-o FILE.ko]``: compile a guest module with the kernel's flags."""
from __future__ import annotations

import argparse

from emu.kbuild import build_module

from .options import add_command


def run_build(args: argparse.Namespace) -> int:
    print(build_module(args.source, args.output))
    return 0


def register(sub) -> None:
    p = add_command(sub, "kmod", "build loadable guest modules",
                    "ftemu kmod build livepatch-sample.c -o livepatch-sample.ko")
    verbs = p.add_subparsers(dest="kmod_command", required=True, metavar="VERB")
    b = verbs.add_parser("build", help="compile FILE.c against the guest's headers into FILE.ko",
                         description="Compile a module source against guest/include with the "
                                     "guest kernel's flags (-pg -mfentry -mrecord-mcount) into a "
                                     "relocatable ELF that Machine.insmod loads.")
    b.add_argument("source", help="the module's C source")
    b.add_argument("-o", "--output", help="where to write the module (default: FILE.ko)")
    b.set_defaults(func=run_build)
