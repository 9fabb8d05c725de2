"""How ``trace`` names tasks, as a user inspects and tunes it: ``saved_cmdlines`` (the pid ->
comm map), ``saved_cmdlines_size`` (its slots, rounded up to whole pages as the kernel's
allocation is; a resize starts an empty map), and the ``record-tgid`` option with
``saved_tgids`` and the TGID column."""
from __future__ import annotations

import errno

import pytest

from emu import Machine
from ftrace.trace_sched_switch import PID_MAX_DEFAULT, SavedCmdlines, cmdline_slots

FN = "trace_selftest_dynamic_test_func"


def booted(cpus: int = 1) -> Machine:
    m = Machine(cpus=cpus)
    m.boot()
    return m


def test_saved_cmdlines_size_reads_the_slots_the_kernel_allocation_gives():
    """128 asked for by default; the buffer is 64 pages, whose every slot is used: 6552.
    10000 needs 128 pages: 19659. 1 still takes 64 pages."""
    m = booted()
    tfs = m.tracefs
    assert tfs.read("saved_cmdlines_size") == "6552\n"
    tfs.write("saved_cmdlines_size", "10000\n")
    assert tfs.read("saved_cmdlines_size") == "19659\n"
    tfs.write("saved_cmdlines_size", "1")
    assert tfs.read("saved_cmdlines_size") == "6552\n"
    assert cmdline_slots(PID_MAX_DEFAULT) == 45874


@pytest.mark.parametrize("bad", ["0", str(PID_MAX_DEFAULT + 1), "12ab", "-1", "\n"])
def test_a_bad_saved_cmdlines_size_is_einval_and_changes_nothing(bad):
    m = booted()
    tfs = m.tracefs
    tfs.write("saved_cmdlines_size", "10000")
    before = tfs.read("saved_cmdlines")
    with pytest.raises(OSError) as e:
        tfs.write("saved_cmdlines_size", bad)
    assert e.value.errno == errno.EINVAL
    assert tfs.read("saved_cmdlines_size") == "19659\n"
    assert tfs.read("saved_cmdlines") == before


def test_saved_cmdlines_lists_slots_in_order_and_a_resize_forgets_the_old_names():
    """The first save takes slot 1; listing is by slot. The guest's tasks are saved when
    the file is read; a resize drops what was saved, so only live tasks come back."""
    m = booted()
    tfs = m.tracefs
    names = tfs.read("saved_cmdlines").splitlines()
    assert names[0] == "1 init" and all(line.split(" ", 1)[0].isdigit() for line in names)
    m.tracing.cmdlines.save(4242, "gone-task")          # a task that has since exited
    assert tfs.read("saved_cmdlines").splitlines() == names + ["4242 gone-task"]
    tfs.write("saved_cmdlines_size", "200")
    assert tfs.read("saved_cmdlines").splitlines() == names


def test_a_reused_slot_forgets_its_old_pid_which_then_prints_as_unknown():
    """With every slot taken, the next new pid reuses the slot after the last one used (the
    oldest), and the pid that had it is no longer known (``<...>`` in trace). A pid that
    shares the low 15 bits with another finds that one's slot and is not taken for it."""
    s = SavedCmdlines(1)
    for pid in range(1, s.num + 1):
        s.save(pid, f"t{pid}")
    assert s.find(1) == "t1" and s.find(s.num) == "t0"[:1] + str(s.num)
    s.save(50000, "newcomer")                          # takes slot 1: pid 1's
    assert s.find(1) is None and s.find(50000) == "newcomer"
    assert s.find(50000 - PID_MAX_DEFAULT) is None     # aliases pid 50000's slot
    assert s.text().splitlines()[:2] == [f"{s.num} t{s.num}", "50000 newcomer"]
    s.save(0, "swapper")
    assert s.find(0) == "<idle>"


def test_record_tgid_fills_saved_tgids_and_adds_the_tgid_column():
    """saved_tgids stays empty until an array turns record-tgid on; the guest's tasks are
    single-threaded (tgid = pid) and the idle task is never saved: ``(-------)``."""
    m = booted(cpus=2)
    tfs = m.tracefs
    assert tfs.read("saved_tgids") == ""
    tfs.write("set_ftrace_filter", FN)
    tfs.write("current_tracer", "function")
    tfs.write("options/record-tgid", "1")
    m.call(FN, cpu=0)
    m.call(FN, cpu=1)
    tgids = tfs.read("saved_tgids").splitlines()
    assert tgids[0] == "1 1" and all(a == b for a, b in (line.split() for line in tgids))
    text = tfs.read("trace")
    assert "#           TASK-PID       TGID    CPU#  |||||  TIMESTAMP  FUNCTION\n" in text
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert sorted(line[:41] for line in lines) == ["            init-1       (      1) [000] ",
                                                   "          <idle>-0       (-------) [001] "]
    tfs.write("options/record-tgid", "0")
    assert tfs.read("saved_tgids") == "\n".join(tgids) + "\n"     # kept, no longer filled
    assert "(      1)" not in tfs.read("trace")
