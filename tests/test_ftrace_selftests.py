"""The kernel's own ftrace selftests (tools/testing/selftests/ftrace/test.d/ftrace/) as the
judge: each script runs unchanged against ``ftemu mount``, through the kernel's
test.d/functions and ftracetest's conventions (tests/ftracetest_case.sh), and again inside
an instance for ``flags: instance`` scripts.

The scripts come from Debian's linux-source package (.ci/run installs it), extracted once
into ~/.cache/ftemu. Where a script reads a host path for what only the guest has, the
case runs in a private mount namespace in which the guest's files are bind-mounted over
the host's: /proc/kallsyms (test.d/functions picks the fork function from it),
/proc/sys/kernel (stack_tracer_enabled) and /sys/devices/system/cpu (the cpumask and
hotplug scripts). ``read PID _ < /proc/self/stat`` still gives the script's own host pid:
no guest task is that shell, so the pid-filter scripts cannot be mapped (listed below).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import kernel_source
import pytest
from mount_helpers import TRACING, mount_log, start_mount, stop_mount

CASE_RUNNER = Path(__file__).parent / "ftracetest_case.sh"

# Scripts that cannot apply to ftemu's guest, and why (never run).
NOT_APPLICABLE = {
    "func_mod_trace.tc": "modprobes the kernel's trace_printk module",
    "func-filter-pid.tc": "filters on its own shell's host pid (read from /proc/self/stat); "
                          "no guest task is that shell, so the pid cannot be mapped",
    "func-filter-notrace-pid.tc": "filters on its own shell's host pid (/proc/self/stat)",
    "func-filter-stacktrace.tc": "forks a host process and expects the kernel's fork function "
                                 "(kernel_clone) in the guest's trace",
    "fgraph-retval.tc": "writes the host's /proc/interrupts and traces proc_reg_write",
    "tracing-error-log.tc": "writes a bad filter to events/signal/signal_generate/filter: ftemu has "
                            "neither that event nor event filters (its error_log stays empty)",
}
# Scripts that apply but fail today, with the reason; the rest must pass.
BLOCKED = {
}


EXPECTED_PASS: set[str] = {"fgraph-filter.tc", "fgraph-multi.tc", "func-filter-glob.tc",
                           "func_cpumask.tc", "func_hotplug.tc", "func_set_ftrace_file.tc",
                           "fgraph-filter-stack.tc", "fgraph-profiler.tc", "func_profiler.tc",
                           "func_profile_stat.tc", "func_stack_tracer.tc"}
EXPECTED_PASS |= {"func_event_triggers.tc",       # the events' soft mode (event_enable.py)
                  "func_traceonoff_triggers.tc"}  # its shell's opens run as a guest task (requester)
# The guest's hotplugd takes its highest CPU down and up every 50 ms by default (a stress
# feature of ftemu's guest, not something a kernel does): #P in trace's header would change
# between two reads that func_traceonoff_triggers compares, and func_hotplug's own hotplug
# would race it. The scripts hotplug themselves.
GUEST_CMDLINE = "console=ttyS0 hotplug_cycle=0"
# Beyond test.d/ftrace: the scripts that judge the files every tracing user meets first and
# the instances/ machinery (mkdir/rmdir from five shells at once). Named from test.d/.
OTHER_PASS = ["00basic/basic1.tc", "00basic/basic2.tc", "00basic/basic3.tc",
              "00basic/trace_pipe.tc", "00basic/ringbuffer_size.tc", "00basic/snapshot.tc",
              "00basic/snapshot1.tc", "00basic/trace_marker.tc", "instances/instance.tc", "instances/instance-event.tc"]
OTHER_BLOCKED: dict[str, str] = {     # run last: a guest panic ends the mount
}
BLOCKED.update(OTHER_BLOCKED)
APPLICABLE = sorted(set(BLOCKED) - set(OTHER_BLOCKED) | EXPECTED_PASS) + OTHER_PASS + \
    list(OTHER_BLOCKED)


def newest_kernel_source() -> str:
    """The newest installed linux-source release (6.12 where .ci/run installed both)."""
    versions = [p.name.removeprefix("linux-source-").removesuffix(".tar.xz")
                for p in Path("/usr/src").glob("linux-source-*.tar.xz")]
    return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")), default="6.12")


@pytest.fixture(scope="module")
def selftests(require_tool) -> Path:
    """tools/testing/selftests/ftrace of the installed kernel source, extracted once."""
    top = kernel_source.extract(newest_kernel_source(), require_tool,
                                "tools/testing/selftests/ftrace")
    return top / "tools/testing/selftests/ftrace"


def flags_of(case: Path) -> str:
    m = re.search(r"^#\s*flags:(.*)$", case.read_text(), re.M)
    return m.group(1) if m else ""


CASE_TIMEOUT_S = 120      # a case takes seconds on a quiet machine


def run_case(ktest: Path, root: Path, case: Path, instance: bool) -> tuple[str, str]:
    """Run one script as ftracetest would; returns (result, log)."""
    tracing = root / TRACING
    runner = f"sh {CASE_RUNNER} {ktest} {tracing} {case}{' instance' if instance else ''}"
    binds = [(root / "proc/kallsyms", "/proc/kallsyms"),
             (root / "proc/sys/kernel", "/proc/sys/kernel"),
             (root / "sys/devices/system/cpu", "/sys/devices/system/cpu")]
    script = "".join(f"mount --bind {src} {dst} && " for src, dst in binds) + runner
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    # Its own session and a scratch directory: on a timeout the whole process group goes (a
    # grandchild holding the pipes would otherwise keep the run waiting), and a script whose
    # `cd` failed writes its files there, not into the test's directory.
    with tempfile.TemporaryDirectory() as scratch:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=scratch, start_new_session=True)
        try:
            out, err = p.communicate(timeout=CASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            return "TIMEOUT", out + err
    found = re.findall(r"^RESULT (\w+)$", out, re.M)
    return (found[-1] if found else f"ERROR({p.returncode})"), out + err


@pytest.fixture(scope="module")
def results(selftests, tmp_path_factory, require_tool) -> dict[str, tuple[str, str]]:
    """Every applicable script (and its instance rerun), on one mount."""
    require_tool("fusermount3", "fuse3")
    require_tool("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("the selftests need root (private mount namespace, as ftracetest)")
    root = tmp_path_factory.mktemp("guestroot")
    proc = start_mount(root, "--cmdline", GUEST_CMDLINE)
    out: dict[str, tuple[str, str]] = {}
    try:
        for name in APPLICABLE:
            if proc.poll() is not None:     # the guest panicked: every case left fails with why
                out[name] = (f"MOUNT EXITED({proc.returncode})", mount_log(proc))
                continue
            case = selftests / "test.d" / (name if "/" in name else f"ftrace/{name}")
            out[name] = run_case(selftests, root, case, instance=False)
            if "instance" in flags_of(case):
                out[name + " (instance)"] = run_case(selftests, root, case, instance=True)
            if proc.poll() is not None:
                result, log = out[name]
                out[name] = result, f"{log}\n--- ftemu mount exited {proc.returncode} ---\n{mount_log(proc)}"
    finally:
        try:                # how the mount ends is test_mount's business, not the scripts'
            stop_mount(proc, root)
        except subprocess.TimeoutExpired:
            pass
    return out


def test_every_script_is_accounted_for(selftests):
    scripts = {p.name for p in (selftests / "test.d/ftrace").glob("*.tc")}
    listed = {name for name in set(NOT_APPLICABLE) | set(BLOCKED) | EXPECTED_PASS if "/" not in name}
    assert scripts == listed
    assert not set(NOT_APPLICABLE) & set(BLOCKED) and not set(BLOCKED) & set(EXPECTED_PASS)


@pytest.mark.parametrize("name", APPLICABLE)
def test_kernel_selftest(results, name):
    """PASS, as ftracetest reports it (also inside an instance for ``flags: instance``); a
    script listed in BLOCKED is an expected failure until what it needs is there."""
    failed = [(key, *results[key]) for key in (name, name + " (instance)")
              if key in results and results[key][0] != "PASS"]
    if failed and name in BLOCKED:
        pytest.xfail(BLOCKED[name])
    assert not failed, "\n".join(f"{k}: {r}\n{log[-3000:]}" for k, r, log in failed)
