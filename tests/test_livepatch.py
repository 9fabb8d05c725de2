"""Live patching as an engineer does it: build a patch module, insmod it, watch the
transition in dmesg and /sys/kernel/livepatch, see the patched code run, disable, rmmod."""
from __future__ import annotations

import errno

import pytest

from emu.module import ModuleError
from ftrace import FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_SAVE_REGS, FtraceError, FtraceOps

SYS = "/sys/kernel/livepatch"
DYNAMIC_DEBUG = "/sys/kernel/debug/dynamic_debug/control"


class Log:
    """The dmesg lines a test produced, filtered as the kernel selftests' check_result does
    (lines of livepatch and of the test modules, not the taint notices)."""

    def __init__(self, m, *names: str) -> None:
        self.m, self.names = m, ("livepatch:",) + tuple(f"{n}:" for n in names)
        self.start = len(m.dmesg.splitlines())

    def new(self) -> list[str]:
        lines = self.m.dmesg.splitlines()
        out, self.start = lines[self.start:], len(lines)
        return [ln for ln in out if ln.startswith(self.names) and "tainting kernel" not in ln]


def transcript(name: str, state: str) -> list[str]:
    return [f"livepatch: '{name}': initializing {state} transition",
            f"livepatch: '{name}': starting {state} transition",
            f"livepatch: '{name}': completing {state} transition",
            f"livepatch: '{name}': {state} complete"]


def test_patch_replaces_proc_cmdline_then_unpatch(booted_snapshots, kmod):
    m = booted_snapshots(2)
    log = Log(m, "klp_cmdline")
    assert m.fs.read("/proc/cmdline") == "console=ttyS0\n"
    mod = m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)                                      # at most one retry of the transition
    assert log.new() == ["livepatch: enabling patch 'klp_cmdline'"] + transcript("klp_cmdline", "patching")
    assert m.fs.read("/proc/cmdline") == "klp_cmdline: patched command line\n"
    d = f"{SYS}/klp_cmdline"
    assert sorted(m.fs.listdir(d)) == ["enabled", "force", "replace", "stack_order", "transition", "vmlinux"]
    assert [m.fs.read(f"{d}/{f}") for f in ("enabled", "transition", "replace", "stack_order")] == \
        ["1\n", "0\n", "0\n", "1\n"]
    assert m.fs.listdir(f"{d}/vmlinux") == ["patched", "cmdline_proc_show,1"]
    assert m.fs.read(f"{d}/vmlinux/patched") == "1\n"
    # the kernel's flags on x86-64 (WITH_ARGS): IPMODIFY without SAVE_REGS, so no R, and the
    # ops' own trampoline is the ftrace_regs one (Frame.ARGS: 0xd8 bytes)
    assert m.ftrace.enabled_functions.startswith(
        "cmdline_proc_show (1)   I     M \ttramp: ftrace_trampoline+0x0/0xd8 [__builtin__ftrace] "
        "(klp_ftrace_handler+0x0/")
    with pytest.raises(ModuleError) as e:                # the patch holds its module
        m.rmmod("klp_cmdline")
    assert e.value.errno == errno.EBUSY

    m.fs.write(f"{d}/enabled", "0")
    m.run(ms=1100)
    assert log.new() == transcript("klp_cmdline", "unpatching")
    assert m.fs.read("/proc/cmdline") == "console=ttyS0\n"
    assert "klp_cmdline" not in m.fs.listdir(SYS)
    assert m.modules.refcnt(mod) == 0
    m.rmmod("klp_cmdline")
    assert "cmdline_proc_show" not in m.ftrace.enabled_functions


def test_sysfs_writes_fail_with_the_kernels_errno(booted_snapshots, kmod):
    m = booted_snapshots(1)
    m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)
    d = f"{SYS}/klp_cmdline"
    for path, text, err in [(f"{d}/enabled", "maybe", errno.EINVAL),   # not a boolean
                            (f"{d}/enabled", "1", errno.EINVAL),       # already enabled
                            (f"{d}/force", "1", errno.EINVAL),         # no transition
                            (f"{d}/transition", "1", errno.EACCES)]:   # read-only
        with pytest.raises(OSError) as e:
            m.fs.write(path, text)
        assert e.value.errno == err, path
    with pytest.raises(OSError) as e:
        m.fs.read(f"{d}/force")                                     # write-only
    assert e.value.errno == errno.EACCES
    assert m.fs.read(f"{d}/enabled") == "1\n"


