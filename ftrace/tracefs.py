"""ftrace's own files in the machine's tree (kernel/trace/ftrace.c's tracefs and sysctl
entries): the function listings, and /proc/sys/kernel/ftrace_enabled."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from emu.pseudofs import fs_error

from . import views

if TYPE_CHECKING:
    from emu.pseudofs import PseudoFS

    from .machine import MachineFtrace

SYSCTL_KERNEL = "/proc/sys/kernel"


def proc_dointvec_minmax(text: str, lo: int, hi: int) -> int:
    """A sysctl integer write: optional sign and decimal digits around whitespace, within
    [lo, hi]; EINVAL otherwise (nothing is changed)."""
    word = text.strip()
    digits = word[1:] if word[:1] in "+-" else word
    if not digits.isdigit() or not lo <= int(word) <= hi:
        raise fs_error(errno.EINVAL, detail=f"expected an integer in {lo}..{hi}, got {text!r}")
    return int(word)


def register_ftrace_files(ft: "MachineFtrace") -> None:
    """The top-level files of ftrace.c (called when ftrace attaches to the machine)."""
    tfs: PseudoFS = ft.machine.tracefs
    tfs.register_text("available_filter_functions", lambda: views.available_filter_functions(ft))
    tfs.register_text("available_filter_functions_addrs",
                      lambda: views.available_filter_functions_addrs(ft))
    tfs.register_text("enabled_functions", lambda: views.enabled_functions(ft))
    tfs.register_text("touched_functions", lambda: views.touched_functions(ft))
    tfs.register_text("recursed_functions", lambda: ft.recursed_functions,
                      truncate=ft.x86.recursion.clear, mode=0o644)

    def set_ftrace_enabled(text: str) -> None:
        ft.ftrace_enabled = proc_dointvec_minmax(text, 0, 1)
    ft.machine.fs.register_text(f"{SYSCTL_KERNEL}/ftrace_enabled",
                                lambda: f"{ft.ftrace_enabled}\n", set_ftrace_enabled, mode=0o644)
