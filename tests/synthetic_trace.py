"""Small recordings built by hand, for the trace.dat container and the tools that read it:
the kernel's texts for the headers and the ftrace event formats (x86-64, 6.x), a few
symbols, and pages packed with the ring buffer's own event encoder."""
from __future__ import annotations

import struct

from ftrace.ring_buffer_format import (BUF_PAGE_HDR_SIZE, PAGE_SIZE, encode_event,
                                       header_event_format, header_page_format)
from ftrace.trace_dat import TraceDat

COMMON = (b"\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
          b"\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
          b"\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
          b"\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n")
FUNCTION_FORMAT = (b"name: function\nID: 1\nformat:\n" + COMMON +
                   b"\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;\n"
                   b"\tfield:unsigned long parent_ip;\toffset:16;\tsize:8;\tsigned:0;\n\n"
                   b"print fmt: \" %ps <-- %ps\", (void *)REC->ip, (void *)REC->parent_ip\n")
FUNCGRAPH_ENTRY_FORMAT = (b"name: funcgraph_entry\nID: 11\nformat:\n" + COMMON +
                          b"\tfield:unsigned long func;\toffset:8;\tsize:8;\tsigned:0;\n"
                          b"\tfield:int depth;\toffset:16;\tsize:4;\tsigned:1;\n\n"
                          b"print fmt: \"--> %ps (%d)\", (void *)REC->func, REC->depth\n")
FUNCGRAPH_EXIT_FORMAT = (b"name: funcgraph_exit\nID: 10\nformat:\n" + COMMON +
                         b"\tfield:unsigned long func;\toffset:8;\tsize:8;\tsigned:0;\n"
                         b"\tfield:int depth;\toffset:16;\tsize:4;\tsigned:1;\n"
                         b"\tfield:unsigned int overrun;\toffset:20;\tsize:4;\tsigned:0;\n"
                         b"\tfield:unsigned long long calltime;\toffset:24;\tsize:8;\tsigned:0;\n"
                         b"\tfield:unsigned long long rettime;\toffset:32;\tsize:8;\tsigned:0;\n\n"
                         b"print fmt: \"<-- %ps (%d) (start: %llx  end: %llx) over: %d\", "
                         b"(void *)REC->func, REC->depth, REC->calltime, REC->rettime, REC->depth\n")
SYMBOLS = {"schedule": 0xffffffff81000000, "do_idle": 0xffffffff81000100,
           "tick_handle": 0xffffffff81000200, "sys_write": 0xffffffff81000300,
           "copy_from_user": 0xffffffff81000400}
KALLSYMS = "".join(f"{a:016x} {'t' if n == 'tick_handle' else 'T'} {n}\n"
                   for n, a in SYMBOLS.items()).encode()
IRQS_OFF, HARDIRQ, SOFTIRQ, NMI = 0x01, 0x08, 0x10, 0x40


def page(events: list[tuple[int, bytes]]) -> bytes:
    """One buffer_data_page of (absolute ns, payload) events."""
    body, prev = b"", events[0][0]
    for ts, payload in events:
        body += encode_event(payload, ts - prev)
        prev = ts
    return (struct.pack("<QQ", events[0][0], len(body)) + body
            + bytes(PAGE_SIZE - BUF_PAGE_HDR_SIZE - len(body)))


def fn(pid: int, func: str, parent: str, off: int = 4, flags: int = 0, preempt: int = 0) -> bytes:
    """struct trace_entry + struct ftrace_entry."""
    return struct.pack("<HBBiQQ", 1, flags, preempt, pid, SYMBOLS[func], SYMBOLS[parent] + off)


def entry(pid: int, func: str, depth: int, flags: int = 0) -> bytes:
    """funcgraph_entry: struct ftrace_graph_ent_entry."""
    return struct.pack("<HBBiQi4x", 11, flags, 0, pid, SYMBOLS[func], depth)


def exit_(pid: int, func: str, depth: int, calltime: int, rettime: int, flags: int = 0) -> bytes:
    """funcgraph_exit: struct ftrace_graph_ret_entry."""
    return struct.pack("<HBBiQiIQQ", 10, flags, 0, pid, SYMBOLS[func], depth, 0, calltime, rettime)


def recording(cpu_pages: list[list[bytes]], clock: str = "[local] global counter uptime\n",
              cmdlines: bytes = b"1 init\n2 sh\n", options=()) -> TraceDat:
    """A TraceDat with the ftrace formats, our symbols and the given pages per CPU."""
    return TraceDat(header_page_format().encode(), header_event_format().encode(),
                    [FUNCTION_FORMAT, FUNCGRAPH_EXIT_FORMAT, FUNCGRAPH_ENTRY_FORMAT], {},
                    KALLSYMS, b"", cmdlines, [b"".join(p) for p in cpu_pages], clock,
                    list(options))
