"""The ftemu command line, as a user types it: every command from a subprocess."""
from __future__ import annotations

import pytest
from cli_helpers import ftemu, ftemu_into_closed_pipe, ftemu_on_terminal

COMMANDS = ["demo", "boot", "record", "report", "dump", "diff", "mount", "shell", "kmod", "gdb"]


def test_ftemu_help_lists_every_command_with_an_example():
    r = ftemu("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert f"    {name} " in r.stdout, name
    assert "example:\n  ftemu " in r.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_ends_with_an_example(name):
    r = ftemu(name, "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert f"usage: ftemu {name}" in r.stdout
    example = r.stdout.split("example:\n", 1)[1]
    assert example.startswith(f"  ftemu {name}")


def test_ftemu_boot_streams_the_console_and_summarises():
    r = ftemu("boot", "--cpus", "2", "--ms", "50")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""            # piped: no progress line
    assert "init: up" in r.stdout
    assert "--- ftemu: 2 CPUs, 32 MiB" in r.stdout
    for label in ("timer interrupts", "softirqs", "NMIs", "syscalls", "context switches",
                  "idle entries", "CPU offline events", "CPU online events"):
        assert any(line.startswith(label) for line in r.stdout.splitlines()), label


@pytest.mark.parametrize("argv, line", [
    (["boot", "--memory", "8"], "ftemu boot: error: argument --memory: must be 24..2048, not 8"),
    (["boot", "--cpus", "9"], "ftemu boot: error: argument --cpus: must be 1..8, not 9"),
    (["boot", "--cmdline", "x" * 300], "ftemu boot: error: argument --cmdline: longer than 255 bytes"),
    (["boot", "--ms", "-1"], "ftemu boot: error: argument --ms: must be >= 0, not -1"),
    (["boot", "--cpus", "two"],
     "ftemu boot: error: argument --cpus: invalid int value: 'two' (see 'ftemu boot --help')"),
    (["trace"], "ftemu: error: argument COMMAND: invalid choice: 'trace' (choose from "
                + ", ".join(f"'{c}'" for c in COMMANDS) + ") (see 'ftemu --help')"),
])
def test_errors_are_one_line_naming_the_flag_the_user_typed(argv, line):
    r = ftemu(*argv)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == line + "\n"


def test_a_closed_pipe_ends_quietly():
    """`ftemu boot | head -1`: the reader leaves after one line; no traceback, no message."""
    status, first, err = ftemu_into_closed_pipe("boot", "--ms", "2000")
    assert (status, err) == (141, b"")
    assert first


def test_long_work_shows_a_progress_line_on_a_terminal_only():
    out = ftemu_on_terminal("boot", "--quiet", "--ms", "40000")   # several host seconds
    assert b"\rrunning: " in out and b"/40000 virtual ms" in out
    assert b"--- ftemu: 2 CPUs" in out
    piped = ftemu("boot", "--quiet", "--ms", "8000")
    assert piped.returncode == 0 and piped.stderr == ""
