"""The pytest plugin as a suite writer meets it: an example suite run by pytest in a
subprocess (the plugin comes from the installed package's ``pytest11`` entry point), alone
and under pytest-xdist with two workers."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

EXAMPLE_SUITE = '''
"""An example suite, as a user of the ftemu pytest plugin writes one."""
import pytest
from emu import EmuError
from ftrace import FtraceOps


def test_schedule_runs_in_task_context_and_wakes_tasks(machine):
    with machine.tracing("schedule", "try_to_wake_up") as t:
        machine.run(ms=5)
    assert t.count("schedule") > 0 and t.contexts("schedule") == {"normal"}
    assert t.ran("try_to_wake_up") and set(t.order) == {"schedule", "try_to_wake_up"}
    assert t.cpus("schedule") <= {0, 1}


def test_1_changes_leave_with_the_test(machine):
    machine.write(machine.symbol_address("nr_cpus_present"), (99).to_bytes(4, "little"))
    ops = FtraceOps(lambda ip, parent_ip, op, regs: None)
    machine.ftrace.ftrace_set_filter(ops, "schedule", True)
    machine.ftrace.register_ftrace_function(ops)
    machine.run(ms=1)


def test_2_the_next_test_gets_the_machine_as_booted(machine):
    assert machine.read(machine.symbol_address("nr_cpus_present"), 4) == (2).to_bytes(4, "little")
    assert "schedule" not in machine.ftrace.enabled_functions


@pytest.mark.machine(cpus=4)
def test_the_marker_shapes_the_machine(machine):
    assert len(machine.cpus) == 4 and machine.online_cpus() == [0, 1, 2, 3]


def test_the_factory_makes_other_shapes_and_distinct_machines(machine_factory):
    a, b = machine_factory(cpus=1), machine_factory(cpus=1)
    assert a is not b and len(a.cpus) == len(b.cpus) == 1


def test_fails_with_the_machine_report(machine):
    with machine.tracing("schedule") as t:
        machine.run(ms=3)
    assert t.count("schedule") == 0


def test_a_raising_callback_fails_the_test(machine):
    def callback(ip, parent_ip, op, regs):
        raise RuntimeError("callback bug")
    ops = FtraceOps(callback)
    machine.ftrace.ftrace_set_filter(ops, "try_to_wake_up", True)
    machine.ftrace.register_ftrace_function(ops)
    machine.run(ms=10)


def test_a_swallowed_panic_fails_the_test(machine):
    try:
        machine.call("panic", machine.symbol_address("saved_command_line"))
    except EmuError:
        pass


@pytest.mark.machine(allow_panic=True)
def test_an_expected_panic_passes(machine):
    with pytest.raises(EmuError, match="panic: console=ttyS0"):
        machine.call("panic", machine.symbol_address("saved_command_line"))
'''

PASSING = ["test_schedule_runs_in_task_context_and_wakes_tasks", "test_1_changes_leave_with_the_test",
           "test_2_the_next_test_gets_the_machine_as_booted", "test_the_marker_shapes_the_machine",
           "test_the_factory_makes_other_shapes_and_distinct_machines", "test_an_expected_panic_passes"]
FAILING = ["test_fails_with_the_machine_report", "test_a_raising_callback_fails_the_test",
           "test_a_swallowed_panic_fails_the_test"]


def run_suite(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_example_suite.py").write_text(textwrap.dedent(EXAMPLE_SUITE))
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           "test_example_suite.py", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def outcomes(stdout: str) -> dict[str, str]:
    return dict((name, outcome) for outcome, name in
                re.findall(r"^(PASSED|FAILED|ERROR) test_example_suite\.py::(\w+)", stdout, re.M))


def failure_section(stdout: str, test: str) -> str:
    return stdout.split(f"_ {test} _", 1)[1].split("\n___", 1)[0]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return run_suite(tmp_path_factory.mktemp("suite"))


def test_passing_and_failing_tests_are_told_apart(plain_run):
    got = outcomes(plain_run.stdout)
    assert got == {**{t: "PASSED" for t in PASSING}, **{t: "FAILED" for t in FAILING}}, plain_run.stdout
    assert plain_run.returncode == 1


def test_a_failure_shows_console_cpus_backtraces_and_trace(plain_run):
    section = failure_section(plain_run.stdout, "test_fails_with_the_machine_report")
    assert "assert t.count(\"schedule\") == 0" in section
    report = section.split("- ftemu machine 0 -", 1)[1]
    assert re.search(r"--- machine 0: 2 CPUs, [\d.]+ ms virtual\n--- console \(last \d+ lines\)\n", report)
    assert "init: up" in report
    cpus = re.findall(r"^CPU (\d) (running|halted|parked): \w+\+0x[0-9a-f]+/0x[0-9a-f]+", report, re.M)
    assert [c for c, _ in cpus] == ["0", "1"]
    assert re.search(r"^    \w+\+0x[0-9a-f]+/0x[0-9a-f]+$", report, re.M)          # backtrace frames
    assert re.search(r"--- m.tracing\('schedule'\): last \d+ of \d+ calls\n", report)
    assert re.search(r"^ +\S+-\d+ +\[00\d\] +normal +[\d.]+: schedule <-\w+\+0x", report, re.M)


def test_a_raising_callback_and_a_swallowed_panic_fail_with_the_report(plain_run):
    callback = failure_section(plain_run.stdout, "test_a_raising_callback_fails_the_test")
    assert "CallbackError: ftrace callback" in callback and "callback bug" in callback
    assert "- ftemu machine 0 -" in callback
    panic = failure_section(plain_run.stdout, "test_a_swallowed_panic_fails_the_test")
    assert ("the guest panicked during the test (panic: console=ttyS0); "
            "@pytest.mark.machine(allow_panic=True) permits it") in panic
    assert re.search(r"--- machine 0: 2 CPUs, [\d.]+ ms virtual, exit code \d+", panic)


def test_boots_are_shared_per_shape_and_setup_overhead_is_reported(plain_run):
    m = re.search(r"^ftemu: (\d+) boot\(s\) \(([\d.]+)/([\d.]+)/([\d.]+) ms min/median/max\), "
                  r"(\d+) restored machine fixture\(s\), setup ([\d.]+)/([\d.]+)/([\d.]+) ms "
                  r"min/median/max per test$", plain_run.stdout, re.M)
    assert m, plain_run.stdout[-2000:]
    # Shapes: 2 CPUs (the default), 4 CPUs (the marker), and two 1-CPU machines at once;
    # 8 tests take the machine fixture, one takes two machines from the factory.
    boots, restored = int(m.group(1)), int(m.group(5))
    assert boots == 4 and restored == 8 + 2 - boots


def test_under_xdist_each_worker_has_its_own_machines(tmp_path):
    r = run_suite(tmp_path, "-n", "2", "-k", "not changes and not next_test")
    assert re.search(r"created: 2/2 workers", r.stdout), r.stdout[-2000:]
    expected = {t: "PASSED" for t in PASSING if "changes" not in t and "next_test" not in t}
    assert outcomes(r.stdout) == {**expected, **{t: "FAILED" for t in FAILING}}
    assert "- ftemu machine 0 -" in failure_section(r.stdout, "test_fails_with_the_machine_report")
    boots = re.search(r"^ftemu: (\d+) boot\(s\) .*\(from 2 xdist workers\)$", r.stdout, re.M)
    assert boots and int(boots.group(1)) >= 2            # every worker booted its own
