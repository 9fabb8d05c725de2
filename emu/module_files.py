"""A module's files in ``m.fs``: /proc/modules, and /sys/module/<name>/ with refcnt,
initstate, taint and parameters/<name> (read and written through params.c's rules)."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .params import param_get, param_set
from .pseudofs import fs_error

if TYPE_CHECKING:
    from .machine import Machine
    from .module import Module

INITSTATE = {0: "live", 1: "coming", 2: "going", 3: "unformed"}


def proc_modules(m: "Machine") -> str:
    """``name size refcnt users state address (taints)``, newest first, as /proc/modules."""
    from .module import STATE_NAMES
    out = []
    for mod in reversed(list(m.modules.modules.values())):
        taint = " (K)" if mod.livepatch else ""
        out.append(f"{mod.name} {mod.size} {m.modules.refcnt(mod)} - {STATE_NAMES[mod.state]} "
                   f"0x{mod.text:016x}{taint}\n")
    return "".join(out)


def register_module(m: "Machine", mod: "Module") -> None:
    """/sys/module/<name>/ for a module that is COMING."""
    d = f"/sys/module/{mod.name}"
    m.fs.register_dir(d)
    m.fs.register_text(f"{d}/refcnt", lambda: f"{m.modules.refcnt(mod)}\n")
    m.fs.register_text(f"{d}/initstate", lambda: INITSTATE[mod.state] + "\n")
    m.fs.register_text(f"{d}/taint", lambda: ("K" if mod.livepatch else "") + "\n")
    if mod.params:
        m.fs.register_dir(f"{d}/parameters")
    for p in mod.params:
        if not p.perm & 0o444:
            continue                    # perm 0: no sysfs file, as the kernel
        def write(text: str, p=p) -> None:
            try:
                param_set(m, mod, p, text.rstrip("\n"))
            except OSError as e:
                raise fs_error(e.errno or errno.EINVAL) from None
        m.fs.register_text(f"{d}/parameters/{p.name}", lambda p=p: param_get(m, p),
                           write if p.perm & 0o222 else None, mode=p.perm & 0o777)


def unregister_module(m: "Machine", mod: "Module") -> None:
    path = f"/sys/module/{mod.name}"
    if m.fs.exists(path):
        m.fs.unregister(path)
