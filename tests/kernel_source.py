"""The kernel's own files as test input: members of Debian's linux-source tarballs
(/usr/src/linux-source-<version>.tar.xz, which .ci/run installs), extracted once into
~/.cache/ftemu/kernel-source and never copied into the project."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftemu" / "kernel-source"


def tarball(version: str, require_tool: Callable) -> Path:
    """/usr/src/linux-source-<version>.tar.xz; without it, conftest's ``require_tool`` skips
    (fails under CI=true) naming the package to install."""
    path = Path(f"/usr/src/linux-source-{version}.tar.xz")
    if not path.is_file():
        require_tool(f"linux-source-{version}-tarball-missing", f"linux-source-{version}")
    return path


def extract(version: str, require_tool: Callable, *dirs: str) -> Path:
    """The top directory of linux-source-<version> holding ``dirs`` (paths inside the tree),
    extracted on first use (an xz tarball is read whole: ~10 s) and cached by the tarball's
    mtime, under a directory renamed into place so a killed run never leaves half a tree."""
    src = tarball(version, require_tool)
    top = src.name.removesuffix(".tar.xz")
    key = "-".join(d.strip("/").replace("/", "_") for d in dirs)
    dest = CACHE / f"{top}-{int(src.stat().st_mtime)}" / key
    if not (dest / top).is_dir():
        tmp = dest.with_suffix(".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xJf", str(src), "-C", str(tmp), "--wildcards",
                        *(f"{top}/{d.strip('/')}/*" for d in dirs)], check=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest / top

