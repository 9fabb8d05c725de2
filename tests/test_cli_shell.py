"""``ftemu shell``: the user's own shell on the guest's files, unmounted when it exits."""
from __future__ import annotations

import os

import pytest
from cli_helpers import ftemu

DEMO = "cat current_tracer; echo function > current_tracer; head -5 trace"


def _mounts() -> int:
    with open("/proc/self/mounts") as f:
        return sum(1 for line in f if "ftemu" in line)


@pytest.mark.parametrize("private", [True, False])
def test_shell_runs_a_command_in_the_tracing_directory(require_tool, private):
    require_tool("fusermount3", "fuse3")
    if private and os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    flags = [] if private else ["--no-namespace"]
    before = _mounts()
    r = ftemu("shell", *flags, "-c", f"{DEMO}; pwd; cat /proc/cmdline", timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:6] == ["nop", "# tracer: function", "#",
                       out[3], "#", "#                                _-----=> irqs-off/BH-disabled"]
    assert out[3].startswith("# entries-in-buffer/entries-written: ")
    if private:       # the guest's files at their real paths
        assert out[6:] == ["/sys/kernel/tracing", "console=ttyS0"]
    else:
        assert out[6].endswith("/sys/kernel/tracing") and out[6] != "/sys/kernel/tracing"
    assert _mounts() == before                   # unmounted when the shell exited


def test_shell_exit_status_is_the_shells(require_tool):
    require_tool("fusermount3", "fuse3")
    r = ftemu("shell", "--no-namespace", "-c", "exit 7", timeout=300)
    assert r.returncode == 7


def test_shell_flag_errors_are_one_line():
    r = ftemu("shell", "--cpus", "9", "-c", "true")
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        1, "ftemu shell: error: argument --cpus: must be 1..8, not 9")
