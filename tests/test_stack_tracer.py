"""The stack tracer as ftrace.rst tells a user to run it: ``echo 1 >
/proc/sys/kernel/stack_tracer_enabled`` (or ``stacktrace`` on the kernel command line), let
the guest run, ``cat stack_max_size stack_trace``; ``stack_trace_filter`` picks the
functions checked. Each traced call measures its depth in guest code; only a new maximum
records the stack."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from ftrace.trace_stack import DISABLED_HELP, stack_trace_text

GOLDEN = Path(__file__).parent / "golden"
SYSCTL = "/proc/sys/kernel/stack_tracer_enabled"
HEADER = "        Depth    Size   Location    ({} entries)\n        -----    ----   --------\n"
ROW = re.compile(r"^ *(\d+)\) +(\d+) +(\d+)   (\S+)$")


def rows(text: str) -> list[tuple[int, int, int, str]]:
    """(index, depth, size, location) of each row of ``stack_trace``."""
    lines = text.splitlines()
    assert text.startswith(HEADER.format(len(lines) - 2))
    return [(int(a), int(b), int(c), d) for a, b, c, d in (ROW.match(x).groups() for x in lines[2:])]


@pytest.fixture
def m(machine_factory):
    return machine_factory(cpus=2)


def test_stack_trace_golden(m):
    """The deepest stack at a spin_lock_irqsave call during 10 ms of the guest, byte for
    byte from a deterministic run (regenerate with FTEMU_REGEN_GOLDEN=1)."""
    m.tracefs.write("stack_trace_filter", "spin_lock_irqsave")
    m.fs.write(SYSCTL, "1")
    m.run(10)
    text = m.tracefs.read("stack_trace")
    if os.environ.get("FTEMU_REGEN_GOLDEN"):
        (GOLDEN / "stack_trace_spin_lock.txt").write_text(text)
    assert text == (GOLDEN / "stack_trace_spin_lock.txt").read_text()


def test_before_it_ever_runs_stack_trace_says_how_to_enable_it(m):
    assert m.fs.read(SYSCTL) == "0\n"
    assert m.tracefs.read("stack_max_size") == "0\n"
    assert m.tracefs.read("stack_trace") == HEADER.format(0) + DISABLED_HELP
    assert m.tracefs.read("stack_trace_filter") == "#### all functions enabled ####\n"


def test_the_deepest_stack_and_its_frames(m):
    """Row 0 is the traced function itself (its return address into the tracer, +0x5); each
    row's size is its depth less the next row's; stack_max_size is row 0's depth."""
    m.fs.write(SYSCTL, "1")
    assert "stack_trace_call" in m.tracefs.read("enabled_functions")
    m.run(10)
    found = rows(m.tracefs.read("stack_trace"))
    assert len(found) >= 3
    assert [r[0] for r in found] == list(range(len(found)))
    assert int(m.tracefs.read("stack_max_size")) == found[0][1]
    assert re.fullmatch(r"\w+\+0x5/0x[0-9a-f]+", found[0][3])
    for (_, depth, size, _), nxt in zip(found, found[1:] + [(0, 0, 0, "")]):
        assert size == depth - nxt[1] > 0
    assert found[-1][3].startswith(("entry_SYSCALL_64+", "asm_", "secondary_startup_64+",
                                    "start_kernel+", "kernel_thread_entry"))


def test_a_filter_limits_the_check_to_its_functions(m):
    """func_stack_tracer.tc's check: with ``*lock*`` every new maximum is taken at a lock
    function, so row 0 names one."""
    t = m.tracefs
    t.write("stack_trace_filter", "*lock*")
    listed = t.read("stack_trace_filter").splitlines()
    assert listed and all("lock" in name for name in listed)
    m.fs.write(SYSCTL, "1")
    m.run(10)
    assert "lock" in rows(t.read("stack_trace"))[0][3].split("+")[0]
    assert all("lock" in line.split()[0] for line in t.read("enabled_functions").splitlines())


def test_stack_max_size_is_writable_and_zero_starts_over(m):
    t = m.tracefs
    t.write("stack_trace_filter", "spin_lock_irqsave")
    m.fs.write(SYSCTL, "1")
    m.run(10)
    deepest = int(t.read("stack_max_size"))
    t.write("stack_max_size", "100000")
    m.run(10)
    assert t.read("stack_max_size") == "100000\n"     # nothing that deep: no new maximum
    t.write("stack_max_size", "0")
    m.run(10)
    assert 0 < int(t.read("stack_max_size")) <= deepest
    for bad in ("-1", "abc", "0x10"):
        with pytest.raises(OSError) as e:
            t.write("stack_max_size", bad)
        assert e.value.errno == errno.EINVAL


def test_the_sysctl_registers_and_unregisters_the_tracer(m):
    t = m.tracefs
    m.fs.write(SYSCTL, "2")                         # proc_dointvec: kept as written
    assert m.fs.read(SYSCTL) == "2\n"
    assert "stack_trace_call" in t.read("enabled_functions")
    m.fs.write(SYSCTL, "0")
    assert "stack_trace_call" not in t.read("enabled_functions")
    m.run(5)
    frozen = t.read("stack_trace")
    t.write("stack_max_size", "0")
    m.run(5)
    assert t.read("stack_trace") == frozen           # off: nothing measured
    with pytest.raises(OSError) as e:
        m.fs.write(SYSCTL, "on")
    assert e.value.errno == errno.EINVAL and m.fs.read(SYSCTL) == "0\n"


def test_stack_trace_filter_takes_no_commands(m):
    t = m.tracefs
    for bad in ("schedule:traceoff", "no_such_function_anywhere"):
        with pytest.raises(OSError) as e:
            t.write("stack_trace_filter", bad)
        assert e.value.errno == errno.EINVAL
    t.write("stack_trace_filter", "kalloc")
    t.write("stack_trace_filter", "kfree", append=True)
    assert t.read("stack_trace_filter") == "kalloc\nkfree\n" or \
        t.read("stack_trace_filter") == "kfree\nkalloc\n"
    assert t.read("set_ftrace_filter") == "#### all functions enabled ####\n"


def test_the_stacktrace_boot_option_starts_it_with_a_filter(machine_factory):
    m = machine_factory(cpus=1, cmdline="console=ttyS0 stacktrace_filter=kalloc,kfree")
    assert m.fs.read(SYSCTL) == "1\n"
    assert m.tracefs.read("stack_trace_filter") in ("kalloc\nkfree\n", "kfree\nkalloc\n")
    assert rows(m.tracefs.read("stack_trace"))[0][3].startswith(("kalloc+0x5/", "kfree+0x5/"))


def test_the_text_format_is_the_kernels():
    assert stack_trace_text([(744, "a+0x5/0x66"), (728, "b+0x16/0x75"), (176, "c+0x5a/0x94")], False) == (
        HEADER.format(3)
        + "  0)      744      16   a+0x5/0x66\n"
        + "  1)      728     552   b+0x16/0x75\n"
        + "  2)      176     176   c+0x5a/0x94\n")
