"""What the ftemu commands share: one-line usage errors, the machine flags and their errors,
and a progress line for long work (a terminal only)."""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from emu import Machine


class UsageError(Exception):
    """A bad value for a flag the user typed: printed as ``ftemu CMD: error: argument FLAG: ...``."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")
        self.flag = flag


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and examples kept as written."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(sub, name: str, help: str, example: str) -> Parser:
    """A subcommand whose ``--help`` ends with a worked example."""
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                          epilog=f"example:\n  {example}")


def add_machine_options(p: argparse.ArgumentParser, ms: float | None, what: str = "run") -> None:
    """--cpus, --memory, --cmdline and (when ``ms`` is given) --ms."""
    p.add_argument("--cpus", type=int, default=2, metavar="N", help="number of vCPUs (1-8, default 2)")
    p.add_argument("--memory", type=int, default=32, metavar="MIB", help="RAM in MiB (default 32)")
    p.add_argument("--cmdline", default="console=ttyS0", metavar="TEXT",
                   help="kernel command line (default 'console=ttyS0')")
    if ms is not None:
        p.add_argument("--ms", type=float, default=ms, metavar="T",
                       help=f"virtual milliseconds to {what} (default {ms:g})")


# Machine names its parameters in its ValueErrors; the user typed flags.
_PARAM_FLAGS = (("memory_mb", "--memory"), ("cpus", "--cpus"), ("cmdline", "--cmdline"),
                ("command line", "--cmdline"), ("ms", "--ms"))


@contextmanager
def flag_errors() -> Iterator[None]:
    """Turn a ValueError about a Machine parameter into a UsageError naming the flag."""
    try:
        yield
    except ValueError as e:
        text = str(e)
        for param, flag in _PARAM_FLAGS:
            if re.match(rf"{re.escape(param)}\b", text):
                rest = text[len(param):].lstrip()
                raise UsageError(flag, rest) from None
        raise


def make_machine(args: argparse.Namespace, console: Callable[[bytes], None] | None = None,
                 **kwargs) -> Machine:
    """The Machine the flags describe, booted (``console`` sees every line the guest prints);
    errors name the flags."""
    if getattr(args, "ms", 0) < 0:
        raise UsageError("--ms", f"must be >= 0, not {args.ms:g}")
    with flag_errors():
        m = Machine(cpus=args.cpus, memory_mb=args.memory, cmdline=args.cmdline, **kwargs)
        if console is not None:
            m.serial.listeners.append(console)
        m.boot()
    return m


def show_progress() -> bool:
    """Progress lines go to a terminal only (and only after a second of work): nothing when
    stderr is piped or redirected."""
    return sys.stderr.isatty()


def run_for(m: Machine, ms: float, desc: str = "running",
            every: Callable[[], None] | None = None, every_ms: float = 1.0) -> None:
    """``m.run(ms)`` with a progress line on a terminal, calling ``every()`` between slices
    each ``every_ms`` of virtual time. The slices are those of one ``m.run(ms)`` (the check
    between slices never stops early), so runs stay comparable."""
    progress = show_progress() and ms > 0
    if not progress and every is None:
        m.run(ms)
        return
    start, end, period = m.now, m.now + int(ms * 1e6), int(every_ms * 1e6)
    due = [start + period]
    bar = None
    if progress:
        # tqdm: a maintained, dependency-free progress bar that handles terminal width,
        # rates and cleanup on exceptions; hand-writing that is not worth it.
        from tqdm import tqdm
        bar = tqdm(total=round(ms, 3), desc=desc, unit="ms", leave=False, file=sys.stderr,
                   delay=1.0, bar_format="{desc}: {n:.1f}/{total:g} virtual ms "
                                         "[{elapsed}<{remaining}]")

    def check() -> bool:
        if bar is not None:
            bar.update(min(ms, (m.now - start) / 1e6) - bar.n)
        if every is not None and m.now >= due[0]:
            every()
            due[0] = m.now + period
        return m.now >= end
    try:
        m.run_until(check, ms)
    finally:
        if bar is not None:
            bar.close()


OUT_CHUNK = 4096


def write_out(text: str) -> None:
    """Write ``text`` to stdout in pieces: a reader that leaves (``| head``) then shows up as
    BrokenPipeError on the next piece, even where stdout is unbuffered (PYTHONUNBUFFERED),
    whose single large write would end short without an error."""
    for i in range(0, len(text), OUT_CHUNK):
        sys.stdout.write(text[i:i + OUT_CHUNK])
    sys.stdout.flush()
