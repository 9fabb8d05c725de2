"""The FUSE view of a machine's pseudo-file tree (``m.fs``), for ``ftemu mount``.

Every request takes the machine lock (a Condition the guest's run loop also holds while it
runs a slice), so requests and the guest never touch the machine at once. Files open with
direct_io: tracefs files report size 0, and the page cache would serve 0 bytes of them.
A blocking read (``trace_pipe``) waits through ``m.fs.wait_event``, which here releases the
lock while the guest runs on, wakes on every slice, and gives up with EINTR when the reader
is interrupted (FUSE INTERRUPT), with ENODEV when the mount is going away.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from emu.pseudofs import Handle, PseudoFS, fs_error

WAIT_STEP_S = 0.05


def load_fuse():
    """mfusepy with libfuse3 loaded; OSError naming the package to install if it is missing."""
    try:
        import mfusepy
    except (ImportError, OSError, EnvironmentError) as e:
        raise OSError(f"FUSE is not available: install fuse3 (apt-get install fuse3); {e}") \
            from None
    if mfusepy.fuse_version_major != 3:
        raise OSError("ftemu mount needs libfuse 3: install fuse3 (apt-get install fuse3)")
    if not os.path.exists("/dev/fuse"):
        raise OSError("/dev/fuse is missing: load the fuse module (or give a container "
                      "--device /dev/fuse)")
    return mfusepy


class FuseView:
    """mfusepy operations (raw_fi) serving ``fs``; ``cv`` is the machine lock."""

    use_ns = True

    def __init__(self, fs: PseudoFS, cv: threading.Condition,
                 interrupted: Callable[[], bool],
                 on_open: Callable[[], None] | None = None) -> None:
        self.fs, self.cv = fs, cv
        self._interrupted = interrupted
        self._on_open = on_open            # before each open, under the lock (requester.py)
        self.stopping = False
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._t0 = time.time_ns()
        fs.waiter = self.wait_event

    # ---- blocking reads -------------------------------------------------------
    def wait_event(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """m.fs's waiter in the mount: called with the lock held; releases it while waiting."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stopping:           # not EINTR: readers such as cat retry on EINTR
                raise fs_error(errno.ENODEV, detail="the mount is going away")
            if self._interrupted():
                raise fs_error(errno.EINTR, detail="interrupted")
            self.cv.wait(min(left, WAIT_STEP_S))
        return True

    # ---- metadata ---------------------------------------------------------------
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        with self.cv:
            isdir, mode = self.fs.stat(path)
        kind = stat.S_IFDIR if isdir else stat.S_IFREG
        return {"st_mode": kind | mode, "st_nlink": 2 if isdir else 1, "st_size": 0,
                "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_atime": self._t0, "st_mtime": self._t0, "st_ctime": self._t0}

    def readdir(self, path: str, fh: Any) -> list[str]:
        with self.cv:
            return [".", "..", *self.fs.listdir(path)]

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_namemax": 255}

    def mkdir(self, path: str, mode: int) -> int:
        with self.cv:
            self.fs.mkdir(path)
        return 0

    def rmdir(self, path: str) -> int:
        with self.cv:
            self.fs.rmdir(path)
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise fs_error(errno.EACCES)        # tracefs has no create: open(O_CREAT) is refused

    def unlink(self, path: str) -> int:
        raise fs_error(errno.EPERM)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        # libfuse passes O_TRUNC in open's flags; a lone truncate(2) to 0 is harmless
        if length:
            raise fs_error(errno.EINVAL)
        return 0

    # ---- open files ---------------------------------------------------------------
    def open(self, path: str, fi: Any) -> int:
        with self.cv:
            if self._on_open is not None:
                self._on_open()
            h = self.fs.open(path, fi.flags)
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self.handles[fh] = h
        fi.fh = fh
        fi.direct_io = 1
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        with self.cv:
            return self.handles[fi.fh].read(size, offset)

    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        with self.cv:
            return self.handles[fi.fh].write(data, offset)

    def flush(self, path: str, fi: Any) -> int:
        with self.cv:
            self.handles[fi.fh].flush()
        return 0

    def release(self, path: str, fi: Any) -> int:
        with self.cv:
            h = self.handles.pop(fi.fh)
            try:
                h.release()
            except OSError:
                pass                         # close(2) has returned already: nobody to tell
        return 0
