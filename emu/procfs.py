"""/proc files whose text the guest kernel writes: the host runs the guest's show function
(``cmdline_proc_show``, ``meminfo_proc_show``) into a seq_file in guest memory, so a live
patch of that function changes what the file shows, as on Linux."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import module_files

if TYPE_CHECKING:
    from .machine import Machine

SEQ_BUF = 4096 - 64         # struct seq_file {buf, size, count} at the start of the page


def seq_show(m: "Machine", show: str) -> str:
    """Text of ``show(struct seq_file *m, void *v)`` run on CPU 0 (an overflow is cut, as a
    seq_file retried with a bigger buffer would not be: the files here are short)."""
    page = m.modules.area.alloc(4096, align=4096)
    try:
        m.write(page, struct.pack("<QQQ", page + 64, SEQ_BUF, 0))
        m.call(show, page, 0)
        count = min(struct.unpack("<Q", m.read(page + 16, 8))[0], SEQ_BUF)
        return m.read(page + 64, count).decode("utf-8", "replace")
    finally:
        m.modules.area.free(page)


def kernel_started(m: "Machine") -> bool:
    """Has the guest copied its command line yet (its show functions can run)?"""
    return m.image.has_symbol("saved_command_line") and m.read(m.symbol_address("saved_command_line"), 1) != b"\0"


def register(m: "Machine") -> None:
    m.fs.register_text("/proc/cmdline", lambda: seq_show(m, "cmdline_proc_show")
                       if kernel_started(m) else m.cmdline + "\n")
    m.fs.register_text("/proc/modules", lambda: module_files.proc_modules(m))
    m.fs.register_text("/proc/meminfo", lambda: seq_show(m, "meminfo_proc_show")
                       if kernel_started(m) else "")
