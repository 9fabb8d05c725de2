"""The guest's pseudo-file tree, ``m.fs``: procfs, sysfs and tracefs files as the kernel serves
them, one tree for every view (the Python API here, FUSE in ``ftemu mount``).

Each layer registers its own files when it attaches (the machine its /proc and cpu files,
ftrace its tracefs files). A file is a node that opens handles, as a kernel
``file_operations``: ``open(flags)`` gives a handle whose ``read(size, offset)``,
``write(data, offset)``, ``flush()`` and ``release()`` are what the syscalls reach. Errors are
``OSError`` with the kernel's errno. Nothing here locks: the one caller that runs requests
concurrently (the FUSE view) serialises them with its machine lock.
"""
from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable
from typing import Protocol

O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR = os.O_ACCMODE, os.O_RDONLY, os.O_WRONLY, os.O_RDWR
O_TRUNC, O_APPEND = os.O_TRUNC, os.O_APPEND
READ_CHUNK = 1 << 16

# wait_event(cond, timeout_s) -> bool: block until cond() holds or the timeout passes, while
# the guest runs; the owner of the guest's time (Machine, or the mount's run loop) provides it.
Waiter = Callable[[Callable[[], bool], float], bool]


def fs_error(code: int, path: str = "", detail: str = "") -> OSError:
    """An OSError carrying the kernel's errno, with the path and an optional reason."""
    text = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, text, path) if path else OSError(code, text)


def wants_write(flags: int) -> bool:
    return flags & O_ACCMODE in (O_WRONLY, O_RDWR)


def wants_read(flags: int) -> bool:
    return flags & O_ACCMODE in (O_RDONLY, O_RDWR)


class Handle:
    """One open file. The defaults are those of a file_operations without the operation:
    EINVAL for read and write, nothing for flush and release."""

    def read(self, size: int, offset: int) -> bytes:
        raise fs_error(errno.EINVAL)

    def write(self, data: bytes, offset: int) -> int:
        raise fs_error(errno.EINVAL)

    def flush(self) -> None:
        """close(2) of one descriptor; the FUSE view commits release-time work here too,
        since FUSE's RELEASE arrives after close(2) has returned to the caller."""

    def release(self) -> None:
        """The last close: where the kernel applies what the writes prepared."""


class Node(Protocol):
    """What ``register`` accepts: a ``mode`` (permission bits) and ``open(flags)``."""

    mode: int

    def open(self, flags: int) -> Handle: ...


class TextHandle(Handle):
    """A seq_file: the text is built once, at the first read, and served in slices, so every
    read size sees the same bytes. Each write(2) goes to the write function whole."""

    def __init__(self, node: "TextFile") -> None:
        self.node = node
        self._data: bytes | None = None

    def read(self, size: int, offset: int) -> bytes:
        if self._data is None:
            self._data = self.node.read_fn().encode()
        return self._data[offset:offset + size]

    def write(self, data: bytes, offset: int) -> int:
        if self.node.write_fn is not None:      # else a truncate-only file: data is ignored
            self.node.write_fn(data.decode("utf-8", "replace"))
        return len(data)


class TextFile:
    """A text file from functions: ``read() -> str`` at open time, ``write(text)`` per write(2),
    ``truncate()`` when opened for writing with O_TRUNC (``echo > trace`` clears)."""

    def __init__(self, read: Callable[[], str] | None, write: Callable[[str], None] | None,
                 mode: int, truncate: Callable[[], None] | None = None) -> None:
        self.read_fn, self.write_fn, self.truncate_fn = read, write, truncate
        self.mode = mode

    def open(self, flags: int) -> Handle:
        if wants_write(flags) and (self.write_fn is None and self.truncate_fn is None):
            raise fs_error(errno.EACCES)
        if wants_read(flags) and self.read_fn is None:
            raise fs_error(errno.EACCES)
        if wants_write(flags) and flags & O_TRUNC and self.truncate_fn is not None:
            self.truncate_fn()
        return TextHandle(self)


class Directory:
    """A directory; ``mkdir``/``rmdir`` callbacks make it one where users create entries
    (tracefs ``instances/``). mkdir(name) registers the new subtree; rmdir(name) tears it down
    (raising OSError, e.g. EBUSY, to refuse)."""

    def __init__(self, mode: int = 0o755, mkdir: Callable[[str], None] | None = None,
                 rmdir: Callable[[str], None] | None = None) -> None:
        self.mode = mode
        self.children: dict[str, Node | Directory] = {}
        self.mkdir_fn, self.rmdir_fn = mkdir, rmdir
        self.removed = False          # taken out of the tree (rmdir, unregister)


