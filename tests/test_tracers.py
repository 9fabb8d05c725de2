"""The function tracer through tracefs, as a tutorial uses it: the guest writes kernel-format
ring-buffer pages, ``trace`` prints them byte for byte as the kernel would."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_GRP_CALL, CS_GRP_INT, CS_GRP_JUMP, CS_GRP_RET, CS_MODE_64, Cs

from emu import Machine
from emu import memlayout as L
from ftrace.ring_buffer_format import BUF_PAGE_SIZE, decode_page
from ftrace.trace_output import TRACE_FN, parse_entry

GOLDEN = Path(__file__).parent / "golden"
FIB_CALLS = 4181                     # bench_fib(18): traced calls per run


def booted(cpus: int = 1) -> Machine:
    m = Machine(cpus=cpus)
    m.boot()
    return m


def lines(trace: str) -> list[str]:
    return [line for line in trace.splitlines() if not line.startswith("#")]


def trace_fib(m: Machine) -> None:
    m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
    m.tracefs.write("current_tracer", "function")


def golden_run(*options: str) -> str:
    """Every function traced on two CPUs around guest calls, with the counter clock (so the
    text depends on what the calls do, not on how long boot took)."""
    m = booted(2)
    tfs = m.tracefs
    for opt in options:
        tfs.write("trace_options", opt)
    tfs.write("trace_clock", "counter")
    tfs.write("current_tracer", "function")
    tfs.write("trace", "")
    page = m.call("kalloc", cpu=0)
    m.call("kfree", page, cpu=1)
    m.call("trace_selftest_dynamic_test_func", cpu=1)
    tfs.write("tracing_on", "0")
    return tfs.read("trace")


@pytest.mark.parametrize("name,options", [
    ("trace_function_default.txt", ()),
    ("trace_function_noirq_noparent.txt", ("noirq-info", "noprint-parent")),
])
def test_function_tracer_golden_traces(name, options):
    """Header, columns, flags and merge order, byte for byte from a deterministic run
    (regenerate with FTEMU_REGEN_GOLDEN=1 after a deliberate guest change)."""
    text = golden_run(*options)
    if os.environ.get("FTEMU_REGEN_GOLDEN"):
        (GOLDEN / name).write_text(text)
    assert text == (GOLDEN / name).read_text()
    assert text == golden_run(*options)


def test_each_traced_call_is_one_entry_with_ip_parent_and_the_guest_latency_flags():
    m = booted()
    trace_fib(m)
    m.call("bench_fib", 18)
    text = m.tracefs.read("trace")
    assert f"# entries-in-buffer/entries-written: {FIB_CALLS}/{FIB_CALLS}   #P:1\n" in text
    body = lines(text)
    assert len(body) == FIB_CALLS
    # m.call runs with interrupts off, in init's context: 'd', no preemption depth.
    assert body[0].endswith("bench_fib <-0xffffffffa0000010")
    assert all(" init-1       [000] d....  " in line for line in body)
    assert all(line.endswith(": bench_fib <-bench_fib") for line in body[1:])


def test_header_and_options_change_the_columns():
    m = booted()
    trace_fib(m)
    m.call("bench_fib", 1)
    tfs = m.tracefs
    tfs.write("trace_options", "noirq-info")
    text = tfs.read("trace")
    assert "#           TASK-PID     CPU#     TIMESTAMP  FUNCTION\n" in text
    assert "#              | |         |         |         |\n" in text
    line = lines(text)[0]
    assert line.startswith("            init-1       [000]  ")
    tfs.write("options/print-parent", "0")
    tfs.write("options/sym-offset", "1")
    tfs.write("options/sym-addr", "1")
    addr = m.symbol_address("bench_fib")
    size = m.image.symbol("bench_fib").size
    assert lines(tfs.read("trace"))[0].endswith(f": bench_fib+0x0/{size:#x} <{addr:016x}>")
    assert "nosym-addr" not in tfs.read("trace_options") and "sym-addr\n" in tfs.read("trace_options")
    tfs.write("options/context-info", "0")
    assert tfs.read("trace").startswith("# tracer: function\n#\nbench_fib+0x0/")


def test_trace_pipe_consumes_and_trace_pipe_raw_gives_kernel_pages():
    m = booted()
    trace_fib(m)
    m.call("bench_fib", 5)                        # 8 calls
    tfs = m.tracefs
    h = tfs.open("trace_pipe")
    first = h.read(4096, 0).decode()
    h.release()
    assert len(first.splitlines()) == 8 and first.splitlines()[1].endswith("bench_fib <-bench_fib")
    assert "entries-in-buffer/entries-written: 0/0" in tfs.read("trace")
    assert tfs.read("per_cpu/cpu0/stats").endswith("dropped events: 0\nread events: 8\n")
    m.call("bench_fib", 5)
    h = tfs.open("per_cpu/cpu0/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    page = h.read(4096, 0)
    with pytest.raises(OSError) as e:
        h.read(4096, 0)
    assert e.value.errno == errno.EAGAIN
    dp = decode_page(page)
    entries = [parse_entry(0, ev) for ev in dp.events]
    assert len(entries) == 8 and {e.type for e in entries} == {TRACE_FN}
    assert dp.time_stamp == entries[0].ts and dp.commit == 8 * 28
    assert [e.ts for e in entries] == sorted(e.ts for e in entries)


def test_overwrite_keeps_the_newest_pages_and_counts_the_overrun():
    m = booted()
    trace_fib(m)
    m.tracefs.write("buffer_size_kb", "8")
    assert m.tracefs.read("buffer_size_kb") == "11\n"          # 3 pages of 4080 bytes
    m.tracefs.write("trace", "")
    m.call("bench_fib", 18)
    stats = m.tracefs.read("per_cpu/cpu0/stats")
    per_page = BUF_PAGE_SIZE // 28
    kept = FIB_CALLS - (FIB_CALLS // per_page - 2) * per_page
    assert stats.startswith(f"entries: {kept}\noverrun: {FIB_CALLS - kept}\n")
    text = m.tracefs.read("trace")
    assert f"entries-in-buffer/entries-written: {kept}/{FIB_CALLS}   #P:1" in text
    assert len(lines(text)) == kept


def test_without_overwrite_new_events_are_dropped_when_full():
    m = booted()
    trace_fib(m)
    m.tracefs.write("buffer_size_kb", "8")
    m.tracefs.write("options/overwrite", "0")
    m.tracefs.write("trace", "")
    m.call("bench_fib", 18)
    kept = 3 * (BUF_PAGE_SIZE // 28)
    stats = m.tracefs.read("per_cpu/cpu0/stats")
    assert stats.startswith(f"entries: {kept}\noverrun: 0\n")
    assert f"dropped events: {FIB_CALLS - kept}\n" in stats
    assert lines(m.tracefs.read("trace"))[0].endswith("bench_fib <-0xffffffffa0000010")


def test_tracing_on_clear_cpumask_and_clock():
    m = booted(2)
    tfs = m.tracefs
    trace_fib(m)
    tfs.write("tracing_on", "0")
    m.call("bench_fib", 5)
    assert lines(tfs.read("trace")) == []
    tfs.write("tracing_on", "1")
    tfs.write("tracing_cpumask", "2")
    m.call("bench_fib", 5, cpu=0)
    m.call("bench_fib", 5, cpu=1)
    body = lines(tfs.read("trace"))
    assert len(body) == 8 and all("[001]" in line for line in body)
    tfs.write("trace", "")
    assert lines(tfs.read("trace")) == []
    tfs.write("trace_clock", "counter")
    assert tfs.read("trace_clock") == "local global [counter] uptime mono\n"
    m.call("bench_fib", 3, cpu=1)
    stamps = [line.split(":")[0].split()[-1] for line in lines(tfs.read("trace"))]
    assert stamps == ["1", "2", "3"]


def test_bad_writes_are_refused_with_the_kernels_errno():
    m = booted()
    for path, text in (("current_tracer", "bogus"), ("buffer_size_kb", "0"),
                       ("trace_options", "nosuchoption"), ("trace_clock", "sundial"),
                       ("options/overwrite", "yes")):
        with pytest.raises(OSError) as e:
            m.tracefs.write(path, text)
        assert e.value.errno == errno.EINVAL, path
    assert m.tracefs.read("current_tracer") == "nop\n"
    assert m.tracefs.read("available_tracers") == "function_graph function nop\n"
    assert m.tracefs.read("buffer_size_kb") == "7 (expanded: 1408)\n"


def test_event_formats_and_header_files():
    m = booted()
    fmt = m.tracefs.read("events/ftrace/function/format")
    assert fmt.startswith("name: function\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;")
    assert "\tfield:unsigned long parent_ip;\toffset:16;\tsize:8;\tsigned:0;\n" in fmt
    assert m.tracefs.read("events/header_page").endswith("\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n")
    assert "\ttime_extend : type == 30\n" in m.tracefs.read("events/header_event")


def test_an_instance_has_its_own_buffer_tracer_and_filter():
    m = booted()
    tfs = m.tracefs
    tfs.mkdir("instances/foo")
    foo = "instances/foo/"
    assert tfs.read(foo + "current_tracer") == "nop\n"
    tfs.write(foo + "set_ftrace_filter", "trace_selftest_dynamic_test_func")
    tfs.write(foo + "current_tracer", "function")
    trace_fib(m)
    m.call("bench_fib", 3)
    m.call("trace_selftest_dynamic_test_func")
    assert [line.split(": ")[-1] for line in lines(tfs.read(foo + "trace"))] == [
        "trace_selftest_dynamic_test_func <-0xffffffffa0000010"]
    assert len(lines(tfs.read("trace"))) == 3
    tfs.rmdir("instances/foo")                # as the kernel: the tracer is torn down
    assert not tfs.exists("instances/foo")
    m.call("trace_selftest_dynamic_test_func")
    assert len(lines(tfs.read("trace"))) == 3


def test_a_buffer_the_guest_has_no_memory_for_is_refused_and_the_old_one_kept():
    m = booted()
    trace_fib(m)
    with pytest.raises(OSError) as e:
        m.tracefs.write("buffer_size_kb", "1000000")
    assert e.value.errno == errno.ENOMEM
    assert m.tracefs.read("buffer_size_kb") == "1410\n"
    m.call("bench_fib", 3)
    assert len(lines(m.tracefs.read("trace"))) == 3


def test_restoring_a_snapshot_brings_back_the_tracer_and_its_buffer():
    m = booted()
    trace_fib(m)
    m.call("bench_fib", 3)
    snap = m.snapshot()
    before = m.tracefs.read("trace")
    m.tracefs.write("current_tracer", "nop")
    m.tracefs.write("buffer_size_kb", "8")
    m.tracefs.write("trace_clock", "counter")
    m.restore(snap)
    assert m.tracefs.read("current_tracer") == "function\n"
    assert m.tracefs.read("buffer_size_kb") == "1410\n"
    assert m.tracefs.read("trace") == before
    m.call("bench_fib", 3)
    assert len(lines(m.tracefs.read("trace"))) == 6


def test_pid_filters_choose_the_tasks_that_record():
    m = booted(2)
    tfs = m.tracefs
    tfs.write("set_ftrace_pid", "6")                 # ping
    tfs.write("current_tracer", "function")
    m.run(ms=5)
    body = lines(tfs.read("trace"))
    assert body and all(line.lstrip().startswith("ping-6 ") for line in body)
    tfs.write("set_ftrace_pid", "")
    tfs.write("set_ftrace_notrace_pid", "0")
    tfs.write("trace", "")
    m.run(ms=5)
    body = lines(tfs.read("trace"))
    assert body and not any("<idle>-0" in line for line in body)
    assert any("ping-6" in line for line in body)


def test_trace_marker_lines_sit_between_the_function_entries():
    m = booted()
    trace_fib(m)
    m.call("bench_fib", 1)
    m.tracefs.write("trace_marker", "hello from the lab")
    m.call("bench_fib", 1)
    body = [line.split(": ", 1)[1] for line in lines(m.tracefs.read("trace"))]
    assert body == ["bench_fib <-0xffffffffa0000010", "tracing_mark_write: hello from the lab",
                    "bench_fib <-0xffffffffa0000010"]
    m.tracefs.write("tracing_on", "0")
    with pytest.raises(OSError) as e:
        m.tracefs.write("trace_marker", "lost")
    assert e.value.errno == errno.EBADF


def test_host_and_guest_writers_share_pages_across_page_ends():
    """Long markers among guest events fill several pages; every event decodes back."""
    m = booted()
    trace_fib(m)
    for i in range(60):
        m.tracefs.write("trace_marker", f"marker {i} " + "x" * 150)
        m.call("bench_fib", 1)
    body = lines(m.tracefs.read("trace"))
    assert len(body) == 120
    assert [line.split("marker ")[1].split()[0] for line in body[::2]] == [str(i) for i in range(60)]
    assert m.tracefs.read("per_cpu/cpu0/stats").startswith("entries: 120\noverrun: 0\n")


def test_the_stacktrace_command_records_the_callers():
    m = booted()
    trace_fib(m)
    m.tracefs.write("set_ftrace_filter", "trace_selftest_dynamic_test_func:stacktrace", append=True)
    m.call("trace_selftest_dynamic_test_func")
    text = m.tracefs.read("trace")
    stack = text.split("<stack trace>\n", 1)[1].splitlines()
    assert stack[0] == " => trace_selftest_dynamic_test_func"
    assert all(line.startswith(" => ") for line in stack)
    assert "trace_selftest_dynamic_test_func:stacktrace:unlimited" in m.tracefs.read("set_ftrace_filter")


def test_the_kernel_staples_tutorials_filter_on_run_within_a_second():
    """mutex_lock/unlock (CPU hotplug), console_lock/unlock (write(2)), sched_clock and
    local_clock (the scheduler tick), the rcu functions: what `*lock*`-style filters expect."""
    m = booted(2)
    tfs = m.tracefs
    tfs.write("set_ftrace_filter", "*lock* *clock* *rcu*")
    assert {"mutex_lock", "mutex_trylock", "mutex_unlock", "console_lock", "console_unlock",
            "sched_clock", "local_clock", "debug_check_no_locks_held"} <= set(
        tfs.read("available_filter_functions").split())
    tfs.write("current_tracer", "function")
    m.run(ms=1000)
    seen = {line.split(": ")[1].split(" <-")[0] for line in lines(tfs.read("trace"))}
    assert {"mutex_lock", "mutex_unlock", "console_lock", "console_unlock", "sched_clock",
            "local_clock", "rcu_sched_clock_irq", "spin_lock_irqsave"} <= seen


def raw_pages(m: Machine, cpu: int = 0) -> list[bytes]:
    """Every page trace_pipe_raw gives for ``cpu`` until it has no more."""
    h = m.tracefs.open(f"per_cpu/cpu{cpu}/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            out.append(h.read(4096, 0))
    except BlockingIOError:
        return out
    finally:
        h.release()


@pytest.mark.parametrize("tracer,setting", [("function", ("set_ftrace_notrace_pid", "30000")),
                                            ("function_graph", ("max_graph_depth", "40"))])
def test_the_fast_path_writes_the_pages_the_general_code_writes(tracer, setting):
    """The tracers' common case has a short path of its own; the same calls recorded through
    the general code (a pid filter that leaves nobody out, a depth limit nobody reaches)
    give the same ring-buffer pages byte for byte, page ends included (the counter clock
    makes the times the same too)."""
    def record(general: bool) -> list[bytes]:
        m = booted()
        t = m.tracefs
        m.ftrace.ftrace_set_filter(m.tracing.top.ops, "bench_fib", True)
        t.write("trace_clock", "counter")
        if general:
            t.write(*setting)
        t.write("current_tracer", tracer)
        t.write("trace", "")
        m.call("bench_fib", 16)
        return raw_pages(m)
    fast = record(False)
    assert len(fast) > 4
    assert fast == record(True)


def test_an_interrupt_or_nmi_due_during_an_event_write_is_taken_after_it():
    """The machine holds interrupts and NMIs while a vCPU is inside the tracers' code, as if
    interrupts were off there: with slices ending every ~100 instructions and an NMI every
    10 us, no event is dropped, and the NMI handler's own calls are recorded."""
    m = Machine(cpus=2, quantum=97, nmi_period_ms=0.01)
    m.boot()
    t = m.tracefs
    t.write("current_tracer", "function")
    t.write("trace", "")
    m.run(ms=1)
    t.write("tracing_on", "0")
    for cpu in range(2):
        assert "\ndropped events: 0\n" in t.read(f"per_cpu/cpu{cpu}/stats")
    assert any(line[33] in "zZ" for line in lines(t.read("trace")))


