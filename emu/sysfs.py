"""kobjects' directories and attribute files under /sys (the kernel's lib/kobject.c and
fs/sysfs as the host serves them): the guest's ``kobject_create_and_add`` and
``sysfs_create_file`` (guest/kobject.c) tell the host through SYSFS_PORT, which registers
``/sys/<parents>/<name>/<attr>`` in ``m.fs``; a read runs the attribute's ``show`` in the guest
(``kobj_attr_show`` into a page), a write its ``store``. So a module's sysfs files (the
kernel's test_klp_syscall's ``/sys/kernel/test_klp_syscall/npids``) are its own code's.

Lifetime: the last ``kobject_put`` removes the directory before the guest frees the kobject,
and a file's read or write first checks that its attribute is still registered, so the host
never calls into a freed kobject or an unloaded module's show (a handle opened before the
removal answers ENODEV, as kernfs does).
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_RDI

from . import memlayout as L
from .pseudofs import fs_error

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

PAGE = 4096
NAME_MAX = 255
DEPTH_MAX = 8                   # kobject_path in guest/kobject.c names as deep


class Sysfs:
    """The kobject directories and attribute files the guest registered (``m.sysfs``)."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self.dirs: dict[int, str] = {}                      # kobject -> its path
        self.files: dict[tuple[int, int], str] = {}         # (kobject, attribute) -> path
        machine.add_port(L.SYSFS_PORT, self._on_request)
        machine.snapshot_participants.append(self)

    # ---- the guest's requests --------------------------------------------------
    def _on_request(self, cpu: "VCpu", port: int, value: int) -> None:
        req = cpu.regs.read(UC_X86_REG_RDI)
        op, kobj, attr = struct.unpack("<QQQ", cpu.read_virt(req, 24, "sysfs request"))
        try:
            ret = self._handle(op, kobj, attr)
        except OSError as e:
            ret = -(e.errno or errno.EINVAL)
        self.m.write(req + L.SYSFS_REQ_RET, struct.pack("<q", ret))

    def _handle(self, op: int, kobj: int, attr: int) -> int:
        if op == L.SYSFS_ADD_DIR:
            path = self._path_of(kobj)
            if self.m.fs.exists(path):
                return -errno.EEXIST
            self.m.fs.register_dir(path)
            self.dirs[kobj] = path
        elif op == L.SYSFS_REMOVE_DIR:
            path = self.dirs.pop(kobj, None)
            if path is None:
                return -errno.ENOENT
            self.files = {k: p for k, p in self.files.items() if k[0] != kobj}
            self.m.fs.unregister(path)
        elif op == L.SYSFS_ADD_FILE:
            if kobj not in self.dirs:
                return -errno.ENOENT
            path = f"{self.dirs[kobj]}/{self._cstr(self.m.read_u64(attr + L.ATTR_NAME))}"
            if self.m.fs.exists(path):
                return -errno.EEXIST
            self._register_file(kobj, attr, path)
        elif op == L.SYSFS_REMOVE_FILE:
            path = self.files.pop((kobj, attr), None)
            if path is not None:
                self.m.fs.unregister(path)
        else:
            return -errno.EINVAL
        return 0

    def _cstr(self, addr: int) -> str:
        return self.m.read(addr, NAME_MAX + 1).split(b"\0", 1)[0].decode("utf-8", "replace")

    def _path_of(self, kobj: int) -> str:
        """/sys followed by the names from the topmost parent down."""
        names = []
        while kobj and len(names) < DEPTH_MAX:
            names.append(self._cstr(self.m.read_u64(kobj + L.KOBJ_NAME)))
            kobj = self.m.read_u64(kobj + L.KOBJ_PARENT)
        if kobj or not all(names) or any("/" in n for n in names):
            raise OSError(errno.EINVAL, "bad kobject name or nesting")
        return "/sys/" + "/".join(reversed(names))

    # ---- the files -------------------------------------------------------------
    def _register_file(self, kobj: int, attr: int, path: str) -> None:
        """The attribute's file, with the mode its struct attribute gives."""
        mode = struct.unpack("<H", self.m.read(attr + L.ATTR_MODE, 2))[0] & 0o777
        key = (kobj, attr)
        self.files[key] = path

        def show() -> str:
            return self._page_call(key, "kobj_attr_show", b"").decode("utf-8", "replace")

        def store(text: str) -> None:
            self._page_call(key, "kobj_attr_store", text.encode()[:PAGE - 1])

        self.m.fs.register_text(path, show if mode & 0o444 else None,
                                store if mode & 0o222 else None, mode=mode)

    def _page_call(self, key: tuple[int, int], func: str, data: bytes) -> bytes:
        """show(kobj, attr, page) or store(kobj, attr, page, len) run in the guest; its
        negative return is the errno the read or write fails with."""
        if self.files.get(key) is None:
            raise fs_error(errno.ENODEV)
        page = self.m.modules.area.alloc(PAGE, align=PAGE)
        try:
            self.m.write(page, data + b"\0")
            args = (*key, page) + ((len(data),) if func == "kobj_attr_store" else ())
            ret = self.m.call(func, *args)
            ret = ret - (1 << 64) if ret >= 1 << 63 else ret
            if ret < 0:
                raise fs_error(-ret)
            return self.m.read(page, min(ret, PAGE)) if func == "kobj_attr_show" else b""
        finally:
            self.m.modules.area.free(page)

    # ---- snapshots -------------------------------------------------------------
    def snapshot_state(self) -> tuple:
        return dict(self.dirs), dict(self.files)

    def restore_state(self, st: tuple) -> None:
        """The files of the snapshot's kobjects, re-registered with their modes read again
        from the restored guest memory."""
        for path in sorted(self.dirs.values(), key=len, reverse=True):
            if self.m.fs.exists(path):
                self.m.fs.unregister(path)
        dirs, files = st
        self.dirs, self.files = {}, {}
        for kobj, path in sorted(dirs.items(), key=lambda kv: len(kv[1])):
            self.m.fs.register_dir(path)
            self.dirs[kobj] = path
        for (kobj, attr), path in files.items():
            self._register_file(kobj, attr, path)