class _Under:
    """A handle on a file below directories, dead once one of them is removed: ENODEV, as
    kernfs answers on a removed node's open file and tracing_check_open_get_tr for a
    trace_array that is gone. (The kernel refuses an instance's rmdir while its files are
    open, tr->ref; through FUSE a RELEASE comes after close(2) has returned, so refusing
    would fail scripts that close and then rmdir.) Never a read or write into what the
    removal freed. flush and release still go through: a write may remove its own directory
    (a livepatch's ``enabled``), and close must not fail for it."""

    def __init__(self, handle: Handle, dirs: list[Directory], path: str) -> None:
        self._handle, self._dirs, self._path = handle, dirs, path

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def _alive(self) -> Handle:
        if any(d.removed for d in self._dirs):
            raise fs_error(errno.ENODEV, self._path, "its directory was removed")
        return self._handle

    def read(self, size: int, offset: int) -> bytes:
        return self._alive().read(size, offset)

    def write(self, data: bytes, offset: int) -> int:
        return self._alive().write(data, offset)



def _parts(path: str) -> list[str]:
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    return [p for p in posixpath.normpath("/" + path).split("/") if p]


class _Tree:
    """What every view of one tree shares: the root directory and the guest's waiter."""

    def __init__(self, waiter: Waiter | None) -> None:
        self.root = Directory()
        self.waiter = waiter


