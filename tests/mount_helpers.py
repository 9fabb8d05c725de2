"""Starting and stopping ``ftemu mount`` for the tests that drive it from shells."""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TRACING = "sys/kernel/tracing"


def start_mount(mountpoint: Path, *flags: str) -> subprocess.Popen:
    """``ftemu mount DIR`` in the background; returns once the tree is there. Its output
    goes to a file (``mount_log(proc)``), never a pipe: a guest panic prints more than a
    pipe holds, and a mount blocked writing it would hang every file operation."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "ftemu", "mount", str(mountpoint), "--quiet",
                             *flags], stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180         # a loaded machine boots slowly
    while not (mountpoint / TRACING).is_dir():
        if proc.poll() is not None:
            pytest.fail(f"ftemu mount exited {proc.returncode}: {mount_log(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("ftemu mount did not come up within 180 s")
        time.sleep(0.05)
    return proc


def mount_log(proc: subprocess.Popen) -> str:
    """What the mount printed so far (stdout and stderr)."""
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")


def stop_mount(proc: subprocess.Popen, mountpoint: Path, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


def is_mounted(mountpoint: Path) -> bool:
    return any(line.split()[1] == str(mountpoint) for line in Path("/proc/mounts").read_text().splitlines())
