"""Running the installed ``ftemu`` command as a user does: in a subprocess, piped or on a
pseudo-terminal."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

FTEMU = [sys.executable, "-m", "ftemu.cli"]


def ftemu(*args: str, cwd: str | Path | None = None, timeout: float = 300,
          input: str | None = None) -> subprocess.CompletedProcess:
    """``ftemu ARGS...`` with stdout and stderr piped; text out."""
    return subprocess.run([*FTEMU, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, input=input)


def ftemu_on_terminal(*args: str, columns: int = 100, timeout: float = 300) -> bytes:
    """``ftemu ARGS...`` with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide;
    everything it wrote, as the terminal received it."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [*FTEMU, *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:        # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return bytes(out)
