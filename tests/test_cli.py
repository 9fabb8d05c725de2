"""The ftemu command line, as a user types it."""
from __future__ import annotations

from ftemu.cli import main


def test_ftemu_boot_streams_the_console_and_summarises(capsys):
    assert main(["boot", "--cpus", "2", "--ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "init: up" in out
    assert "--- ftemu: 2 CPUs, 32 MiB" in out
    for label in ("timer interrupts", "softirqs", "NMIs", "syscalls", "context switches",
                  "idle entries", "CPU offline events", "CPU online events"):
        assert any(line.startswith(label) for line in out.splitlines()), label


def test_ftemu_errors_are_one_line(capsys):
    assert main(["boot", "--cpus", "9"]) == 1
    err = capsys.readouterr().err
    assert err == "ftemu: error: cpus must be 1..8, not 9\n"
