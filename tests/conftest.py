"""Shared fixtures: the tiny purpose-built guest, and booted machines running the real kernel."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emu import Machine, blockcount
from guest import SOURCE_DIR

TINY = Path(__file__).parent / "tinyguest"


@pytest.fixture(scope="session")
def tiny_kernel(tmp_path_factory):
    """Build tests/tinyguest/tiny.S, optionally with -D flags: ``tiny_kernel("SPIN")``."""
    out = tmp_path_factory.mktemp("tiny")
    built: dict[tuple[str, ...], Path] = {}

    def build(*defines: str) -> Path:
        if defines not in built:
            name = "-".join(defines) or "plain"
            obj, elf = out / f"{name}.o", out / f"{name}.elf"
            subprocess.run(["gcc", "-c", f"-I{SOURCE_DIR}", *[f"-D{d}" for d in defines],
                            str(TINY / "tiny.S"), "-o", str(obj)], check=True)
            subprocess.run(["ld", "-T", str(TINY / "tiny.ld"), "--no-warn-rwx-segments",
                            "-o", str(elf), str(obj)], check=True)
            built[defines] = elf
        return built[defines]
    return build


@pytest.fixture(params=["native", "count"])
def counting(request, monkeypatch):
    """Run the test with the native block counter, then with the count= fallback."""
    if request.param == "count":
        monkeypatch.setenv(blockcount.ENV_SWITCH, "0")
        monkeypatch.setattr(blockcount, "_lib", None)
    elif not blockcount.available():
        pytest.skip(f"native block counter unavailable: {blockcount.why_unavailable()}")
    return request.param


@pytest.fixture(scope="session")
def booted_snapshots():
    """One booted machine per CPU count, kept as a snapshot so each test starts from it fast."""
    cache: dict[int, tuple[Machine, object]] = {}

    def get(cpus: int) -> Machine:
        if cpus not in cache:
            m = Machine(cpus=cpus)
            m.boot()
            cache[cpus] = (m, m.snapshot())
        m, snap = cache[cpus]
        m.restore(snap)
        return m
    return get


def require_tool_path(name: str, package: str | None = None) -> str:
    """The path of system tool ``name``. Where it is missing the test is skipped with the
    package to install, except under CI=true, where .ci/run installs it: there the missing
    tool is a failure."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {package or name})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_tool():
    """``require_tool(name, package=None) -> path``: see require_tool_path."""
    return require_tool_path


@pytest.fixture(scope="session")
def kmod(tmp_path_factory):
    """Build a module of tests/modules with ``ftemu kmod build``'s code: ``kmod("hello-mod")``."""
    from emu.kbuild import build_module
    out = tmp_path_factory.mktemp("kmod")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            built[name] = build_module(Path(__file__).parent / "modules" / f"{name}.c",
                                       out / f"{name}.ko")
        return built[name]
    return build
