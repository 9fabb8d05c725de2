"""``ftemu``: the dispatcher. Each command lives in its own module with a ``register(sub)``;
every error is one line on stderr (exit 1; 2 for a bad flag), a closed pipe ends quietly."""
from __future__ import annotations

import os
import sys

from emu import EmuError

from . import boot, demo, diff, dump, gdb_cmd, kmod, mount_cmd, record, report, shell
from .options import Parser, UsageError

COMMANDS = (demo, boot, record, report, dump, diff, mount_cmd, shell, kmod, gdb_cmd)


def build_parser() -> Parser:
    p = Parser(prog="ftemu", description="A full-system x86-64 emulator with Linux-style ftrace.",
               epilog="example:\n  ftemu boot --cpus 4\n\n'ftemu COMMAND --help' shows each "
                      "command's flags and an example.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


def _one_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`ftemu report | head`): stop quietly, as a SIGPIPE death
        # would, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as e:
        print(f"ftemu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (EmuError, ValueError, OSError, RuntimeError) as e:
        print(f"ftemu {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
