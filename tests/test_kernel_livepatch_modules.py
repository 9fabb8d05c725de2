"""The kernel's own livepatch modules, unchanged, as the judge: lib/livepatch/test_klp_*.c
and samples/livepatch of Linux 6.1 (and their 6.12 copies under
tools/testing/selftests/livepatch/test_modules) are taken from the installed linux-source
tarballs, built with ``ftemu kmod build``'s code against the guest's headers, loaded, and
driven through each scenario of the kernel's 6.1 livepatch selftests. The dmesg transcript
must equal the one the kernel's script expects (read from the script itself)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from kernel_source import extract
from klp_selftest import KlpSelftest, expected

from emu import Machine
from emu.kbuild import build_module

LIB61 = "lib/livepatch"
SAMPLES = "samples/livepatch"
SELFTESTS = "tools/testing/selftests/livepatch"
TEST_MODULES_612 = f"{SELFTESTS}/test_modules"
MODULES = ["test_klp_livepatch", "test_klp_atomic_replace", "test_klp_callbacks_demo",
           "test_klp_callbacks_demo2", "test_klp_callbacks_busy", "test_klp_callbacks_mod",
           "test_klp_shadow_vars", "test_klp_state", "test_klp_state2", "test_klp_state3"]


@pytest.fixture(scope="module")
def linux61(require_tool) -> Path:
    return extract("6.1", require_tool, LIB61, SAMPLES, SELFTESTS)


@pytest.fixture(scope="module")
def modules61(linux61, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("klp61")
    return {name: build_module(linux61 / LIB61 / f"{name}.c", out / f"{name}.ko") for name in MODULES}


@pytest.fixture(scope="module")
def linux612(require_tool) -> Path:
    return extract("6.12", require_tool, SAMPLES, SELFTESTS)


def test_every_module_of_6_1_and_6_12_builds_unchanged(modules61, linux61, linux612, tmp_path):
    sources = [linux612 / TEST_MODULES_612 / f"{n}.c" for n in [*MODULES, SYSCALL]]
    sources += sorted((linux61 / SAMPLES).glob("*.c")) + sorted((linux612 / SAMPLES).glob("*.c"))
    for i, src in enumerate(sources):
        ko = build_module(src, tmp_path / f"{i}-{src.stem}.ko")
        assert ko.stat().st_size > 0
    assert sorted(modules61) == sorted(MODULES)


# Each scenario of the kernel's scripts, step by step (functions.sh's verbs, KlpSelftest).
LP, REPLACE = "test_klp_livepatch", "test_klp_atomic_replace"
DEMO, DEMO2 = "test_klp_callbacks_demo", "test_klp_callbacks_demo2"
TARGET, BUSY = "test_klp_callbacks_mod", "test_klp_callbacks_busy"
STATE, STATE2, STATE3 = "test_klp_state", "test_klp_state2", "test_klp_state3"
SYSCALL = "test_klp_syscall"          # 6.12 only: patches __x64_sys_getpid
PATCHED_LINE = f"{LP}: this has been live patched\n"


def greps():
    return [("grep_to_kmsg", "live patched", "/proc/cmdline"),
            ("grep_to_kmsg", "live patched", "/proc/meminfo")]


SCENARIOS = {
    ("test-livepatch.sh", "basic function patching"): [
        ("load_lp", LP), ("assert_file", "/proc/cmdline", PATCHED_LINE),
        ("disable_lp", LP), ("unload_lp", LP), ("assert_file", "/proc/cmdline", "console=ttyS0\n")],
    ("test-livepatch.sh", "multiple livepatches"): [
        ("load_lp", LP), *greps(), ("load_lp", REPLACE, "replace=0"), *greps(),
        ("disable_lp", REPLACE), ("unload_lp", REPLACE), *greps(),
        ("disable_lp", LP), ("unload_lp", LP), *greps()],
    ("test-livepatch.sh", "atomic replace livepatch"): [
        ("load_lp", LP), *greps(), ("load_lp", REPLACE, "replace=1"), *greps(),
        ("unload_lp", LP), *greps(), ("disable_lp", REPLACE), ("unload_lp", REPLACE), *greps()],
    ("test-callbacks.sh", "target module before livepatch"): [
        ("load_mod", TARGET), ("load_lp", DEMO), ("disable_lp", DEMO), ("unload_lp", DEMO),
        ("unload_mod", TARGET)],
    ("test-callbacks.sh", "module_coming notifier"): [
        ("load_lp", DEMO), ("load_mod", TARGET), ("disable_lp", DEMO), ("unload_lp", DEMO),
        ("unload_mod", TARGET)],
    ("test-callbacks.sh", "module_going notifier"): [
        ("load_mod", TARGET), ("load_lp", DEMO), ("unload_mod", TARGET), ("disable_lp", DEMO),
        ("unload_lp", DEMO)],
    ("test-callbacks.sh", "module_coming and module_going notifiers"): [
        ("load_lp", DEMO), ("load_mod", TARGET), ("unload_mod", TARGET), ("disable_lp", DEMO),
        ("unload_lp", DEMO)],
    ("test-callbacks.sh", "target module not present"): [
        ("load_lp", DEMO), ("disable_lp", DEMO), ("unload_lp", DEMO)],
    ("test-callbacks.sh", "pre-patch callback -ENODEV"): [
        ("load_mod", TARGET), ("load_failing_mod", DEMO, "pre_patch_ret=-19"),
        ("unload_mod", TARGET)],
    ("test-callbacks.sh", "module_coming + pre-patch callback -ENODEV"): [
        ("load_lp", DEMO), ("set_pre_patch_ret", DEMO, -19), ("load_failing_mod", TARGET),
        ("disable_lp", DEMO), ("unload_lp", DEMO)],
    ("test-callbacks.sh", "multiple target modules"): [
        ("load_mod", BUSY, "block_transition=N"), ("load_lp", DEMO), ("load_mod", TARGET),
        ("unload_mod", TARGET), ("disable_lp", DEMO), ("unload_lp", DEMO), ("unload_mod", BUSY)],
    ("test-callbacks.sh", "busy target module"): [
        ("load_mod", BUSY, "block_transition=Y"), ("load_lp_nowait", DEMO),
        ("wait_transition", DEMO, 1),        # stalled on busymod_work_func
        ("load_mod", TARGET), ("unload_mod", TARGET), ("disable_lp", DEMO), ("unload_lp", DEMO),
        ("unload_mod", BUSY)],
    ("test-callbacks.sh", "multiple livepatches"): [
        ("load_lp", DEMO), ("load_lp", DEMO2), ("disable_lp", DEMO2), ("disable_lp", DEMO),
        ("unload_lp", DEMO2), ("unload_lp", DEMO)],
    ("test-callbacks.sh", "atomic replace"): [
        ("load_lp", DEMO), ("load_lp", DEMO2, "replace=1"), ("disable_lp", DEMO2),
        ("unload_lp", DEMO2), ("unload_lp", DEMO)],
    ("test-shadow-vars.sh", "basic shadow variable API"): [
        ("load_mod", "test_klp_shadow_vars"), ("unload_mod", "test_klp_shadow_vars")],
    ("test-state.sh", "system state modification"): [
        ("load_lp", STATE), ("disable_lp", STATE), ("unload_lp", STATE)],
    ("test-state.sh", "taking over system state modification"): [
        ("load_lp", STATE), ("load_lp", STATE2), ("unload_lp", STATE), ("disable_lp", STATE2),
        ("unload_lp", STATE2)],
    ("test-state.sh", "compatible cumulative livepatches"): [
        ("load_lp", STATE2), ("load_lp", STATE3), ("unload_lp", STATE2), ("load_lp", STATE2),
        ("disable_lp", STATE2), ("unload_lp", STATE2), ("unload_lp", STATE3)],
    ("test-state.sh", "incompatible cumulative livepatches"): [
        ("load_lp", STATE2), ("load_failing_mod", STATE), ("disable_lp", STATE2),
        ("unload_lp", STATE2)],
    ("test-ftrace.sh", "livepatch interaction with ftrace_enabled sysctl"): [
        ("set_ftrace_enabled", 0), ("load_failing_mod", LP), ("set_ftrace_enabled", 1),
        ("load_lp", LP), ("assert_file", "/proc/cmdline", PATCHED_LINE),
        ("set_ftrace_enabled", 0, True), ("assert_file", "/proc/cmdline", PATCHED_LINE),
        ("disable_lp", LP), ("unload_lp", LP)],
    ("test-sysfs.sh", "sysfs test"): [
        ("load_lp", LP), ("assert_file", f"/sys/kernel/livepatch/{LP}/enabled", "1\n"),
        ("assert_file", f"/sys/kernel/livepatch/{LP}/transition", "0\n"),
        ("assert_file", f"/sys/kernel/livepatch/{LP}/vmlinux/patched", "1\n"),
        ("disable_lp", LP), ("unload_lp", LP)],
    ("test-sysfs.sh", "sysfs test object/patched"): [
        ("load_lp", DEMO), ("assert_file", f"/sys/kernel/livepatch/{DEMO}/{TARGET}/patched", "0\n"),
        ("load_mod", TARGET), ("assert_file", f"/sys/kernel/livepatch/{DEMO}/{TARGET}/patched", "1\n"),
        ("unload_mod", TARGET),
        ("assert_file", f"/sys/kernel/livepatch/{DEMO}/{TARGET}/patched", "0\n"),
        ("disable_lp", DEMO), ("unload_lp", DEMO)],
}


# Every scenario on 2 vCPUs; those whose tasks sleep in patched code or that replace
# patches also on 1 and 4.
RUNS = [(2, key) for key in SCENARIOS] + [
    (cpus, key) for cpus in (1, 4) for key in [("test-callbacks.sh", "busy target module"),
                                               ("test-livepatch.sh", "atomic replace livepatch"),
                                               ("test-state.sh", "compatible cumulative livepatches")]]


@pytest.mark.parametrize("cpus,scenario", RUNS, ids=[f"{c}cpu-{s}:{t}" for c, (s, t) in RUNS])
def test_selftest_scenario_gives_the_kernels_transcript(cpus, scenario, booted_snapshots,
                                                        modules61, linux61):
    script, test = scenario
    m = booted_snapshots(cpus)
    st = KlpSelftest(m, modules61)
    for verb, *args in SCENARIOS[(script, test)]:
        getattr(st, verb)(*args)
    assert st.result() == expected(linux61 / SELFTESTS / script, test)
    assert m.modules.modules == {} and m.livepatch.patches == []


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_getpid_patched_while_being_hammered(cpus, booted_snapshots, linux612, tmp_path):
    """6.12's test-syscall.sh: one task per CPU calls getpid(2) in a loop (the guest's
    call_getpid, as the kernel's test_klp-call_getpid); test_klp_syscall gets their pids and
    counts down in /sys/kernel/test_klp_syscall/npids as each calls the patched syscall, which
    it can only do once it switched to the patched state at its return to user space."""
    ko = build_module(linux612 / TEST_MODULES_612 / f"{SYSCALL}.c", tmp_path / f"{SYSCALL}.ko")
    m = booted_snapshots(cpus)
    st = KlpSelftest(m, {SYSCALL: ko})
    name = m.symbol_address("uprog_call_getpid_name")
    pid_list = ",".join(str(m.call("user_spawn", name)) for _ in range(cpus))
    st.log(f"% insmod test_modules/{SYSCALL}.ko klp_pids={pid_list}")   # 6.12's load_lp
    m.insmod(ko, f"klp_pids={pid_list}")
    st.wait_transition(SYSCALL, 0)
    st.loop_until(lambda: m.fs.read(f"/sys/kernel/{SYSCALL}/npids") == "0\n", "see npids 0")
    st.log(f"{SYSCALL}: Remaining not livepatched processes: "
           f"{m.fs.read(f'/sys/kernel/{SYSCALL}/npids').strip()}")
    st.disable_lp(SYSCALL)
    st.unload_lp(SYSCALL)
    want = expected(linux612 / SELFTESTS / "test-syscall.sh",
                    "patch getpid syscall while being heavily hammered")
    assert st.result() == want.replace("$pid_list", pid_list)
    assert not m.fs.exists(f"/sys/kernel/{SYSCALL}")


def test_sample_patches_proc_cmdline(booted_snapshots, linux61, tmp_path):
    """samples/livepatch/livepatch-sample.c: /proc/cmdline shows its line while enabled."""
    ko = build_module(linux61 / SAMPLES / "livepatch-sample.c", tmp_path / "livepatch-sample.ko")
    m = booted_snapshots(1)
    st = KlpSelftest(m, {"livepatch_sample": ko})
    st.load_lp("livepatch_sample")
    assert m.fs.read("/proc/cmdline") == "this has been live patched\n"
    assert m.modules.modules["livepatch_sample"].modinfo["livepatch"] == ["Y"]
    assert m.fs.read("/sys/module/livepatch_sample/taint") == "K\n"
    # check_modinfo_livepatch's notice, once a boot (the selftests' filter drops it)
    assert "livepatch_sample: tainting kernel with TAINT_LIVEPATCH" in m.dmesg.splitlines()
    st.disable_lp("livepatch_sample")
    st.unload_lp("livepatch_sample")
    assert m.fs.read("/proc/cmdline") == "console=ttyS0\n"
    st.load_lp("livepatch_sample")
    assert m.dmesg.count("tainting kernel with TAINT_LIVEPATCH") == 1
    st.disable_lp("livepatch_sample")
    st.unload_lp("livepatch_sample")
    assert st.result().splitlines() == [          # check_result keeps livepatch's lines
        "livepatch: enabling patch 'livepatch_sample'",
        "livepatch: 'livepatch_sample': initializing patching transition",
        "livepatch: 'livepatch_sample': starting patching transition",
        "livepatch: 'livepatch_sample': completing patching transition",
        "livepatch: 'livepatch_sample': patching complete",
        "livepatch: 'livepatch_sample': initializing unpatching transition",
        "livepatch: 'livepatch_sample': starting unpatching transition",
        "livepatch: 'livepatch_sample': completing unpatching transition",
        "livepatch: 'livepatch_sample': unpatching complete"] * 2


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_callbacks_meet_locks_held_by_other_vcpus(seed, modules61, linux61):
    """Short random slices on 4 vCPUs end with locks held (the run queue, kzalloc's slab):
    module init threads and klp callbacks wait until no vCPU holds one, so both scenarios
    still give the kernel's transcript (before, one of these seeds hung in kernel_thread)."""
    m = Machine(cpus=4, slice_seed=seed, quantum=3000)
    m.boot()
    for script, test in [("test-state.sh", "taking over system state modification"),
                         ("test-callbacks.sh", "multiple target modules")]:
        st = KlpSelftest(m, modules61)
        for verb, *args in SCENARIOS[(script, test)]:
            getattr(st, verb)(*args)
        assert st.result() == expected(linux61 / SELFTESTS / script, test)


def test_shadow_variable_samples_fix_the_leak(booted_snapshots, linux61, tmp_path):
    """samples/livepatch/livepatch-shadow-{mod,fix1,fix2}.c: the module allocates a dummy every
    second; fix1's replacement dummy_alloc gives each new one a shadow 'leak' pointer, and
    unloading fix1 frees every such shadow through its destructor; on rmmod the module
    frees each dummy it ever allocated, patched or not, exactly once."""
    names = ["livepatch-shadow-mod", "livepatch-shadow-fix1", "livepatch-shadow-fix2"]
    kos = {n.replace("-", "_"): build_module(linux61 / SAMPLES / f"{n}.c", tmp_path / f"{n}.ko")
           for n in names}
    m = booted_snapshots(2)
    start = len(m.dmesg.splitlines())
    st = KlpSelftest(m, kos)
    st.load_mod("livepatch_shadow_mod")
    m.run(ms=3500)
    st.load_lp("livepatch_shadow_fix1")
    m.run(ms=3500)
    st.load_lp("livepatch_shadow_fix2")
    m.run(ms=3500)
    for lp in ("livepatch_shadow_fix2", "livepatch_shadow_fix1"):
        st.disable_lp(lp)
        st.unload_lp(lp)
    st.unload_mod("livepatch_shadow_mod")
    log = "\n".join(m.dmesg.splitlines()[start:])
    plain = re.findall(r"^dummy_alloc: dummy @ (0x[0-9a-f]+)", log, re.M)
    fixed = re.findall(r"^livepatch_shadow_fix1: livepatch_fix1_dummy_alloc: dummy @ (0x[0-9a-f]+)",
                       log, re.M)
    leaks = re.findall(r"^livepatch_shadow_fix1: livepatch_fix1_dummy_leak_dtor: dummy @ (0x[0-9a-f]+)",
                       log, re.M)
    freed = re.findall(r"^dummy_free: dummy @ (0x[0-9a-f]+)", log, re.M)
    assert len(plain) >= 3 and len(fixed) >= 6                 # ~1 a second, 3.5 s apart
    assert sorted(leaks) == sorted(fixed)
    assert sorted(freed) == sorted(plain + fixed)
