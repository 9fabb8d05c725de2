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
    return subprocess.run([*FTEMU, *args], check=False, capture_output=True, text=True, cwd=cwd,
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


def ftemu_into_closed_pipe(*args: str, timeout: float = 300) -> tuple[int, bytes, bytes]:
    """``ftemu ARGS... | head -1`` through a one-page pipe: (exit status, the line read,
    everything ftemu wrote on stderr)."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 4096)
    p = subprocess.Popen([*FTEMU, *args], stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as out:
        first = out.readline()
    err = p.stderr.read()
    return p.wait(timeout=timeout), first, err