class PseudoFS:
    """The tree seen from ``root`` (``m.fs`` from ``/``; ``m.tracefs = m.fs.view(TRACEFS)``):
    paths are taken inside the root, with or without a leading ``/``.

    User view: read/write/listdir/mkdir/rmdir/exists/stat. Registrant view:
    register/register_text/register_dir/unregister. Serving requests (FUSE): open, lookup.
    ``wait_event`` blocks a handle (``trace_pipe``) while the guest runs."""

    def __init__(self, waiter: Waiter | None = None, *, root: str = "/",
                 _tree: _Tree | None = None) -> None:
        self._tree = _tree or _Tree(waiter)
        self.root = "/" + "/".join(_parts(root))

    @property
    def waiter(self) -> Waiter | None:
        return self._tree.waiter

    @waiter.setter
    def waiter(self, fn: Waiter | None) -> None:
        self._tree.waiter = fn

    def path(self, path: str) -> str:
        """The absolute path of ``path`` taken inside this view's root."""
        return "/" + "/".join(_parts(self.root + "/" + path))

    def view(self, root: str) -> "PseudoFS":
        """The same tree seen from ``root`` inside this view."""
        return PseudoFS(root=self.path(root), _tree=self._tree)

    def _walk(self, path: str) -> list[str]:
        return _parts(self.root + "/" + path)

    # ---- lookup --------------------------------------------------------------
    def lookup(self, path: str) -> Node | Directory:
        """The node at ``path``; ENOENT (or ENOTDIR through a file)."""
        node: Node | Directory = self._tree.root
        for name in self._walk(path):
            if not isinstance(node, Directory):
                raise fs_error(errno.ENOTDIR, path)
            try:
                node = node.children[name]
            except KeyError:
                raise fs_error(errno.ENOENT, path) from None
        return node

    def _dir(self, path: str) -> Directory:
        node = self.lookup(path)
        if not isinstance(node, Directory):
            raise fs_error(errno.ENOTDIR, path)
        return node

    def _parent(self, path: str, create: bool = False) -> tuple[Directory, str]:
        parts = self._walk(path)
        if not parts:
            raise fs_error(errno.EEXIST, path, "the root")
        d = self._tree.root
        for name in parts[:-1]:
            child = d.children.get(name)
            if child is None:
                if not create:
                    raise fs_error(errno.ENOENT, path)
                child = d.children[name] = Directory()
            if not isinstance(child, Directory):
                raise fs_error(errno.ENOTDIR, path)
            d = child
        return d, parts[-1]

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except OSError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        return isinstance(self.lookup(path), Directory)

    # ---- registrant view -----------------------------------------------------
    def register(self, path: str, node: Node | Directory) -> None:
        """Put ``node`` at ``path`` (missing parent directories are made); EEXIST if taken."""
        if not (isinstance(node, Directory) or hasattr(node, "open")):
            raise TypeError(f"{path}: a node needs open(flags), got {type(node).__name__}")
        parent, name = self._parent(path, create=True)
        if name in parent.children:
            raise fs_error(errno.EEXIST, path)
        parent.children[name] = node

    def register_text(self, path: str, read: Callable[[], str] | None = None,
                      write: Callable[[str], None] | None = None, mode: int | None = None,
                      truncate: Callable[[], None] | None = None) -> TextFile:
        """A seq_file-style text file (see TextFile); mode defaults from what it supports."""
        if mode is None:
            mode = (0o444 if read else 0) | (0o200 if write or truncate else 0)
        node = TextFile(read, write, mode, truncate)
        self.register(path, node)
        return node

    def register_dir(self, path: str, mkdir: Callable[[str], None] | None = None,
                     rmdir: Callable[[str], None] | None = None, mode: int = 0o755) -> Directory:
        """A directory, optionally one where users mkdir/rmdir (see Directory)."""
        d = Directory(mode, mkdir, rmdir)
        self.register(path, d)
        return d

    def unregister(self, path: str) -> None:
        """Remove the file or the whole directory at ``path``; handles open below a removed
        directory answer ENODEV from then on."""
        parent, name = self._parent(path)
        if name not in parent.children:
            raise fs_error(errno.ENOENT, path)
        node = parent.children.pop(name)
        if isinstance(node, Directory):
            node.removed = True

    # ---- serving requests ------------------------------------------------------
    def open(self, path: str, flags: int = O_RDONLY) -> Handle:
        """open(2): EISDIR for a directory, EACCES where the file lacks the access."""
        node = self.lookup(path)
        shown = self.path(path)
        if isinstance(node, Directory):
            raise fs_error(errno.EISDIR, shown)
        if wants_write(flags) and not node.mode & 0o222:
            raise fs_error(errno.EACCES, shown)
        if wants_read(flags) and not node.mode & 0o444:
            raise fs_error(errno.EACCES, shown)
        handle = _on_path(shown, node.open, flags)
        return _Under(handle, self._dirs_above(path), shown)

    def _dirs_above(self, path: str) -> list[Directory]:
        d, out = self._tree.root, []
        for name in self._walk(path)[:-1]:
            d = d.children[name]
            out.append(d)
        return out

    def wait_event(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``cond()`` while the guest runs; False on timeout (or with no waiter)."""
        if cond():
            return True
        waiter = self._tree.waiter
        return False if waiter is None else waiter(cond, timeout_s)

    # ---- user view -------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        """open, read to the end, close: what ``cat`` gets."""
        h = self.open(path, O_RDONLY)
        chunks = []
        try:
            off = 0
            while chunk := h.read(READ_CHUNK, off):
                chunks.append(chunk)
                off += len(chunk)
            h.flush()
        finally:
            h.release()
        return b"".join(chunks)

    def read(self, path: str) -> str:
        """The file's text, as ``cat`` prints it."""
        return self.read_bytes(path).decode("utf-8", "replace")

    def write(self, path: str, text: str, append: bool = False) -> None:
        """``echo -n text > path`` (or ``>>`` with append): O_TRUNC or O_APPEND, write(2)
        until all is taken, close. A failing write still closes (what was accepted before
        it is applied at release, as in the kernel), then raises; so does a failure that
        only close finds (an unterminated last token of a filter file)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        h = self.open(path, O_WRONLY | (O_APPEND if append else O_TRUNC))
        path = self.path(path)
        data = text.encode()
        try:
            off = 0
            while off < len(data):
                n = _on_path(path, h.write, data[off:], off)
                if n <= 0:
                    raise fs_error(errno.EIO, path, "write took nothing")
                off += n
            _on_path(path, h.flush)
        finally:
            h.release()

    def listdir(self, path: str = "") -> list[str]:
        """Entry names in registration order."""
        return list(self._dir(path).children)

    def mkdir(self, path: str) -> None:
        """mkdir(2): EEXIST if present, EPERM where the directory takes no new entries."""
        parent, name = self._parent(path)
        if name in parent.children:
            raise fs_error(errno.EEXIST, path)
        if parent.mkdir_fn is None:
            raise fs_error(errno.EPERM, path)
        _on_path(path, parent.mkdir_fn, name)
        if name not in parent.children:
            parent.children[name] = Directory()

    def rmdir(self, path: str) -> None:
        """rmdir(2): ENOENT, ENOTDIR, EPERM where entries cannot be removed, or the callback's
        own refusal (EBUSY while in use)."""
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            raise fs_error(errno.ENOENT, path)
        if not isinstance(node, Directory):
            raise fs_error(errno.ENOTDIR, path)
        if parent.rmdir_fn is None:
            raise fs_error(errno.EPERM, path)
        _on_path(path, parent.rmdir_fn, name)
        node.removed = True
        parent.children.pop(name, None)

    def stat(self, path: str) -> tuple[bool, int]:
        """(is a directory, permission bits)."""
        node = self.lookup(path)
        return isinstance(node, Directory), node.mode


def _on_path(path: str, fn: Callable, *args):
    """fn(*args), its OSError raised again naming ``path``."""
    try:
        return fn(*args)
    except OSError as e:
        raise fs_error(e.errno or errno.EIO, path, _detail(e)) from None


def _detail(e: OSError) -> str:
    """The reason part of an OSError's message, without the strerror we add again."""
    text = e.strerror or ""
    base = os.strerror(e.errno) if e.errno else ""
    if text.startswith(base + " (") and text.endswith(")"):
        return text[len(base) + 2:-1]
    return "" if text == base else text
