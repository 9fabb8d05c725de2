"""The livepatch selftests' verbs (tools/testing/selftests/livepatch/functions.sh of Linux
6.1) in Python, on a machine: each verb logs the line the script logs through /dev/kmsg
("% modprobe X a=1", "% rmmod X" ...), acts with m.insmod / m.rmmod / m.fs and waits as the
script's loop_until does, in 100 ms steps of guest time. ``result()`` filters the new log
lines as check_result does; ``expected(script, test)`` reads check_result's text for one test
out of the kernel's own script, so the kernel's selftests stay the judge."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from emu.module import ModuleError

SYS = "/sys/kernel/livepatch"
MAX_RETRIES = 600          # functions.sh: 600 tries, 0.1 s apart


class KlpSelftest:
    def __init__(self, m, modules: dict[str, Path]) -> None:
        self.m, self.modules = m, modules
        self.start = len(m.dmesg.splitlines())

    # ---- functions.sh ---------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.m.printk(text, 4)

    def loop_until(self, cond, what: str) -> None:
        for _ in range(MAX_RETRIES):
            if cond():
                return
            self.m.run(ms=100)
        raise AssertionError(f"failed to {what}")

    def load_mod(self, name: str, *params: str) -> None:
        self.log(" ".join(["% modprobe", name, *params]))
        self.m.insmod(self.modules[name], " ".join(params))
        self.loop_until(lambda: self.m.fs.exists(f"/sys/module/{name}"), f"load module {name}")

    def load_lp_nowait(self, name: str, *params: str) -> None:
        self.load_mod(name, *params)
        self.loop_until(lambda: self.m.fs.exists(f"{SYS}/{name}"), f"load module {name} (sysfs)")

    def load_lp(self, name: str, *params: str) -> None:
        self.load_lp_nowait(name, *params)
        self.loop_until(lambda: self.m.fs.read(f"{SYS}/{name}/transition") == "0\n",
                        "complete transition")

    def load_failing_mod(self, name: str, *params: str) -> int:
        """The errno of the refused insmod; modprobe's error line goes to the log."""
        self.log(" ".join(["% modprobe", name, *params]))
        try:
            self.m.insmod(self.modules[name], " ".join(params))
        except ModuleError as e:
            self.log(f"modprobe: ERROR: could not insert '{name}': {os.strerror(e.errno)}")
            return e.errno
        raise AssertionError(f"{name} unexpectedly loaded")

    def unload_mod(self, name: str) -> None:
        self.loop_until(lambda: self.m.fs.read(f"/sys/module/{name}/refcnt") == "0\n",
                        f"unload module {name} (refcnt)")
        self.log(f"% rmmod {name}")
        self.m.rmmod(name)
        self.loop_until(lambda: not self.m.fs.exists(f"/sys/module/{name}"),
                        f"unload module {name} (/sys/module)")

    unload_lp = unload_mod

    def disable_lp(self, name: str) -> None:
        self.log(f"% echo 0 > {SYS}/{name}/enabled")
        self.m.fs.write(f"{SYS}/{name}/enabled", "0")
        self.loop_until(lambda: not self.m.fs.exists(f"{SYS}/{name}"), f"disable livepatch {name}")

    def set_pre_patch_ret(self, name: str, ret: int) -> None:
        path = f"/sys/module/{name}/parameters/pre_patch_ret"
        self.log(f"% echo {ret} > {path}")
        self.m.fs.write(path, str(ret))
        self.loop_until(lambda: self.m.fs.read(path) == f"{ret}\n", "set pre_patch_ret")

    def set_ftrace_enabled(self, value: int, can_fail: bool = False) -> None:
        """sysctl kernel.ftrace_enabled=value; the script logs the outcome."""
        try:
            self.m.fs.write("/proc/sys/kernel/ftrace_enabled", str(value))
        except OSError as e:
            assert can_fail and e.errno == errno.EBUSY, e
            self.log('livepatch: sysctl: setting key "kernel.ftrace_enabled": '
                     f"{os.strerror(e.errno)}")
            return
        self.log(f"livepatch: kernel.ftrace_enabled = {value}")

    def grep_to_kmsg(self, pattern: str, path: str) -> None:
        """grep 'pattern' path > /dev/kmsg."""
        for line in self.m.fs.read(path).splitlines():
            if pattern in line:
                self.log(line)

    def wait_transition(self, name: str, value: int) -> None:
        """loop_until 'grep -q ^value$ /sys/kernel/livepatch/name/transition'."""
        self.loop_until(lambda: self.m.fs.read(f"{SYS}/{name}/transition") == f"{value}\n",
                        f"see transition {value}")

    def assert_file(self, path: str, text: str) -> None:
        """The scripts' [[ "$(cat path)" == ... ]] checks."""
        assert self.m.fs.read(path) == text, path

    def result(self) -> str:
        """check_result's filter: the new lines of livepatch and of the test modules."""
        lines = self.m.dmesg.splitlines()[self.start:]
        self.start += len(lines)
        keep = [ln for ln in lines if ("livepatch:" in ln or "test_klp" in ln)
                and not re.search(r"(tainting|taints) kernel", ln)]
        return "\n".join(keep)


def expected(script: Path, test: str) -> str:
    """check_result's text for ``start_test "test"`` in one of the kernel's scripts, with the
    script's MOD_* variables (as set when that test runs) put in."""
    text = script.read_text()
    at = text.index(f'start_test "{test}"')
    vars_ = dict(re.findall(r"^(MOD_\w+)=(\S+)$", text[:at], re.M))
    body = text[at:]
    vars_.update(re.findall(r"^(MOD_\w+)=(\S+)$", body[:body.index("check_result")], re.M))
    want = re.search(r'check_result "((?:[^"\\]|\\.)*)"', body, re.S).group(1)
    want = re.sub(r"\$\{?(MOD_\w+)\}?", lambda mo: vars_[mo.group(1)], want)
    return want.replace('\\"', '"')