def test_the_local_clock_is_read_where_its_translation_block_says():
    """The fast paths read the local clock from the vCPU's pvclock (no rdtsc) with the read's
    position in its translation block built in (tests/test_virtual_time.py checks the times
    against rdtsc's): each read follows a branch, which starts the block, by as many
    instructions as it adds, and no jump lands in between."""
    m = booted()
    base, end = m.tracing.code_range
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    cs.detail = True
    code = list(cs.disasm(m.read(base, end - base), base))
    def ends_block(i) -> bool:
        return any(i.group(g) for g in (CS_GRP_JUMP, CS_GRP_CALL, CS_GRP_RET, CS_GRP_INT))
    targets = {int(i.op_str, 16) for i in code if ends_block(i) and i.op_str.startswith("0x")}
    reads = [n for n, i in enumerate(code)
             if i.mnemonic == "imul" and f"gs:[0x{L.PCPU_PVCLOCK:x}]" in i.op_str]
    assert [m.lookup(code[n].address).split("+")[0] for n in reads] == [
        "function_trace_call_local", "return_to_handler", "function_graph_entry_local"]
    for n in reads:
        start = max(k for k in range(n) if ends_block(code[k])) + 1
        assert not targets & {i.address for i in code[start + 1:n + 1]}
        assert code[n + 1].op_str == f"rdx, qword ptr gs:[0x{L.PCPU_PVCLOCK + 8:x}]"
        assert code[n + 2].op_str == f"rdx, {hex((n - start) * L.NS_PER_INSN) if n > start else '0'}"
