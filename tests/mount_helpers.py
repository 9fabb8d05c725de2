"""Starting and stopping ``ftemu mount`` for the tests that drive it from shells."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRACING = "sys/kernel/tracing"


def start_mount(mountpoint: Path, *flags: str) -> subprocess.Popen:
    """``ftemu mount DIR`` in the background; returns once the tree is there."""
    proc = subprocess.Popen([sys.executable, "-m", "ftemu", "mount", str(mountpoint), "--quiet",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180         # a loaded machine boots slowly
    while not (mountpoint / TRACING).is_dir():
        if proc.poll() is not None:
            pytest.fail(f"ftemu mount exited {proc.returncode}: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("ftemu mount did not come up within 180 s")
        time.sleep(0.05)
    return proc


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
