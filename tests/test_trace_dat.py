"""trace.dat, trace-cmd's file format v6: what we write, Debian's trace-cmd reads and prints
as it prints a kernel's recording; what trace-cmd (or we) wrote, we read back."""
from __future__ import annotations

import subprocess

import pytest

from ftrace import trace_dat
from ftrace.trace_dat import OPTION_UNAME, TraceDat
from rb_pages import encode_page, function_entry

# The kernel's own texts (x86-64, 6.x) for events/header_page, events/header_event and
# events/ftrace/function/format: what a tracing directory gives trace-cmd record.
HEADER_PAGE = (b"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
               b"\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
               b"\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
               b"\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n")
HEADER_EVENT = (b"# compressed entry header\n\ttype_len    :    5 bits\n"
                b"\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n"
                b"\tpadding     : type == 29\n\ttime_extend : type == 30\n"
                b"\ttime_stamp : type == 31\n\tdata max type_len  == 28\n")
FUNCTION_FORMAT = (b"name: function\nID: 1\nformat:\n"
                   b"\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                   b"\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
                   b"\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
                   b"\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
                   b"\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;\n"
                   b"\tfield:unsigned long parent_ip;\toffset:16;\tsize:8;\tsigned:0;\n\n"
                   b"print fmt: \" %ps <-- %ps\", (void *)REC->ip, (void *)REC->parent_ip\n")
KALLSYMS = (b"ffffffff81000000 T schedule\nffffffff81000100 T do_idle\n"
            b"ffffffff81000200 t tick_handle\n")
SCHEDULE, DO_IDLE, TICK = 0xffffffff81000000, 0xffffffff81000100, 0xffffffff81000200
IRQS_OFF, HARDIRQ = 0x01, 0x08


def two_cpu_recording(clock: str = "[local] global counter uptime perf mono mono_raw boot\n"):
    cpu0 = encode_page(1_000_000_000, [
        (0, function_entry(1, SCHEDULE, DO_IDLE + 4, flags=IRQS_OFF)),
        (1500, function_entry(1, TICK, SCHEDULE + 0x10, preempt=2)),
        (300_000_000, function_entry(0, DO_IDLE, TICK + 0x10, flags=HARDIRQ)),   # time extend
    ])
    cpu1 = encode_page(1_000_000_700, [(0, function_entry(2, TICK, SCHEDULE + 4))])
    return TraceDat(HEADER_PAGE, HEADER_EVENT, [FUNCTION_FORMAT], {}, KALLSYMS, b"",
                    b"1 init\n2 sh\n", [cpu0, cpu1], clock,
                    [(OPTION_UNAME, b"Linux ftemu 6.12.0-ftemu x86_64\0")])


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
                        "  <idle>-0       0..h..     1.300002: function:             do_idle\n")
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
