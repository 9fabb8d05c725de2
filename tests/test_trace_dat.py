"""trace.dat, trace-cmd's file format v6: what we write, Debian's trace-cmd reads and prints
as it prints a kernel's recording; what trace-cmd (or we) wrote, we read back."""
from __future__ import annotations

import subprocess

import pytest
from synthetic_trace import HARDIRQ, IRQS_OFF, fn, page, recording

from ftrace import trace_dat
from ftrace.trace_dat import OPTION_UNAME


def two_cpu_recording(clock: str = "[local] global counter uptime perf mono mono_raw boot\n"):
    cpu0 = page([(1_000_000_000, fn(1, "schedule", "do_idle", flags=IRQS_OFF)),
                 (1_000_001_500, fn(1, "tick_handle", "schedule", 0x10, preempt=2)),
                 (1_300_001_500, fn(0, "do_idle", "tick_handle", 0x10, flags=HARDIRQ))])
    cpu1 = page([(1_000_000_700, fn(2, "tick_handle", "schedule"))])
    return recording([[cpu0], [cpu1]], clock,
                     options=[(OPTION_UNAME, b"Linux ftemu 6.12.0-ftemu x86_64\0")])


def test_what_we_write_reads_back_the_same():
    td = two_cpu_recording()
    data = trace_dat.dumps(td)
    assert data.startswith(b"\x17\x08\x44tracing6\0\0\x08\x00\x10\x00\x00header_page\0")
    back = trace_dat.loads(data)
    assert back == td
    assert back.clock == "local"
    assert back.option(OPTION_UNAME) == [b"Linux ftemu 6.12.0-ftemu x86_64\0"]
    assert [len(back.pages(cpu)) for cpu in (0, 1)] == [1, 1]


def test_trace_cmd_reports_our_file_as_a_kernel_recording(tmp_path, require_tool):
    trace_cmd = require_tool("trace-cmd")
    path = tmp_path / "trace.dat"
    trace_dat.write(path, two_cpu_recording())
    r = subprocess.run([trace_cmd, "report", "-l", "-i", str(path)], capture_output=True,
                       text=True, check=True)
    assert r.stderr == ""
    # trace-cmd's function plugin prints the function, indented under a parent it saw.
    assert r.stdout == ("cpus=2\n"
                        "    init-1       0d....     1.000000: function:             schedule\n"
                        "      sh-2       1.....     1.000001: function:             tick_handle\n"
                        "    init-1       0...2.     1.000002: function:                tick_handle\n"
                        "  <idle>-0       0..h..     1.300002: function:                   do_idle\n")
    dump = subprocess.run([trace_cmd, "dump", "-i", str(path)], capture_output=True, text=True,
                          check=True).stdout
    assert "[Tracing clock]\n\t\t[local]" in dump
    assert "2 [CPUs with tracing data]" in dump


def test_a_counter_clock_recording_shows_raw_counts(tmp_path, require_tool):
    trace_cmd = require_tool("trace-cmd")
    path = tmp_path / "trace.dat"
    trace_dat.write(path, two_cpu_recording("local global [counter] uptime\n"))
    assert trace_dat.read(path).clock == "counter"
    out = subprocess.run([trace_cmd, "report", "-i", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "init-1     [000]  1000000000: function:             schedule\n" in out


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"GIF89a" + d[6:], "not a trace.dat file (no trace-cmd magic)"),
    (lambda d: d[:10] + b"7" + d[11:], "trace.dat version 7 is not supported (only version 6)"),
    (lambda d: d[:200], "trace.dat is truncated"),
    (lambda d: d.replace(b"flyrecord\0", b"latency  \0"),
     "unsupported trace.dat data section b'latency  ' (only flyrecord)"),
])
def test_a_damaged_file_is_one_clear_error(damage, message):
    with pytest.raises(ValueError) as e:
        trace_dat.loads(damage(trace_dat.dumps(two_cpu_recording())))
    assert str(e.value).startswith(message)


def test_cpu_data_must_be_whole_pages():
    td = two_cpu_recording()
    td.cpu_data[1] = td.cpu_data[1][:100]
    with pytest.raises(ValueError, match="CPU 1 data is not whole pages of 4096 bytes"):
        trace_dat.dumps(td)
