"""/dev/kmsg (the kernel's devkmsg_write/devkmsg_read in kernel/printk/printk.c).

A write(2) is one record of the log: an optional ``<N>`` prefix gives the level (its low three
bits; the log keeps no facility), else the default level; a trailing newline ends the
record. This is how user space (the livepatch selftests' ``log``) puts its lines
between the kernel's. A read(2) returns one whole record as
``<level>,<seq>,<usec>,-;<text>\\n`` (EINVAL if it does not fit), blocking at the
end of the log unless the file was opened O_NONBLOCK (then EAGAIN).
"""
from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING

from .printk import LOGLEVEL_DEFAULT
from .pseudofs import Handle, fs_error

if TYPE_CHECKING:
    from .machine import Machine

PATH = "/dev/kmsg"
LOG_LINE_MAX = 1024 - 32
WAIT_S = 3600.0
_PREFIX = re.compile(r"<(\d+)>")


class KmsgHandle(Handle):
    def __init__(self, m: "Machine", flags: int) -> None:
        self.m, self.flags = m, flags
        self.seq = m.log.cleared          # the oldest record still in the log

    def write(self, data: bytes, offset: int) -> int:
        if len(data) > LOG_LINE_MAX:
            raise fs_error(errno.EINVAL)
        text = data.decode("utf-8", "replace")
        level = LOGLEVEL_DEFAULT
        m = _PREFIX.match(text)
        if m:
            level = int(m.group(1)) & 7
            text = text[m.end():]
        self.m.printk(text.removesuffix("\n"), level)
        return len(data)

    def _available(self) -> bool:
        return self.seq < self.m.log.cleared + len(self.m.log.records)

    def read(self, size: int, offset: int) -> bytes:
        log = self.m.log
        self.seq = max(self.seq, log.cleared)
        if not self._available():
            if self.flags & os.O_NONBLOCK:
                raise fs_error(errno.EAGAIN)
            if not self.m.fs.wait_event(self._available, WAIT_S):
                raise fs_error(errno.EAGAIN)
        r = log.records[self.seq - log.cleared]
        text = "".join(c if 32 <= ord(c) < 127 or ord(c) > 127 else f"\\x{ord(c):02x}" for c in r.text)
        line = f"{r.level},{self.seq},{r.ts_ns // 1000},-;{text}\n"
        data = line.encode()
        if len(data) > size:
            raise fs_error(errno.EINVAL)
        self.seq += 1
        return data


class DevKmsg:
    mode = 0o644

    def __init__(self, m: "Machine") -> None:
        self.m = m

    def open(self, flags: int) -> Handle:
        return KmsgHandle(self.m, flags)


def register(m: "Machine") -> None:
    m.fs.register(PATH, DevKmsg(m))