def test_ftrace_sees_the_patch_as_ipmodify_and_permanent(booted_snapshots, kmod):
    m = booted_snapshots(1)
    m.insmod(kmod("klp-cmdline"))
    ft = m.ftrace
    other = FtraceOps(lambda *a: None, FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter(other, "cmdline_proc_show", True)
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(other)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(FtraceError) as e:
        ft.ftrace_enabled = 0
    assert e.value.errno == errno.EBUSY and ft.ftrace_enabled == 1


def test_a_patched_function_can_be_traced_and_stays_patched(booted_snapshots, kmod):
    # With the function tracer on it too, the site calls the shared ftrace_caller and the
    # list function: klp's handler sets the ip in ftrace_caller's ftrace_regs, which the
    # kernel's ftrace_caller honours as its own trampoline does; the trace shows the call.
    m = booted_snapshots(1)
    m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)
    m.tracefs.write("set_ftrace_filter", "cmdline_proc_show")
    m.tracefs.write("current_tracer", "function")
    assert m.ftrace.enabled_functions.startswith("cmdline_proc_show (2)   I     M ")
    assert m.fs.read("/proc/cmdline") == "klp_cmdline: patched command line\n"
    assert [ln.split()[-2] for ln in m.tracefs.read("trace").splitlines()
            if not ln.startswith("#")] == ["cmdline_proc_show"]
    m.tracefs.write("current_tracer", "nop")
    assert m.fs.read("/proc/cmdline") == "klp_cmdline: patched command line\n"


def stalled(booted_snapshots, kmod, cpus: int = 2, nap_ms: int = 5000, debug: str = ""):
    """A machine where klp_sleeper's work sleeps in sleeper_nap while a patch of it loads
    (``debug``: a dynamic debug query to apply first)."""
    m = booted_snapshots(cpus)
    if debug:
        m.fs.write(DYNAMIC_DEBUG, debug)
    m.insmod(kmod("klp-sleeper"), f"nap_ms={nap_ms}")
    m.run(ms=10)
    m.insmod(kmod("klp-sleeper-patch"))
    m.run(ms=1100)
    assert m.fs.read(f"{SYS}/klp_sleeper_patch/transition") == "1\n"
    return m


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_a_task_sleeping_in_the_function_stalls_the_transition(booted_snapshots, kmod, cpus):
    log = Log(booted_snapshots(cpus), "klp_sleeper", "klp_sleeper_patch")
    m = stalled(booted_snapshots, kmod, cpus, nap_ms=2500,      # the per-task lines too
                debug="func klp_try_switch_task +p")
    lines = log.new()
    assert lines[:4] == ["klp_sleeper: sleeper_nap: sleeping 2500 ms",
                         "livepatch: enabling patch 'klp_sleeper_patch'",
                         "livepatch: 'klp_sleeper_patch': initializing patching transition",
                         "livepatch: 'klp_sleeper_patch': starting patching transition"]
    sleeping = [ln for ln in lines if "is sleeping on function" in ln]
    assert len(sleeping) == 2                            # at enable, and at the retry 1 s later
    assert sleeping[0].startswith("livepatch: klp_try_switch_task: kworker/u:")
    assert sleeping[0].endswith(" is sleeping on function sleeper_nap")
    why = m.livepatch.explain()
    assert "patching transition in progress" in why
    assert "is sleeping on function sleeper_nap (pending)" in why
    assert "    sleeper_nap+0x" in why and "[klp_sleeper]" in why
    m.fs.write(DYNAMIC_DEBUG, "func klp_try_switch_task -p")
    m.run(ms=2500)                                       # the nap ends, the next retry switches
    assert log.new() == ["klp_sleeper: sleeper_nap: awake"] + transcript("klp_sleeper_patch", "patching")[2:]
    assert m.call("sleeper_nap", 5) == (-5) & 0xFFFFFFFF
    assert log.new() == ["klp_sleeper_patch: patched_nap: no nap today"]


def test_force_completes_a_stalled_transition_and_pins_the_module(booted_snapshots, kmod):
    m = stalled(booted_snapshots, kmod)
    log = Log(m, "klp_sleeper_patch")
    m.fs.write(f"{SYS}/klp_sleeper_patch/force", "1")
    assert log.new() == ["livepatch: forcing remaining tasks to the patched state"] + \
        transcript("klp_sleeper_patch", "patching")[2:]
    assert m.livepatch.patch_named("klp_sleeper_patch").forced is False   # patching: not forced
    m.fs.write(f"{SYS}/klp_sleeper_patch/enabled", "0")  # the sleeper is in the original:
    assert log.new() == transcript("klp_sleeper_patch", "unpatching")   # no stall to unpatch
    m.rmmod("klp_sleeper_patch")
    m.insmod(kmod("klp-sleeper-patch"))                  # stalls again (the nap goes on)
    m.fs.write(f"{SYS}/klp_sleeper_patch/enabled", "0")  # reversed at once ...
    m.fs.write(f"{SYS}/klp_sleeper_patch/force", "1")    # ... and forced: marked forced
    assert log.new()[-1] == "livepatch: 'klp_sleeper_patch': unpatching complete"
    with pytest.raises(ModuleError) as e:               # forced: its code may still run
        m.rmmod("klp_sleeper_patch")
    assert e.value.errno == errno.EBUSY


