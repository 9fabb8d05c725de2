"""The snapshot buffer, as ftrace.rst's "Snapshot" section uses it: ``echo 1 > snapshot`` keeps
what the live buffer held and goes on tracing into an empty one, ``echo 2`` clears, ``echo 0``
frees, per CPU files swap one CPU (and ``snapshot_raw`` reads its pages), and the
``snapshot`` filter command takes one when a function runs. Also ``buffer_size_kb`` changes, which keep the contents as the kernel does."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from emu import Machine
from ftrace.ring_buffer_format import BUF_PAGE_SIZE, decode_page
from ftrace.trace_output import parse_entry

FN = "trace_selftest_dynamic_test_func"
FREED_HELP = """# tracer: function
#
#
# * Snapshot is freed *
#
# Snapshot commands:
# echo 0 > snapshot : Clears and frees snapshot buffer
# echo 1 > snapshot : Allocates snapshot buffer, if not already allocated.
#                      Takes a snapshot of the main buffer.
# echo 2 > snapshot : Clears snapshot buffer (but does not allocate or free)
#                      (Doesn't have to be '2' works with any number that
#                       is not a '0' or '1')
"""
PERCPU_ALLOCATED_HELP = """# tracer: function
#
#
# * Snapshot is allocated *
#
# Snapshot commands:
# echo 0 > snapshot : Invalid for per_cpu snapshot file.
# echo 1 > snapshot : Allocates snapshot buffer, if not already allocated.
#                      Takes a snapshot of the main buffer for this cpu.
# echo 2 > snapshot : Clears this cpu's snapshot buffer (but does not allocate)
#                      (Doesn't have to be '2' works with any number that
#                       is not a '0' or '1')
"""


def tracing_fib(cpus: int = 1, root: str = "") -> Machine:
    m = Machine(cpus=cpus)
    m.boot()
    if root:
        m.tracefs.mkdir(root.rstrip("/"))
    m.tracefs.write(root + "set_ftrace_filter", f"bench_fib {FN}")
    m.tracefs.write(root + "current_tracer", "function")
    return m


def body(text: str) -> list[str]:
    """The events of a trace as (cpu, function <-parent)."""
    return [line.split("] ")[0][-3:] + " " + line.split(": ", 1)[1]
            for line in text.splitlines() if not line.startswith("#")]


def test_echo_1_keeps_the_trace_and_tracing_goes_on_in_an_empty_buffer():
    m = tracing_fib()
    tfs = m.tracefs
    assert tfs.read("snapshot") == FREED_HELP
    m.call("bench_fib", 2)
    before = tfs.read("trace")
    tfs.write("snapshot", "1")
    assert tfs.read("snapshot") == before          # the same header, counts and lines
    assert body(tfs.read("trace")) == []
    m.call(FN)
    assert body(tfs.read("trace")) == [f"000 {FN} <-0xffffffffa0000010"]
    assert tfs.read("snapshot") == before
    tfs.write("snapshot", "1")                    # swapped back, nothing cleared
    assert body(tfs.read("snapshot")) == [f"000 {FN} <-0xffffffffa0000010"]
    assert body(tfs.read("trace")) == body(before)   # as the kernel: a swap, not a copy
    tfs.write("snapshot", "2")
    assert tfs.read("snapshot") == FREED_HELP.replace("freed", "allocated")
    tfs.write("snapshot", "0")
    assert tfs.read("snapshot") == FREED_HELP
    assert body(tfs.read("trace")) == body(before)


def test_bad_snapshot_writes_change_nothing():
    m = tracing_fib()
    m.call("bench_fib", 1)
    for path, text in (("snapshot", "one"), ("snapshot", "0x1"), ("snapshot", "-1"),
                       ("per_cpu/cpu0/snapshot", "0")):
        with pytest.raises(OSError) as e:
            m.tracefs.write(path, text)
        assert e.value.errno == errno.EINVAL, (path, text)
    assert m.tracefs.read("snapshot") == FREED_HELP
    assert len(body(m.tracefs.read("trace"))) == 1


def test_a_per_cpu_snapshot_swaps_that_cpu_only():
    m = tracing_fib(cpus=2)
    tfs = m.tracefs
    m.call("bench_fib", 1, cpu=0)
    m.call(FN, cpu=1)
    tfs.write("per_cpu/cpu1/snapshot", "1")
    assert body(tfs.read("snapshot")) == [f"001 {FN} <-0xffffffffa0000010"]
    assert body(tfs.read("per_cpu/cpu1/snapshot")) == [f"001 {FN} <-0xffffffffa0000010"]
    assert tfs.read("per_cpu/cpu0/snapshot") == PERCPU_ALLOCATED_HELP
    assert body(tfs.read("trace")) == ["000 bench_fib <-0xffffffffa0000010"]
    m.call("bench_fib", 1, cpu=1)                  # cpu1 records into its fresh buffer
    assert body(tfs.read("per_cpu/cpu1/trace")) == ["001 bench_fib <-0xffffffffa0000010"]
    tfs.write("per_cpu/cpu1/snapshot", "2")
    assert tfs.read("per_cpu/cpu1/snapshot") == PERCPU_ALLOCATED_HELP


def test_the_snapshot_command_takes_one_when_the_function_runs():
    m = tracing_fib()
    tfs = m.tracefs
    tfs.write("set_ftrace_filter", f"{FN}:snapshot:1", append=True)
    assert tfs.read("snapshot").startswith("# tracer: function\n#\n#\n# * Snapshot is allocated *")
    m.call("bench_fib", 2)
    m.call(FN)                                     # snapshot taken before its own event
    m.call(FN)                                     # the count is spent
    assert body(tfs.read("snapshot")) == ["000 bench_fib <-0xffffffffa0000010",
                                          "000 bench_fib <-bench_fib"]
    assert body(tfs.read("trace")) == [f"000 {FN} <-0xffffffffa0000010"] * 2
    assert f"{FN}:snapshot:count=0" in tfs.read("set_ftrace_filter")


def test_the_snapshot_command_without_a_snapshot_buffer_stops_tracing():
    m = tracing_fib()
    tfs = m.tracefs
    tfs.write("set_ftrace_filter", f"{FN}:snapshot", append=True)
    tfs.write("snapshot", "0")
    m.call(FN)              # the probe, registered last, runs first (ftrace_ops_list order)
    assert body(tfs.read("trace")) == [
        "000 tracing_snapshot_instance_cond: *** SNAPSHOT NOT ALLOCATED ***",
        "000 tracing_snapshot_instance_cond: *** stopping trace here!   ***"]
    assert tfs.read("tracing_on") == "0\n"


def test_an_instance_has_its_own_snapshot_and_an_expanded_buffer():
    m = tracing_fib(root="instances/lab/")
    tfs = m.tracefs
    assert tfs.read("instances/lab/buffer_size_kb") == "1410\n"
    assert tfs.read("instances/lab/buffer_total_size_kb") == "1410\n"
    assert tfs.read("buffer_size_kb") == "7 (expanded: 1408)\n"
    m.call("bench_fib", 1)
    tfs.write("instances/lab/snapshot", "1")
    assert body(tfs.read("instances/lab/snapshot")) == ["000 bench_fib <-0xffffffffa0000010"]
    assert tfs.read("snapshot").startswith("# tracer: nop\n#\n#\n# * Snapshot is freed *\n")
    tfs.rmdir("instances/lab")                     # both of its buffers go with it
    assert not tfs.exists("instances/lab")


def test_a_machine_snapshot_brings_back_both_buffers():
    m = tracing_fib()
    tfs = m.tracefs
    m.call("bench_fib", 1)
    tfs.write("snapshot", "1")
    m.call(FN)
    saved = m.snapshot()
    trace, snap = tfs.read("trace"), tfs.read("snapshot")
    tfs.write("snapshot", "1")
    tfs.write("snapshot", "0")
    m.restore(saved)
    assert (tfs.read("trace"), tfs.read("snapshot")) == (trace, snap)
    m.call("bench_fib", 1)
    assert len(body(tfs.read("trace"))) == 2


def test_growing_the_buffer_keeps_every_event():
    m = tracing_fib()
    tfs = m.tracefs
    tfs.write("buffer_size_kb", "8")                # 3 pages
    m.call("bench_fib", 12)                         # 233 events: 2 pages
    before = body(tfs.read("trace"))
    tfs.write("buffer_size_kb", "64")
    assert tfs.read("buffer_size_kb") == "67\n"
    assert body(tfs.read("trace")) == before
    m.call(FN)
    assert body(tfs.read("trace")) == before + [f"000 {FN} <-0xffffffffa0000010"]


def test_shrinking_the_buffer_drops_the_oldest_pages_as_overrun():
    m = tracing_fib()
    tfs = m.tracefs
    tfs.write("buffer_size_kb", "16")               # 5 pages
    m.call("bench_fib", 15)                         # 987 events, 146 per page: 7 pages' worth
    per_page = BUF_PAGE_SIZE // 28
    kept = 987 - (987 // per_page - 4) * per_page   # the writer's 5 pages: the newest data
    before = body(tfs.read("trace"))
    assert len(before) == kept
    tfs.write("buffer_size_kb", "8")                # 3 pages: the two oldest go
    after = body(tfs.read("trace"))
    assert after == before[2 * per_page:]
    assert tfs.read("per_cpu/cpu0/stats").startswith(
        f"entries: {len(after)}\noverrun: {987 - len(after)}\n")


def test_snapshot_raw_gives_the_snapshot_pages_as_trace_pipe_raw_gives_live_ones():
    """per_cpu/cpuN/snapshot_raw: whole ring-buffer pages of that CPU's snapshot, consumed
    as read (the next read of an empty snapshot is EAGAIN with O_NONBLOCK); the live
    buffer is untouched, and its own pages come from trace_pipe_raw the same way."""
    m = tracing_fib(cpus=2)
    tfs = m.tracefs
    m.call("bench_fib", 2, cpu=1)
    tfs.write("snapshot", "1")
    m.call(FN, cpu=1)
    h = tfs.open("per_cpu/cpu1/snapshot_raw", os.O_RDONLY | os.O_NONBLOCK)
    try:
        page = h.read(4096, 0)
        with pytest.raises(OSError) as e:
            h.read(4096, 0)
        assert e.value.errno == errno.EAGAIN
    finally:
        h.release()
    fns = [struct.unpack_from("<Q", parse_entry(1, ev).body)[0] for ev in decode_page(page).events]
    assert fns == [m.symbol_address("bench_fib")] * 2
    assert body(tfs.read("snapshot")) == []                  # consumed
    assert body(tfs.read("trace")) == [f"001 {FN} <-0xffffffffa0000010"]
    live = tfs.open("per_cpu/cpu1/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert [parse_entry(1, ev).body[:8] for ev in decode_page(live.read(4096, 0)).events] == \
            [struct.pack("<Q", m.symbol_address(FN))]
    finally:
        live.release()
    for cpu in (0, 1):                                       # nothing on CPU 0, nothing left
        h = tfs.open(f"per_cpu/cpu{cpu}/snapshot_raw", os.O_RDONLY | os.O_NONBLOCK)
        with pytest.raises(OSError):
            h.read(4096, 0)
        h.release()
