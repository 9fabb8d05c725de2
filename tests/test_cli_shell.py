"""``ftemu shell``: the user's own shell on the guest's files, unmounted when it exits."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cli_helpers import ftemu

DEMO = "cat current_tracer; echo function > current_tracer; head -5 trace"


def _mounts(under: Path) -> list[str]:
    """Mounts at or below ``under`` (other users' ftemu mounts may come and go meanwhile)."""
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.split()[1].startswith(str(under))]


@pytest.mark.parametrize("private", [True, False])
def test_shell_runs_a_command_in_the_tracing_directory(require_tool, private, tmp_path,
                                                        monkeypatch):
    require_tool("fusermount3", "fuse3")
    if private and os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    flags = [] if private else ["--no-namespace"]
    monkeypatch.setenv("TMPDIR", str(tmp_path))          # the shell mounts under it
    r = ftemu("shell", *flags, "-c", f"{DEMO}; pwd; cat /proc/cmdline", timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:6] == ["nop", "# tracer: function", "#",
                       out[3], "#", "#                                _-----=> irqs-off/BH-disabled"]
    assert out[3].startswith("# entries-in-buffer/entries-written: ")
    if private:       # the guest's files at their real paths
        assert out[6:] == ["/sys/kernel/tracing", "console=ttyS0"]
    else:
        assert out[6].endswith("/sys/kernel/tracing") and out[6] != "/sys/kernel/tracing"
    assert _mounts(tmp_path) == [] and os.listdir(tmp_path) == []   # unmounted, removed


def test_shell_exit_status_is_the_shells(require_tool):
    require_tool("fusermount3", "fuse3")
    r = ftemu("shell", "--no-namespace", "-c", "exit 7", timeout=300)
    assert r.returncode == 7


def test_shell_flag_errors_are_one_line():
    r = ftemu("shell", "--cpus", "9", "-c", "true")
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        1, "ftemu shell: error: argument --cpus: must be 1..8, not 9")


MODULES = os.path.join(os.path.dirname(__file__), "modules")
# A live-patching session with the module commands, and kmod's words for what goes wrong.
SESSION = """
modprobe --dry-run klp-cmdline && echo "dry run: $(lsmod | wc -l) line"
modinfo -F livepatch klp_cmdline
echo "% modprobe klp_cmdline" > /dev/kmsg
modprobe klp_cmdline
cat /proc/cmdline
lsmod
cat /sys/module/klp_cmdline/refcnt
rmmod klp_cmdline
modprobe -r klp_cmdline
echo 0 > /sys/kernel/livepatch/klp_cmdline/enabled
while [ -e /sys/kernel/livepatch/klp_cmdline ]; do sleep 0.1; done
rmmod klp_cmdline && echo removed
rmmod klp_cmdline
modprobe -r klp_cmdline && echo "not loaded: fine for modprobe -r"
modprobe nosuch
insmod /nonexistent.ko
dmesg -t | grep -e klp_cmdline -e 'modprobe'
"""


def test_module_commands_act_on_the_guest(require_tool):
    require_tool("fusermount3", "fuse3")
    if os.geteuid() != 0:
        pytest.skip("/sys/kernel/livepatch and /dev/kmsg are the guest's only in a private "
                    "mount namespace, which needs root")
    r = ftemu("shell", "--module-dir", MODULES, "-c", SESSION, timeout=300)
    assert r.stdout.splitlines() == [
        "dry run: 1 line", "Y",
        "klp_cmdline: patched command line",
        "Module                  Size  Used by",
        "klp_cmdline             8192  1",
        "1",
        "removed",
        "not loaded: fine for modprobe -r",
        "% modprobe klp_cmdline",
        "klp_cmdline: tainting kernel with TAINT_LIVEPATCH",      # once a boot, as Linux
        "livepatch: enabling patch 'klp_cmdline'",
        "livepatch: 'klp_cmdline': initializing patching transition",
        "livepatch: 'klp_cmdline': starting patching transition",
        "livepatch: 'klp_cmdline': completing patching transition",
        "livepatch: 'klp_cmdline': patching complete",
        "livepatch: 'klp_cmdline': initializing unpatching transition",
        "livepatch: 'klp_cmdline': starting unpatching transition",
        "livepatch: 'klp_cmdline': completing unpatching transition",
        "livepatch: 'klp_cmdline': unpatching complete"]
    assert r.stderr.splitlines() == [
        "rmmod: ERROR: Module klp_cmdline is in use",
        "modprobe: FATAL: Module klp_cmdline is in use.",
        "rmmod: ERROR: Module klp_cmdline is not currently loaded",
        f"modprobe: FATAL: Module nosuch not found in directory {MODULES}",
        "insmod: ERROR: could not load module /nonexistent.ko: No such file or directory"]


def test_insmod_failure_uses_kmods_words(require_tool, tmp_path):
    """A module whose init fails: insmod and modprobe say it as kmod does."""
    require_tool("fusermount3", "fuse3")
    (tmp_path / "failing.c").write_text(
        "#include <linux/module.h>\n#include <linux/errno.h>\n"
        "static int failing_init(void) { return -ENODEV; }\nmodule_init(failing_init);\n"
        "MODULE_LICENSE(\"GPL\");\n")
    r = ftemu("shell", "--no-namespace", "--module-dir", str(tmp_path), "-c",
              "ko=$(modinfo -F filename failing); echo $ko; modprobe failing; insmod $ko; "
              "lsmod | wc -l; klp-explain", timeout=300)
    ko, count, explained = r.stdout.splitlines()
    assert ko.endswith("/failing.ko") and count == "1"
    assert explained == "no livepatch transition in progress"
    assert r.stderr.splitlines() == [
        "modprobe: ERROR: could not insert 'failing': No such device",
        f"insmod: ERROR: could not insert module {ko}: No such device"]


# A task sleeping in the function a patch replaces (as the kernel's test_klp_callbacks_busy
# with block_transition=Y): klp-explain names it, where it sleeps and what holds it, until
# the nap ends and the next retry completes the transition.
STALL = """
modprobe klp_sleeper nap_ms=6000
until dmesg | grep -q "sleeper_nap: sleeping"; do sleep 0.1; done
modprobe klp_sleeper_patch
klp-explain
until klp-explain | grep -q "^no livepatch"; do sleep 0.2; done
klp-explain
"""


def test_klp_explain_names_the_task_that_stalls_a_transition(require_tool):
    require_tool("fusermount3", "fuse3")
    r = ftemu("shell", "--no-namespace", "--module-dir", MODULES, "-c", STALL, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"'klp_sleeper_patch': patching transition in progress, "
                        r"[1-9]\d* attempt\(s\) so far", lines[0])
    assert re.fullmatch(r"kworker/u:\d+:\d+ is sleeping on function sleeper_nap \(pending\)",
                        lines[1])
    frames = [re.fullmatch(r"    (\w+)\+0x([0-9a-f]+)/0x([0-9a-f]+)( \[klp_sleeper\])?", ln)
              for ln in lines[2:-1]]
    assert all(frames) and all(int(f[2], 16) < int(f[3], 16) for f in frames)
    assert [f[1] + (f[4] or "") for f in frames] == [
        "__schedule", "schedule", "schedule_timeout", "msleep", "sleeper_nap [klp_sleeper]",
        "worker_thread", "ret_from_fork"]
    assert lines[-1] == "no livepatch transition in progress"
