"""``ftemu mount``: the guest's files through FUSE, driven from bash as a tutorial would."""
from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mount_helpers import TRACING, is_mounted, start_mount, stop_mount

@pytest.fixture(scope="module")
def mounted(tmp_path_factory, require_tool):
    require_tool("fusermount3", "fuse3")
    mountpoint = tmp_path_factory.mktemp("guest")
    proc = start_mount(mountpoint, "--cmdline", "console=ttyS0 ftemu.test")
    yield mountpoint
    assert stop_mount(proc, mountpoint) == 0
    assert not is_mounted(mountpoint)


def sh(mountpoint: Path, script: str, shell: str = "bash") -> subprocess.CompletedProcess:
    """Run ``script`` in the tracing directory, as a tutorial's reader would."""
    return subprocess.run([shell, "-c", script], cwd=mountpoint / TRACING, capture_output=True,
                          text=True, timeout=60)


def test_the_mount_is_a_guest_root(mounted):
    assert (mounted / "proc/cmdline").read_text() == "console=ttyS0 ftemu.test\n"
    assert (mounted / "proc/kallsyms").read_text().startswith("ffffffff81000000 T _start\n")
    assert (mounted / "proc/sys/kernel/ftrace_enabled").read_text() == "1\n"
    r = sh(mounted, "ls; head -1 available_filter_functions")
    assert "set_ftrace_filter" in r.stdout.split() and "kernel_init" in r.stdout.split()


def test_filters_from_bash_take_effect_before_the_next_command(mounted):
    r = sh(mounted, "echo 'sched*' >> set_ftrace_filter && cat set_ftrace_filter && "
                    "echo '!schedule*' >> set_ftrace_filter && cat set_ftrace_filter && "
                    "echo > set_ftrace_filter && cat set_ftrace_filter")
    funcs = (mounted / TRACING / "available_filter_functions").read_text().splitlines()
    sched = [f for f in funcs if fnmatch.fnmatchcase(f, "sched*")]
    rest = [f for f in sched if not f.startswith("schedule")]
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f + "\n" for f in sched + rest) + \
        "#### all functions enabled ####\n"


def test_a_process_opening_a_file_is_a_guest_task_in_the_trace(mounted):
    """As on Linux, where ``grep ... trace`` is itself scheduled before it reads: the guest's
    requester task, named after the process, runs for each open."""
    r = sh(mounted, "echo 1 > events/sched/enable && grep -c 'prev_comm=grep' trace; "
                    "echo 0 > events/sched/enable; echo > trace")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 1


def test_reads_agree_whatever_the_read_size(mounted):
    r = sh(mounted, "echo '*lock*' > set_ftrace_filter; cat set_ftrace_filter | md5sum; "
                    "dd if=set_ftrace_filter bs=1 2>/dev/null | md5sum; "
                    "dd if=set_ftrace_filter bs=100 2>/dev/null | md5sum; "
                    "echo > set_ftrace_filter")
    sums = r.stdout.splitlines()
    assert len(sums) == 3 and len(set(sums)) == 1


def test_write_errors_are_the_kernels(mounted):
    r = sh(mounted, "echo bogus > set_ftrace_filter")
    assert r.returncode == 1 and "write error: Invalid argument" in r.stderr
    r = sh(mounted, "echo bogus > set_ftrace_filter", shell="sh")     # dash, as the selftests
    assert r.returncode == 1 and "I/O error" in r.stderr
    r = sh(mounted, "echo x > available_filter_functions")
    assert r.returncode == 1 and "Permission denied" in r.stderr
    r = sh(mounted, "echo 5 > tracing_cpumask")
    assert r.returncode == 1 and "Value too large" in r.stderr
    r = sh(mounted, "touch newfile")
    assert r.returncode == 1 and "Permission denied" in r.stderr


def test_instances_are_made_with_mkdir(mounted):
    r = sh(mounted, "mkdir instances/foo && echo kfree > instances/foo/set_ftrace_filter && "
                    "cat instances/foo/set_ftrace_filter set_ftrace_filter && "
                    "rmdir instances/foo && ls instances | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "kfree\n#### all functions enabled ####\n0\n"


def test_cpu_hotplug_returns_when_done(mounted):
    cpu = "/sys/devices/system/cpu"
    r = sh(mounted, f"cd ../../..; echo 0 > .{cpu}/cpu1/online && cat .{cpu}/online "
                    f".{cpu}/cpu1/online && echo 1 > .{cpu}/cpu1/online && cat .{cpu}/online")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0\n0\n0-1\n"


def test_the_remaining_trace_files_from_bash(mounted):
    """trace_marker_raw takes printf's bytes, saved_cmdlines_size and tracing_thresh their
    numbers, record-tgid fills saved_tgids, error_log truncates, free_buffer frees at close."""
    r = sh(mounted, r"printf '\x34\x12\x00\x00\x01\x02' > trace_marker_raw && grep -c '# 1234 buf: 01 02 00' trace; "
                    "echo 10000 > saved_cmdlines_size && cat saved_cmdlines_size; "
                    "echo 1 > options/record-tgid && head -1 saved_tgids; echo 0 > options/record-tgid; "
                    "echo 7 > tracing_thresh && cat tracing_thresh; echo 0 > tracing_thresh; "
                    "echo > error_log && wc -c < error_log; "
                    "echo 1 > free_buffer && cat buffer_size_kb; echo 1408 > buffer_size_kb; echo > trace")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\n19659\n1 1\n7\n0\n7\n"


def test_sigint_and_fusermount_end_the_mount_with_status_0(tmp_path, require_tool):
    require_tool("fusermount3", "fuse3")
    proc = start_mount(tmp_path)
    assert stop_mount(proc, tmp_path, signal.SIGINT) == 0 and not is_mounted(tmp_path)
    proc = start_mount(tmp_path)
    subprocess.run(["fusermount3", "-u", str(tmp_path)], check=True)
    assert proc.wait(timeout=20) == 0 and not os.listdir(tmp_path)


def test_sigterm_ends_a_blocked_trace_pipe_reader_too(tmp_path, require_tool):
    require_tool("fusermount3", "fuse3")
    proc = start_mount(tmp_path)
    reader = subprocess.Popen(["cat", str(tmp_path / TRACING / "trace_pipe")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)                             # nop tracer, empty buffer: it blocks
    assert reader.poll() is None
    assert stop_mount(proc, tmp_path) == 0 and not is_mounted(tmp_path)
    assert reader.wait(timeout=20) == 1 and "No such device" in reader.stderr.read()


def test_the_guest_is_paced_to_the_wall_clock(booted_snapshots):
    import threading

    from ftemu.mount_cmd import SLICE_MS, PacedRunner
    m = booted_snapshots(1)
    cv = threading.Condition(threading.RLock())
    runner = PacedRunner(m, cv)
    start_virtual, start_wall = m.now, time.monotonic()
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.3)
    with cv:                                  # requests get the machine between slices
        seen_virtual, seen_wall = m.now - start_virtual, time.monotonic() - start_wall
    runner.stop.set()
    thread.join()
    assert runner.error is None
    assert 0 < seen_virtual <= seen_wall * 1e9 + SLICE_MS * 1e6   # never ahead of the clock


def test_without_libfuse_the_command_says_what_to_install(tmp_path):
    env = dict(os.environ, FUSE_LIBRARY_PATH=str(tmp_path / "libfuse3.so.3"))
    r = subprocess.run([sys.executable, "-m", "ftemu", "mount", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("ftemu mount: error: FUSE is not available: install fuse3 "
                               "(apt-get install fuse3)")
    assert len(r.stderr.splitlines()) == 1
