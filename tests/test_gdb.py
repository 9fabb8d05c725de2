"""Debugging the guest with the real gdb, in batch mode, as a kernel engineer would:
``gdb kernel.elf -ex 'target remote :PORT'`` against ``m.gdbserver`` and ``ftemu gdb``."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from emu.gdbstub import GdbServer


def gdb_args(gdb: str, elf, port: int, commands: list[str]) -> list[str]:
    pre = ["set pagination off", "set confirm off", "set width 0", f"target remote :{port}"]
    return [gdb, "-nx", "-batch", str(elf)] + [a for c in pre + commands for a in ("-ex", c)]


def run_gdb(m, gdb: str, *sessions: list[str]) -> list[str]:
    """Serve ``m`` on this thread while gdb runs each command list in turn (one gdb
    process per session); the output of each."""
    server = GdbServer(m, 0)
    outputs = []
    try:
        for commands in sessions:
            p = subprocess.Popen(gdb_args(gdb, m.image.path, server.port, commands),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            server.serve(sessions=1)
            outputs.append(p.communicate(timeout=60)[0])
    finally:
        server.close()
    return outputs


@pytest.fixture
def gdb(require_tool):
    return require_tool("gdb")


def test_break_on_schedule_backtrace_threads_and_disassembly(booted_snapshots, gdb):
    m = booted_snapshots(4)
    out, = run_gdb(m, gdb, ["break schedule", "continue", "bt", "info threads", "x/5i $pc",
                            "info registers rip cs fs_base gs_base", "delete", "detach"])
    assert re.search(r"Breakpoint 1 at 0x[0-9a-f]+: file sched\.c, line \d+\.", out)
    assert re.search(r"Thread \d+ hit Breakpoint 1, schedule \(\) at sched\.c:\d+", out)
    frames = re.findall(r"^#(\d+) +(?:0x[0-9a-f]+ in )?(\w+) \(", out, re.M)
    assert frames[0] == ("0", "schedule")
    assert len(frames) >= 3 and all(name != "??" for _, name in frames[:3])   # into the callers
    threads = re.findall(r"^\*? +(\d) +Thread \d \(CPU (\d) (\w+)", out, re.M)
    assert [(t, c) for t, c, _ in threads] == [("1", "0"), ("2", "1"), ("3", "2"), ("4", "3")]
    insns = re.findall(r"^(?:=> )? *0x[0-9a-f]+ <schedule(?:\+(\d+))?>:\t(\w+)", out, re.M)
    assert [i for i, _ in insns[:4]] == ["", "5", "6", "9"] and len(insns) == 5
    assert [op for _, op in insns[:3]] == ["nopl", "push", "mov"]
    assert re.search(r"^rip +0x[0-9a-f]+ +0x[0-9a-f]+ <schedule>$", out, re.M)
    assert re.search(r"^fs_base +0x", out, re.M) and re.search(r"^gs_base +0x", out, re.M)
    assert "[Inferior 1 (Remote target) detached]" in out


def test_watch_on_a_guest_variable_fires_with_old_and_new_value(booted_snapshots, gdb):
    m = booted_snapshots(2)
    out, = run_gdb(m, gdb, ["watch nr_switches", "continue", "continue", "bt 1", "detach"])
    assert "Hardware watchpoint 1: nr_switches" in out
    pairs = re.findall(r"Old value = (\d+)\nNew value = (\d+)", out)
    assert len(pairs) == 2
    assert all(int(new) == int(old) + 1 for old, new in pairs) and pairs[1][0] == pairs[0][1]
    assert re.search(r"^#0 +.*\w+ \(.*\) at sched\.c:\d+", out, re.M)   # just after the store


def test_detach_leaves_the_guest_running(booted_snapshots, gdb):
    m = booted_snapshots(2)
    first, second = run_gdb(m, gdb, ["print nr_switches", "detach"],
                            ["print nr_switches", "detach"])
    before = int(re.search(r"\$1 = (\d+)", first).group(1))
    after = int(re.search(r"\$1 = (\d+)", second).group(1))
    assert "[Inferior 1 (Remote target) detached]" in first and after > before


def test_ftemu_gdb_prints_the_elf_and_serves_gdb_until_killed(gdb):
    proc = subprocess.Popen([sys.executable, "-m", "ftemu.cli", "gdb", "--port", "0", "--quiet",
                             "--cpus", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0] == "ftemu gdb: the guest is running; 2 vCPUs are threads 1-2\n"
        port = int(re.match(r"ftemu gdb: listening on 127\.0\.0\.1:(\d+); connect with", lines[1]).group(1))
        command = re.match(r"  gdb (\S+) -ex 'target remote :(\d+)'$", lines[2])
        assert command and int(command.group(2)) == port
        out = subprocess.run(gdb_args(gdb, command.group(1), port, ["info threads", "kill"]),
                             capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"^\* 1 +Thread 1 \(CPU 0 ", out, re.M) and re.search(r"^  2 +Thread 2 ", out, re.M)
        assert proc.wait(timeout=30) == 0
        assert "ftemu gdb: gdb killed the target" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
