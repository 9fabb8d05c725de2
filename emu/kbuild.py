"""Build the guest kernel on first use and cache it by the hash of its sources.

A user never runs make by hand: ``kernel_path()`` hashes every source file under guest/
(plus the compiler's version), and builds with ``make -C guest O=<cache>/<hash>`` only when
that directory has no kernel yet. The cache lives in $FTEMU_CACHE, else
$XDG_CACHE_HOME/ftemu, else ~/.cache/ftemu.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from guest import SOURCE_DIR

from .errors import BuildError

_SOURCE_SUFFIXES = {".c", ".h", ".S", ".ld"}
ENV_SWITCH = "FTEMU_NATIVE"          # "0": the Python fallbacks even where the helpers build


def cache_root() -> Path:
    """Directory holding one build directory per source hash."""
    if os.environ.get("FTEMU_CACHE"):
        return Path(os.environ["FTEMU_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ftemu"


def source_hash() -> str:
    """Hash of the guest sources and of the compiler that builds them."""
    h = hashlib.sha256()
    files = sorted(p for p in SOURCE_DIR.rglob("*")
                   if p.is_file() and (p.suffix in _SOURCE_SUFFIXES or p.name == "Makefile"))
    for p in files:
        h.update(str(p.relative_to(SOURCE_DIR)).encode() + b"\0" + p.read_bytes() + b"\0")
    try:
        cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise BuildError(f"cannot run gcc to build the guest kernel: {e}") from None
    h.update(cc.encode())
    return h.hexdigest()[:16]


def kernel_path(variant: str = "kernel") -> Path:
    """Path of the built guest ELF: ``kernel`` (with ftrace sites) or ``kernel-nopg``."""
    out = cache_root() / source_hash()
    return build_once(out / f"{variant}.elf", lambda: _build(out, variant))


def build_native(source: Path, what: str, flags: tuple[str, ...] = ()) -> Path:
    """Compile one C file of emu/native into a shared object in the cache, once per source,
    flags and compiler (BuildError, naming ``what``, without gcc or on a failed build)."""
    try:
        cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"no gcc to build the {what}: {e}") from None
    digest = hashlib.sha256(source.read_bytes() + cc.encode() + "\0".join(flags).encode()).hexdigest()[:16]
    out = cache_root() / "native" / digest / source.with_suffix(".so").name

    def build() -> None:
        out.parent.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            so = Path(tmp) / out.name
            r = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", *flags,
                                "-o", str(so), str(source)], capture_output=True, text=True)
            if r.returncode:
                raise BuildError(f"{what} build failed:\n" + r.stderr[-2000:])
            os.replace(so, out)
    return build_once(out, build)


class NativeLib:
    """A native helper loaded on first use by ``make()`` (build it with ``build_native``,
    load it, set its prototypes): ``load()`` returns it, or None with ``FTEMU_NATIVE=0`` or
    where it could not be had (a BuildError or OSError, kept in ``why_not``: not retried)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self.lib: Any = None
        self.why_not: str | None = None

    def load(self) -> Any:
        if os.environ.get(ENV_SWITCH, "1") == "0" or self.why_not is not None:
            return None
        if self.lib is None:
            try:
                self.lib = self._make()
            except (BuildError, OSError) as e:
                self.why_not = str(e)
        return self.lib


def build_once(target: Path, build: Callable[[], None]) -> Path:
    """``target``, running ``build()`` first if it does not exist yet (under a lock, so that
    concurrent first uses build it once)."""
    if target.exists():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            build()
    return target


def _build(out: Path, variant: str) -> None:
    """Run make into a temporary directory, then move the results into ``out``."""
    target = "nopg" if variant == "kernel-nopg" else "all"
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        if out.exists():
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        r = subprocess.run(["make", "-s", "-C", str(SOURCE_DIR), f"O={tmp}", target],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError("guest kernel build failed:\n" + (r.stdout + r.stderr)[-4000:])
        out.mkdir(exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.is_file():
                os.replace(f, out / f.name)


def build_module(src: str | Path, out: str | Path | None = None) -> Path:
    """Compile one C file into a loadable module (a relocatable ELF) with the kernel's flags
    (``-pg -mfentry -mrecord-mcount`` included) against guest/include; BuildError with the
    compiler's messages on failure. The module's name is the file's stem ('-' as '_')."""
    src = Path(src)
    out = Path(out) if out is not None else src.with_suffix(".ko")
    if not src.is_file():
        raise BuildError(f"no such module source: {src}")
    name = src.name.split(".")[0].replace("-", "_")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["make", "-s", "-C", str(SOURCE_DIR), f"O={tmp}", "module",
                            f"SRC={src.resolve()}", f"OUT={out.resolve()}", f"NAME={name}"],
                           capture_output=True, text=True)
    if r.returncode != 0:
        output = r.stdout + r.stderr
        first = next((ln for ln in output.splitlines() if "error" in ln), "")
        raise BuildError(f"module build of {src} failed: {first}\n" + output[-4000:])
    return out
