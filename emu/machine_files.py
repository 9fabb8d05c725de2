"""The machine's own files in ``m.fs``: /proc/cmdline, /proc/kallsyms and the CPU hotplug
files of /sys/devices/system/cpu, as fs/proc, kernel/kallsyms.c and drivers/base/cpu.c
serve them."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import devkmsg, procfs
from .errors import EmuError
from .pseudofs import fs_error

if TYPE_CHECKING:
    from .machine import Machine

CPU_DIR = "/sys/devices/system/cpu"


def kstrtobool(text: str) -> bool:
    """lib/kstrtox.c kstrtobool: the first character decides (y/t/1, n/f/0), or the first two
    for on/of(f); EINVAL otherwise."""
    first, second = text[:1], text[1:2]
    if first and first in "yYtT1":
        return True
    if first and first in "nNfF0":
        return False
    if first and first in "oO" and second and second in "nNfF":
        return second in "nN"
    raise fs_error(errno.EINVAL, detail=f"not a boolean: {text!r}")


def cpu_ranges(cpus: list[int]) -> str:
    """cpumap_print_list_to_buf: ``0-1,3`` (an empty set prints as an empty line)."""
    parts: list[str] = []
    for c in cpus:
        if parts and c == last + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{c}"
        else:
            parts.append(str(c))
        last = c
    return ",".join(parts) + "\n"


def register(m: "Machine") -> None:
    """Register the machine's files (called once, before the extensions attach)."""
    fs = m.fs
    procfs.register(m)              # /proc/cmdline, /proc/meminfo: the guest's show functions
    devkmsg.register(m)             # /dev/kmsg: user space's lines in the kernel log
    fs.register_dir("/sys/module")  # one directory per loaded module (module_files)
    fs.register_text("/proc/kallsyms", lambda: m.image.kallsyms_text() + m.modules.kallsyms_text())
    everyone = list(range(len(m.cpus)))
    fs.register_text(f"{CPU_DIR}/possible", lambda: cpu_ranges(everyone))
    fs.register_text(f"{CPU_DIR}/present", lambda: cpu_ranges(everyone))
    fs.register_text(f"{CPU_DIR}/online", lambda: cpu_ranges(m.online_cpus()))
    fs.register_text(f"{CPU_DIR}/offline",
                     lambda: cpu_ranges([c for c in everyone if c not in m.online_cpus()]))
    for cpu in everyone:
        fs.register_dir(f"{CPU_DIR}/cpu{cpu}")
        if cpu:         # the boot CPU cannot go offline, so it has no online file (as x86)
            fs.register_text(f"{CPU_DIR}/cpu{cpu}/online", _online_reader(m, cpu),
                             _online_writer(m, cpu), mode=0o644)


def _online_reader(m: "Machine", cpu: int):
    return lambda: "1\n" if cpu in m.online_cpus() else "0\n"


def _online_writer(m: "Machine", cpu: int):
    def write(text: str) -> None:
        up = kstrtobool(text)
        # Always asked of the guest, even when the CPU looks to be in that state already:
        # the guest's own hotplug cycle may be taking it down and up right now.
        try:
            (m.cpu_up if up else m.cpu_down)(cpu)
        except EmuError as e:
            raise fs_error(errno.EIO, detail=str(e).splitlines()[0]) from None
    return write
