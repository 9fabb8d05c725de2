"""Frozen copies of guest RAM that the machine's RAM is mapped onto copy-on-write.

A copy lives in a memfd and never changes. Mapping it MAP_PRIVATE | MAP_FIXED over the RAM's
own host addresses swaps the contents in one `mmap` call: every vCPU's Unicorn (which maps RAM
by host pointer), the native helper and `m.ram` keep their pointers. The kernel drops only the
pages touched since the last such mapping, so a restore costs in proportion to what the guest
touched (about 0.05 ms after 1 ms of guest time at 64 MiB), not to the RAM size (a 64 MiB
memcpy is 6-8 ms); the guest's first store to a page afterwards copies that page (a COW fault,
a few microseconds), its first read of a page maps the shared one. Unicorn's own memory
snapshots are copy-on-write as well but per engine instance, which silently breaks the RAM
sharing between vCPUs; this is one mapping in the one process, seen by all of them alike."""
from __future__ import annotations

import ctypes
import mmap
import os
import weakref

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
MAP_FIXED = 0x10


class RamImage:
    """An unchangeable copy of ``ram`` (page-aligned size), kept in a memfd."""

    def __init__(self, ram: memoryview) -> None:
        self.size = len(ram)
        self._fd = os.memfd_create("ftemu-ram", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self._fd)
        os.ftruncate(self._fd, self.size)
        done = 0
        while done < self.size:
            done += os.pwrite(self._fd, ram[done:], done)

    def map_over(self, ptr: int) -> None:
        """Make the ``size`` bytes of host memory at ``ptr`` (the start of an existing private
        mapping) a private copy-on-write mapping of this copy."""
        got = _libc.mmap(ptr, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | MAP_FIXED, self._fd, 0)
        if got != ptr:
            err = ctypes.get_errno()
            raise OSError(err, f"mapping a RAM image over guest RAM failed: {os.strerror(err)}")
