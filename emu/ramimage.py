"""Frozen copies of guest RAM that the machine's RAM is mapped onto copy-on-write.

A copy lives in a memfd and never changes. Mapping it MAP_PRIVATE | MAP_FIXED over the RAM's
own host addresses swaps the contents in one `mmap` call: every vCPU's Unicorn (which maps RAM
by host pointer), the native helper and `m.ram` keep their pointers. The kernel drops only the
pages mapped since the last such mapping, so a restore costs in proportion to what the guest
touched (about 0.05 ms after 1 ms of guest time at 64 MiB), not to the RAM size (a 64 MiB
memcpy is 6-8 ms); the guest's first store to a page afterwards copies that page (a COW fault,
a few microseconds), its first read of a page maps the shared one. A copy of RAM that is
mapped from an image takes the pages nobody wrote since from that image's file, inside the
kernel, without mapping them. Unicorn's own memory snapshots are copy-on-write as well but
per engine instance, which silently breaks the RAM sharing between vCPUs; this is one
mapping in the one process, seen by all of them alike.

Each image holds a file descriptor while it lives. Where no descriptor can be had (more
live snapshots than the process's descriptor limit, commonly 1024: EMFILE), the image is a
plain copy in memory instead, and restoring it copies it back (a memcpy, as before images):
slower, never an error."""
from __future__ import annotations

import ctypes
import mmap
import os
import re
import weakref

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
MAP_FIXED = 0x10
PAGE = 4096
# /proc/self/pagemap's top byte per page: 0x80 present, 0x40 swapped, 0x20 file page. A page
# of a private file mapping that was written is an anonymous copy: present and not a file
# page, or swapped. b"1" marks such a page, b"0" one that still is the file's.
_WRITTEN = bytes(0x31 if (b & 0xA0) == 0x80 or b & 0x40 else 0x30 for b in range(256))


class RamImage:
    """An unchangeable copy of guest RAM (page-aligned size), kept in a memfd."""

    def __init__(self, ram: memoryview, ptr: int, mapped_from: RamImage | None = None) -> None:
        """Copy ``ram``, found at host address ``ptr``. If the RAM is a mapping of
        ``mapped_from``, the pages not written since are copied from that image's file:
        reading them through the mapping would map them all, and the next restore would
        spend ~2.5 ms (64 MiB) unmapping them again."""
        self.size = len(ram)
        self._copy: bytes | None = None
        try:
            self._fd = os.memfd_create("ftemu-ram", os.MFD_CLOEXEC)
        except OSError:                 # EMFILE, ENFILE, ENOSYS: a copy in memory instead
            self._fd = -1
            self._copy = bytes(ram)
            return
        weakref.finalize(self, os.close, self._fd)
        os.ftruncate(self._fd, self.size)
        written = None if mapped_from is None else _written_pages(ptr, self.size)
        if written is None:
            self._write(ram, 0, self.size)
            return
        for run in re.finditer(rb"0+|1+", written):
            start, end = run.start() * PAGE, run.end() * PAGE
            if run.group()[0] == 0x31 or not self._copy_from(mapped_from, start, end):
                self._write(ram, start, end)

    def _write(self, ram: memoryview, start: int, end: int) -> None:
        while start < end:
            start += os.pwrite(self._fd, ram[start:end], start)

    def _copy_from(self, image: RamImage, start: int, end: int) -> bool:
        """Copy [start, end) of ``image`` inside the kernel; False if it cannot."""
        try:
            while start < end:
                done = os.copy_file_range(image._fd, self._fd, end - start, start, start)
                if done <= 0:
                    return False
                start += done
        except OSError:
            return False
        return True

    def map_over(self, ptr: int) -> bool:
        """Make the ``size`` bytes of host memory at ``ptr`` (the start of an existing private
        mapping) a private copy-on-write mapping of this copy, or copy it there (a copy in
        memory, or a mapping that failed). True if the memory is now mapped from this image,
        which the next copy of it can then use (``mapped_from``)."""
        if self._copy is not None:
            ctypes.memmove(ptr, self._copy, self.size)
            return False
        rw = mmap.PROT_READ | mmap.PROT_WRITE
        if _libc.mmap(ptr, self.size, rw, mmap.MAP_PRIVATE | MAP_FIXED, self._fd, 0) == ptr:
            return True
        # Failed (ENOMEM at vm.max_map_count, say), maybe after the kernel dropped the old
        # mapping: the RAM must not stay unmapped under the vCPUs. Fresh memory, filled by a
        # copy, is a restore all the same.
        err = ctypes.get_errno()
        if _libc.mmap(ptr, self.size, rw, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1, 0) != ptr:
            raise OSError(err, f"mapping a RAM image over guest RAM failed ({os.strerror(err)}), "
                               "and so did mapping fresh memory there: guest RAM is gone")
        ram = memoryview((ctypes.c_char * self.size).from_address(ptr)).cast("B")
        done = 0
        while done < self.size:
            done += os.preadv(self._fd, [ram[done:]], done)
        return False


def _written_pages(ptr: int, size: int) -> bytes | None:
    """One byte per page of the private file mapping at ``ptr``: b"1" written since it was
    mapped, b"0" still the file's; None where /proc/self/pagemap cannot say."""
    pages = size // PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), pages * 8, ptr // PAGE * 8)
    except OSError:
        return None
    return raw[7::8].translate(_WRITTEN) if len(raw) == pages * 8 else None
