"""The guest's pseudo-file tree from Python: m.fs and m.tracefs, as a user and as a layer
registering its files would use them."""
from __future__ import annotations

import errno
import os

import pytest

from emu import Machine
from emu.pseudofs import Handle, PseudoFS


@pytest.fixture(scope="module")
def m():
    return Machine(cpus=2, cmdline="console=ttyS0 quiet")


def test_paths_are_absolute_and_tracefs_is_the_same_tree_from_sys_kernel_tracing(m):
    assert m.fs.read("/sys/kernel/tracing/enabled_functions") == m.tracefs.read("enabled_functions")
    assert "available_filter_functions" in m.fs.listdir("/sys/kernel/tracing")
    assert m.tracefs.listdir() == m.fs.listdir("/sys/kernel/tracing")
    assert m.tracefs.path("trace") == "/sys/kernel/tracing/trace"


def test_proc_cmdline_and_kallsyms(m):
    assert m.fs.read("/proc/cmdline") == "console=ttyS0 quiet\n"
    kallsyms = m.fs.read("/proc/kallsyms").splitlines()
    sched = m.symbol_address("schedule")
    assert f"{sched:016x} T schedule" in kallsyms
    addrs = [int(line.split()[0], 16) for line in kallsyms]
    assert addrs == sorted(addrs) and kallsyms[0].endswith(" T _start")
    kinds = {line.split()[1] for line in kallsyms}
    assert kinds <= set("TtDdBbRrWV") and {"T", "t", "D", "B"} <= kinds


def test_ftrace_listings_are_the_ftrace_views(m):
    ft = m.ftrace
    assert m.tracefs.read("available_filter_functions") == ft.available_filter_functions
    assert m.tracefs.read("enabled_functions") == ft.enabled_functions == ""
    assert m.tracefs.read("touched_functions") == ft.touched_functions
    first = m.tracefs.read("available_filter_functions_addrs").splitlines()[0]
    assert first == f"{ft.records[0].ip:x} {ft.available_filter_functions.splitlines()[0]}"


def test_ftrace_enabled_sysctl(m):
    path = "/proc/sys/kernel/ftrace_enabled"
    assert m.fs.read(path) == "1\n"
    m.fs.write(path, "0\n")
    assert m.ftrace.ftrace_enabled == 0 and m.fs.read(path) == "0\n"
    for bad in ("2", "on", "\n", "1x"):
        with pytest.raises(OSError) as e:
            m.fs.write(path, bad)
        assert e.value.errno == errno.EINVAL
    assert m.fs.read(path) == "0\n"
    m.fs.write(path, " 1 \n")
    assert m.ftrace.ftrace_enabled == 1


def test_errors_carry_the_kernels_errno(m):
    cases = [
        (lambda: m.fs.read("/proc/nonexistent"), errno.ENOENT),
        (lambda: m.fs.read("/proc/cmdline/x"), errno.ENOTDIR),
        (lambda: m.fs.read("/proc"), errno.EISDIR),
        (lambda: m.fs.write("/proc/kallsyms", "x"), errno.EACCES),
        (lambda: m.fs.listdir("/proc/cmdline"), errno.ENOTDIR),
        (lambda: m.fs.mkdir("/proc/new"), errno.EPERM),
        (lambda: m.fs.mkdir("/proc"), errno.EEXIST),
        (lambda: m.fs.rmdir("/sys/kernel"), errno.EPERM),
        (lambda: m.fs.rmdir("/proc/nope"), errno.ENOENT),
    ]
    for action, code in cases:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == code, (e.value, code)
    with pytest.raises(TypeError):
        m.fs.write("/proc/sys/kernel/ftrace_enabled", 1)


def test_cpu_online_files_hotplug_and_return_when_done(booted_snapshots):
    m = booted_snapshots(2)
    cpu = "/sys/devices/system/cpu"
    assert m.fs.listdir(f"{cpu}/cpu0") == []           # the boot CPU cannot go offline
    assert m.fs.read(f"{cpu}/online") == "0-1\n" and m.fs.read(f"{cpu}/offline") == "\n"
    m.fs.write(f"{cpu}/cpu1/online", "0\n")
    assert m.online_cpus() == [0] and m.fs.read(f"{cpu}/cpu1/online") == "0\n"
    assert m.fs.read(f"{cpu}/online") == "0\n" and m.fs.read(f"{cpu}/offline") == "1\n"
    m.fs.write(f"{cpu}/cpu1/online", "0")              # already offline: nothing to do
    with pytest.raises(OSError) as e:
        m.fs.write(f"{cpu}/cpu1/online", "maybe")
    assert e.value.errno == errno.EINVAL
    m.fs.write(f"{cpu}/cpu1/online", "y")               # kstrtobool, as sysfs takes it
    assert m.online_cpus() == [0, 1] and m.fs.read(f"{cpu}/possible") == "0-1\n"


