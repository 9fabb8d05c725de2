"""/sys/kernel/livepatch in ``m.fs``, as kernel/livepatch/core.c's kobjects show it.

<patch>/{enabled, transition, force, replace, stack_order}, <patch>/<object>/patched and one
directory per function, ``<name>,<sympos>``. Writes raise the kernel's errno (OSError).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from emu.machine_files import kstrtobool

if TYPE_CHECKING:
    from .core import Livepatch
    from .structs import KlpPatch

ROOT = "/sys/kernel/livepatch"


def register_root(lp: "Livepatch") -> None:
    lp.m.fs.register_dir(ROOT)


def _writer(lp: "Livepatch", patch: "KlpPatch", fn: Callable[[bool], None]) -> Callable[[str], None]:
    def write(text: str) -> None:
        fn(kstrtobool(text.strip()))
    return write


def add_patch(lp: "Livepatch", patch: "KlpPatch") -> None:
    """klp_init_patch's kobjects: the patch's directory tree."""
    fs, d = lp.m.fs, f"{ROOT}/{patch.name}"
    fs.register_dir(d)
    fs.register_text(f"{d}/enabled", lambda: f"{int(patch.enabled)}\n",
                     _writer(lp, patch, lambda on: lp.set_enabled(patch, on)), mode=0o644)
    fs.register_text(f"{d}/transition", lambda: f"{int(lp.transition.patch is patch)}\n")
    fs.register_text(f"{d}/force", write=_writer(lp, patch, lambda on: on and lp.force(patch)),
                     mode=0o200)
    fs.register_text(f"{d}/replace", lambda: f"{int(patch.replace)}\n")
    fs.register_text(f"{d}/stack_order", lambda: f"{lp.patches.index(patch) + 1}\n")
    for obj in patch.objs:
        od = f"{d}/{obj.display_name}"
        fs.register_dir(od)
        fs.register_text(f"{od}/patched", lambda obj=obj: f"{int(obj.patched)}\n")
        for func in obj.funcs:
            fs.register_dir(f"{od}/{func.old_name},{func.old_sympos or 1}")


def remove_patch(lp: "Livepatch", patch: "KlpPatch") -> None:
    path = f"{ROOT}/{patch.name}"
    if lp.m.fs.exists(path):
        lp.m.fs.unregister(path)
