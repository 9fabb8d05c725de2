"""The files of a trace array a tutorial meets after ``trace``: ``trace_marker`` (a write per
entry, long ones continued in the next entry as the kernel's short write makes the writer
do), ``trace_marker_raw`` (binary entries) and ``options/pause-on-trace`` (an open ``trace``
stops recording until it is closed)."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from emu import Machine
from emu.pseudofs import O_RDONLY


def tracing_fib() -> Machine:
    m = Machine(cpus=1)
    m.boot()
    m.tracefs.write("set_ftrace_filter", "bench_fib")
    m.tracefs.write("current_tracer", "function")
    return m


def events(m: Machine, path: str = "trace") -> list[str]:
    return [line.split(": ", 1)[1] for line in m.tracefs.read(path).splitlines()
            if not line.startswith("#")]


def test_a_marker_longer_than_one_event_continues_in_the_next():
    """4078 bytes (trace_marker.tc's size): 4054 fit one event (a page's 4080 bytes less the
    two header words, the print entry's 16 bytes and the newline and NUL), the rest follows."""
    m = tracing_fib()
    text = "X" * 4078
    m.tracefs.write("trace_marker", text)
    assert events(m) == ["tracing_mark_write: " + "X" * 4054, "tracing_mark_write: " + "X" * 24]
    h = m.tracefs.open("trace_marker", os.O_WRONLY)
    try:
        assert h.write(b"short\n", 0) == 6
        assert h.write(text.encode(), 0) == 4054
    finally:
        h.release()
    assert events(m)[2:] == ["tracing_mark_write: short", "tracing_mark_write: " + "X" * 4054]


def test_pause_on_trace_stops_recording_while_trace_is_open():
    m = tracing_fib()
    tfs = m.tracefs
    m.call("bench_fib", 1)
    tfs.write("options/pause-on-trace", "1")
    h = tfs.open("trace", O_RDONLY)
    try:
        m.call("bench_fib", 3)                      # not recorded: a reader has it open
        assert tfs.read("tracing_on") == "1\n"      # the user's switch is untouched
        tfs.write("snapshot", "1")                  # update_max_tr does nothing meanwhile
        assert "* Snapshot is allocated *" in tfs.read("snapshot")
        assert h.read(1 << 16, 0).decode().count("bench_fib <-") == 1
    finally:
        h.release()
    m.call("bench_fib", 1)
    assert len(events(m)) == 2
    tfs.write("options/pause-on-trace", "0")
    h = tfs.open("trace", O_RDONLY)
    m.call("bench_fib", 1)
    h.release()
    assert len(events(m)) == 3


def test_an_instance_with_a_buffer_file_open_cannot_be_removed():
    """As trace_array_get's reference: rmdir is EBUSY while its trace (or snapshot,
    trace_pipe, per_cpu files) is open, and works once it is closed."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.mkdir("instances/lab")
    for path in ("trace", "snapshot", "trace_pipe", "per_cpu/cpu0/stats"):
        h = tfs.open(f"instances/lab/{path}", O_RDONLY)
        try:
            tfs.rmdir("instances/lab")
        except OSError as e:
            assert e.errno == errno.EBUSY, path
        else:
            raise AssertionError(f"rmdir succeeded with {path} open")
        finally:
            h.release()
    assert tfs.read("instances/lab/current_tracer") == "nop\n"
    tfs.rmdir("instances/lab")
    assert not tfs.exists("instances/lab")


def test_a_file_opened_before_rmdir_and_written_after_changes_nothing():
    """An event's enable file kept open across its instance's rmdir (instance-event.tc's
    race): the write is refused (ENODEV) instead of publishing the removed array."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.mkdir("instances/lab")
    h = tfs.open("instances/lab/events/sched/sched_switch/enable", os.O_WRONLY)
    tfs.rmdir("instances/lab")
    tfs.mkdir("instances/lab")
    try:
        h.write(b"1", 0)
    except OSError as e:
        assert e.errno == errno.ENODEV
    else:
        raise AssertionError("the write reached a removed instance")
    finally:
        h.release()
    m.run(ms=5)                                      # sched_switch fires: no guest panic
    assert tfs.read("instances/lab/events/sched/sched_switch/enable") == "0\n"


def test_trace_marker_raw_records_an_id_and_binary_data():
    """A write is one raw_data entry: the id in hex, then the entry's bytes after it. The
    entry is as long as the kernel makes it (struct raw_data_entry + the whole write, at
    least room for ``<faulted>``, 4-byte aligned), so zeros follow short data. Fewer than
    4 bytes, or more than a page holds, is EINVAL; with tracing off EBADF."""
    m = tracing_fib()
    tfs = m.tracefs
    h = tfs.open("trace_marker_raw", os.O_WRONLY)
    try:
        assert h.write(struct.pack("<I", 0x1234) + b"\x01\x02", 0) == 6
        assert h.write(struct.pack("<I", 7) + bytes(range(1, 21)), 0) == 24
        for bad in (b"", b"abc", bytes(4061)):
            with pytest.raises(OSError) as e:
                h.write(bad, 0)
            assert e.value.errno == errno.EINVAL
        assert h.write(bytes(4060), 0) == 4060           # 12 + 4060 = the largest event
        tfs.write("tracing_on", "0")
        with pytest.raises(OSError) as e:
            h.write(b"\x01\x00\x00\x00", 0)
        assert e.value.errno == errno.EBADF
    finally:
        h.release()
    lines = events(m)
    assert lines[:2] == ["# 1234 buf: 01 02" + " 00" * 14,
                         "# 7 buf: " + " ".join(f"{b:02x}" for b in range(1, 21)) + " 00 00 00 00"]
    assert lines[2] == "# 0 buf:" + " 00" * 4060 and len(lines) == 3
    assert "# 1234 buf: 01 02" in tfs.read("trace").split("\n")[-4]     # after the context
    assert tfs.read("events/ftrace/raw_data/format").startswith("name: raw_data\nID: 18\n")


def test_trace_marker_raw_in_an_instance_and_with_markers_off():
    m = tracing_fib()
    tfs = m.tracefs
    tfs.mkdir("instances/lab")
    h = tfs.open("instances/lab/trace_marker_raw", os.O_WRONLY)
    try:
        assert h.write(b"\xff\xff\xff\xff" + b"hi", 0) == 6
        tfs.write("instances/lab/options/markers", "0")
        with pytest.raises(OSError) as e:
            h.write(b"\xff\xff\xff\xff", 0)
        assert e.value.errno == errno.EINVAL
    finally:
        h.release()
    assert events(m, "instances/lab/trace") == ["# ffffffff buf: 68 69" + " 00" * 14]
    assert events(m) == []


def test_closing_free_buffer_shrinks_the_buffer_and_with_disable_on_free_stops_tracing():
    """Whatever is written, the close frees: the buffer goes to its minimum (two pages per
    CPU: 7 KiB). Tracing goes on unless options/disable_on_free is set. free_buffer is
    write-only, per trace array, and an open one keeps its instance from being removed."""
    m = tracing_fib()
    tfs = m.tracefs
    assert tfs.read("buffer_size_kb") == "1410\n"
    tfs.write("free_buffer", "anything")
    assert (tfs.read("buffer_size_kb"), tfs.read("tracing_on")) == ("7\n", "1\n")
    m.call("bench_fib", 1)
    assert len(events(m)) == 1
    tfs.write("buffer_size_kb", "100")
    tfs.mkdir("instances/lab")
    h = tfs.open("instances/lab/free_buffer", os.O_WRONLY)
    with pytest.raises(OSError) as e:
        tfs.rmdir("instances/lab")
    assert e.value.errno == errno.EBUSY
    assert tfs.read("instances/lab/buffer_size_kb") == "1410\n"      # not before the close
    h.release()
    assert tfs.read("instances/lab/buffer_size_kb") == "7\n"
    assert tfs.read("buffer_size_kb") == "103\n"                   # 26 pages of 4080 bytes
    tfs.write("options/disable_on_free", "1")
    h = tfs.open("free_buffer", os.O_WRONLY | os.O_TRUNC)
    h.release()                                                      # `: > free_buffer`
    assert (tfs.read("buffer_size_kb"), tfs.read("tracing_on")) == ("7\n", "0\n")
    with pytest.raises(OSError) as e:
        tfs.open("free_buffer", os.O_RDONLY)
    assert e.value.errno == errno.EACCES


def test_error_log_is_there_per_array_and_clears_on_truncate():
    """Tools read error_log after a failed command (trace-cmd does): it exists at the top
    level and in each instance, reads empty (nothing ftemu has logs to it in the kernel),
    and takes writes and `echo > error_log` as the kernel's does."""
    m = Machine(cpus=1)
    m.boot()
    tfs = m.tracefs
    tfs.mkdir("instances/lab")
    for root in ("", "instances/lab/"):
        assert "error_log" in tfs.listdir(root or ".")
        assert tfs.read(root + "error_log") == ""
        tfs.write(root + "error_log", "\n")
        h = tfs.open(root + "error_log", os.O_WRONLY)
        assert h.write(b"ignored", 0) == 7
        h.release()
        assert tfs.read(root + "error_log") == ""