class CountingFile:
    """A registrant's own node: counts opens, serves its bytes, records writes."""

    mode = 0o644

    def __init__(self) -> None:
        self.opens, self.released, self.written = 0, 0, []

    def open(self, flags: int) -> Handle:
        self.opens += 1
        node = self

        class H(Handle):
            def read(self, size: int, offset: int) -> bytes:
                return b"0123456789"[offset:offset + size]

            def write(self, data: bytes, offset: int) -> int:
                node.written.append((bytes(data[:3]), offset, flags & os.O_TRUNC != 0))
                return min(3, len(data))           # takes 3 bytes per write(2)

            def release(self) -> None:
                node.released += 1
        return H()


def test_registered_nodes_see_open_write_loops_and_release():
    fs = PseudoFS()
    node = CountingFile()
    fs.register("/sys/kernel/tracing/custom", node)
    assert fs.read("/sys/kernel/tracing/custom") == "0123456789"
    fs.write("/sys/kernel/tracing/custom", "abcdefg")
    assert node.written == [(b"abc", 0, True), (b"def", 3, True), (b"g", 6, True)]
    fs.write("/sys/kernel/tracing/custom", "xy", append=True)
    assert node.written[-1] == (b"xy", 0, False)
    assert (node.opens, node.released) == (3, 3)
    with pytest.raises(OSError) as e:
        fs.register("/sys/kernel/tracing/custom", CountingFile())
    assert e.value.errno == errno.EEXIST
    fs.unregister("/sys/kernel/tracing/custom")
    assert not fs.exists("/sys/kernel/tracing/custom")


def test_text_files_are_built_once_per_open_whatever_the_read_size():
    fs = PseudoFS()
    calls = []

    def show() -> str:
        calls.append(1)
        return f"generation {len(calls)}\n"
    fs.register_text("/f", show)
    h = fs.open("/f")
    assert b"".join(h.read(1, i) for i in range(20)) == b"generation 1\n"
    assert h.read(100, 0) == b"generation 1\n" and len(calls) == 1
    assert fs.read("/f") == "generation 2\n"


def test_text_write_truncate_and_failing_writes():
    fs = PseudoFS()
    log: list[str] = []

    def write(text: str) -> None:
        if text.strip() == "bogus":
            raise OSError(errno.EINVAL, "no such thing")
        log.append(text)
    fs.register_text("/t", lambda: "".join(log), write, truncate=lambda: log.append("<trunc>"))
    fs.write("/t", "a\n")
    fs.write("/t", "b\n", append=True)
    assert fs.read("/t") == "<trunc>a\nb\n"
    with pytest.raises(OSError) as e:
        fs.write("/t", "bogus\n", append=True)
    assert e.value.errno == errno.EINVAL and e.value.filename == "/t"
    assert "no such thing" in str(e.value)
    assert fs.stat("/t") == (False, 0o644) and fs.stat("/") == (True, 0o755)


def test_mkdir_and_rmdir_callbacks_make_and_remove_entries():
    fs = PseudoFS()
    made: list[str] = []

    def mkdir(name: str) -> None:
        fs.register_text(f"/inst/{name}/trace", lambda: f"{name}\n")
        made.append(name)

    def rmdir(name: str) -> None:
        if name == "busy":
            raise OSError(errno.EBUSY, "in use")
        fs.unregister(f"/inst/{name}")
    fs.register_dir("/inst", mkdir, rmdir)
    fs.mkdir("/inst/foo")
    fs.mkdir("/inst/busy")
    assert fs.listdir("/inst") == ["foo", "busy"] and fs.read("/inst/foo/trace") == "foo\n"
    with pytest.raises(OSError) as e:
        fs.mkdir("/inst/foo")
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        fs.rmdir("/inst/busy")
    assert e.value.errno == errno.EBUSY and fs.exists("/inst/busy")
    fs.rmdir("/inst/foo")
    assert fs.listdir("/inst") == ["busy"] and made == ["foo", "busy"]


def test_wait_event_runs_the_guest_until_the_condition(booted_snapshots):
    m = booted_snapshots(1)
    start = m.now
    assert m.fs.wait_event(lambda: m.now >= start + 2_000_000, 1.0)
    assert m.now >= start + 2_000_000
    assert not m.fs.wait_event(lambda: False, 0.001)