def test_disabling_during_the_transition_reverses_it(booted_snapshots, kmod):
    m = stalled(booted_snapshots, kmod)
    log = Log(m, "klp_sleeper_patch")
    m.fs.write(f"{SYS}/klp_sleeper_patch/enabled", "0")
    assert m.fs.read(f"{SYS}/klp_sleeper_patch/enabled") == "0\n"
    m.run(ms=1100)                                       # the sleeper is in the original: fine
    assert log.new() == [
        "livepatch: 'klp_sleeper_patch': reversing transition from patching to unpatching",
        "livepatch: 'klp_sleeper_patch': starting unpatching transition",
        "livepatch: 'klp_sleeper_patch': completing unpatching transition",
        "livepatch: 'klp_sleeper_patch': unpatching complete"]
    m.rmmod("klp_sleeper_patch")
    assert "sleeper_nap" not in m.ftrace.enabled_functions


def test_atomic_replace(booted_snapshots, kmod):
    m = booted_snapshots(2)
    m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)
    m.insmod(kmod("klp-meminfo"), "replace=0")           # stacked: both patches stay
    m.run(ms=1100)
    assert m.fs.read(f"{SYS}/klp_meminfo/stack_order") == "2\n"
    assert m.fs.read("/proc/cmdline") == "klp_cmdline: patched command line\n"
    assert m.fs.read("/proc/meminfo") == "klp_meminfo: patched meminfo\n"
    m.fs.write(f"{SYS}/klp_meminfo/enabled", "0")
    m.run(ms=1100)
    m.rmmod("klp_meminfo")

    log = Log(m, "klp_meminfo")
    m.insmod(kmod("klp-meminfo"), "replace=1")           # replaces klp_cmdline: a nop for it
    m.run(ms=1100)
    assert log.new() == ["livepatch: enabling patch 'klp_meminfo'"] + transcript("klp_meminfo", "patching")
    assert m.fs.listdir(SYS) == ["klp_meminfo"]
    assert m.fs.read(f"{SYS}/klp_meminfo/replace") == "1\n"
    assert m.fs.read("/proc/cmdline") == "console=ttyS0\n"
    assert m.fs.read("/proc/meminfo") == "klp_meminfo: patched meminfo\n"
    assert "cmdline_proc_show" not in m.ftrace.enabled_functions
    m.rmmod("klp_cmdline")                               # released by the replacement


def test_callbacks_run_in_the_kernels_order(booted_snapshots, kmod):
    m = booted_snapshots(2)
    log = Log(m, "klp_callbacks")
    m.insmod(kmod("klp-callbacks"))
    m.run(ms=1100)
    m.fs.write(f"{SYS}/klp_callbacks/enabled", "0")
    m.run(ms=1100)
    m.rmmod("klp_callbacks")
    on, off = transcript("klp_callbacks", "patching"), transcript("klp_callbacks", "unpatching")
    assert log.new() == [
        "livepatch: enabling patch 'klp_callbacks'", on[0],
        "klp_callbacks: pre_patch_callback: vmlinux", on[1], on[2],
        "klp_callbacks: post_patch_callback: vmlinux", on[3], off[0],
        "klp_callbacks: pre_unpatch_callback: vmlinux", off[1], off[2],
        "klp_callbacks: post_unpatch_callback: vmlinux", off[3]]


def test_a_failing_pre_patch_callback_fails_the_insmod(booted_snapshots, kmod):
    m = booted_snapshots(1)
    log = Log(m, "klp_callbacks")
    with pytest.raises(ModuleError) as e:
        m.insmod(kmod("klp-callbacks"), "pre_patch_ret=-19")
    assert e.value.errno == errno.ENODEV and "No such device" in str(e.value)
    assert log.new() == [
        "livepatch: enabling patch 'klp_callbacks'",
        "livepatch: 'klp_callbacks': initializing patching transition",
        "klp_callbacks: pre_patch_callback: vmlinux",
        "livepatch: pre-patch callback failed for object 'vmlinux'",
        "livepatch: failed to enable patch 'klp_callbacks'",
        "livepatch: 'klp_callbacks': canceling patching transition, going to unpatch",
        "livepatch: 'klp_callbacks': completing unpatching transition",
        "livepatch: 'klp_callbacks': unpatching complete"]
    assert m.fs.listdir(SYS) == [] and m.modules.modules == {}


def test_shadow_variables(booted_snapshots, kmod):
    m = booted_snapshots(1)
    log = Log(m, "klp_shadow")
    m.insmod(kmod("klp-shadow"))
    lines = m.dmesg.splitlines()
    assert log.new() == [
        "klp_shadow: get before alloc: NULL", "klp_shadow: ctor: 1", "klp_shadow: get: 1",
        "klp_shadow: duplicate alloc: NULL", "klp_shadow: get_or_alloc same: same",
        "klp_shadow: ctor: 2", "klp_shadow: dtor: 1", "klp_shadow: get after free: NULL",
        "klp_shadow: dtor: 2", "klp_shadow: get after free_all: NULL"]
    assert any(ln.startswith("Duplicate shadow variable <0xffff888") for ln in lines)


def test_a_whole_transition_is_deterministic(booted_snapshots, kmod):
    def run() -> tuple:
        m = stalled(booted_snapshots, kmod)
        m.run(ms=5000)
        return m.dmesg, m.now, m.fs.read(f"{SYS}/klp_sleeper_patch/transition")
    first = run()
    assert first == run() and first[2] == "0\n"
