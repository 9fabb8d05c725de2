"""Loadable modules: build one from C, insmod it with parameters, trace it, rmmod it."""
from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from emu.errors import GuestPanic
from emu.module import MODULE_STATE_LIVE, ModuleError
from emu.params import param_get
from ftrace import FtraceOps


def test_insmod_runs_init_with_parameters_and_rmmod_runs_exit(booted_snapshots, kmod):
    m = booted_snapshots(2)
    mod = m.insmod(kmod("hello-mod"), "count=5 loud who=ftemu bogus=1")
    assert m.dmesg.splitlines()[-2:] == ["hello_mod: unknown parameter 'bogus' ignored",
                                         "hello_mod: hello ftemu 15 loud=1"]
    assert mod.state == MODULE_STATE_LIVE and mod.modinfo["license"] == ["GPL"]
    assert {p.name: param_get(m, p) for p in mod.params} == {
        "count": "5\n", "loud": "Y\n", "who": "ftemu\n"}
    assert m.call("hello_twice", 4) == 13              # resolved, relocated, callable
    assert m.lookup(m.symbol_address("hello_twice") + 4).endswith(" [hello_mod]")
    m.rmmod("hello_mod")
    assert m.dmesg.splitlines()[-1] == "hello_mod: bye"
    assert "hello_mod" not in m.modules.modules
    with pytest.raises(ModuleError) as e:
        m.rmmod("hello_mod")
    assert e.value.errno == errno.ENOENT


def test_failing_init_leaves_nothing_loaded(booted_snapshots, kmod):
    m = booted_snapshots(1)
    records = len(m.ftrace.records)
    with pytest.raises(ModuleError) as e:
        m.insmod(kmod("hello-mod"), {"count": 13})
    assert e.value.errno == errno.ENODEV
    assert m.modules.modules == {} and len(m.ftrace.records) == records
    with pytest.raises(ModuleError) as e:
        m.insmod(kmod("hello-mod"), "count=many")
    assert e.value.errno == errno.EINVAL
    assert m.dmesg.splitlines()[-1] == "hello_mod: `many' invalid for parameter `count'"
    m.insmod(kmod("hello-mod"))                         # and the area is free again
    with pytest.raises(ModuleError) as e:
        m.insmod(kmod("hello-mod"))
    assert e.value.errno == errno.EEXIST


def test_ftrace_sees_module_functions(booted_snapshots, kmod):
    m = booted_snapshots(2)
    ft = m.ftrace
    m.insmod(kmod("hello-mod"))
    listed = [ln for ln in ft.available_filter_functions.splitlines() if "[hello_mod]" in ln]
    assert listed == ["hello_twice [hello_mod]", "init_module [hello_mod]",
                      "cleanup_module [hello_mod]"]
    seen = []
    ops = FtraceOps(lambda ip, parent_ip, op, regs: seen.append(m.lookup(ip)))
    ft.ftrace_set_filter(ops, "hello_twice", True)
    ft.register_ftrace_function(ops)
    assert m.call("hello_twice", 1) == 5
    assert seen == ["hello_twice+0x0/0x14 [hello_mod]"]
    m.rmmod("hello_mod")                                # the ops stays registered
    assert ops.filter_hash == frozenset({0})            # cleared, not emptied
    assert "hello_twice" not in ft.enabled_functions
    ft.unregister_ftrace_function(ops)


def test_snapshot_forgets_modules_loaded_after_it(booted_snapshots, kmod):
    m = booted_snapshots(1)
    snap = m.snapshot()
    records = len(m.ftrace.records)
    m.insmod(kmod("hello-mod"))
    m.restore(snap)
    assert m.modules.modules == {} and len(m.ftrace.records) == records
    m.insmod(kmod("hello-mod"), "count=2")
    assert m.call("hello_twice", 1) == 4


def test_kmod_build_command(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("#include <linux/module.h>\nint f(void) { return undefined_thing; }\n")
    r = subprocess.run([sys.executable, "-m", "ftemu.cli", "kmod", "build", str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("ftemu kmod: error: module build of") and "undefined_thing" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_proc_modules_and_sys_module(booted_snapshots, kmod):
    m = booted_snapshots(1)
    mod = m.insmod(kmod("hello-mod"), "count=4")
    assert m.fs.read("/proc/modules") == f"hello_mod {mod.size} 0 - Live 0x{mod.text:016x}\n"
    d = "/sys/module/hello_mod"
    assert [m.fs.read(f"{d}/{f}") for f in ("refcnt", "initstate")] == ["0\n", "live\n"]
    assert sorted(m.fs.listdir(f"{d}/parameters")) == ["count", "loud", "who"]
    m.fs.write(f"{d}/parameters/count", "9")              # 0644: writable, as params.c parses
    assert m.call("hello_twice", 0) == 9
    with pytest.raises(OSError) as e:
        m.fs.write(f"{d}/parameters/count", "nine")
    assert e.value.errno == errno.EINVAL and m.fs.read(f"{d}/parameters/count") == "9\n"
    with pytest.raises(OSError) as e:
        m.fs.write(f"{d}/parameters/loud", "Y")           # 0444: read-only
    assert e.value.errno == errno.EACCES
    mine = [ln for ln in m.fs.read("/proc/kallsyms").splitlines() if ln.endswith("\t[hello_mod]")]
    assert mine[0] == f"{m.symbol_address('hello_twice'):016x} T hello_twice\t[hello_mod]"
    assert [ln.split(" ", 1)[1] for ln in mine[1:5]] == [
        "T init_module\t[hello_mod]", "t hello_init\t[hello_mod]",        # static: lower case
        "T cleanup_module\t[hello_mod]", "t hello_exit\t[hello_mod]"]
    assert {ln.split(" ")[1] for ln in mine[5:]} == {"d", "b", "r"}         # data, bss, rodata
    m.rmmod("hello_mod")
    assert m.fs.read("/proc/modules") == "" and "hello_mod" not in m.fs.listdir("/sys/module")
    assert "[hello_mod]" not in m.fs.read("/proc/kallsyms")


def test_module_text_runs_and_module_data_is_not_executable(booted_snapshots, kmod):
    m = booted_snapshots(1)
    mod = m.insmod(kmod("hello-mod"), "count=3")
    assert m.call("hello_twice", 2) == 7                    # text: executable
    count = mod.symbols["count"][0]
    assert count >= mod.data and m.read(count, 4) == (3).to_bytes(4, "little")
    with pytest.raises(GuestPanic) as e:                    # data: NX, as the kernel maps it
        m.call(count)
    assert str(e.value).startswith(f"guest panic: page fault at {count:#x} ip count+0x0/0x4 "
                                   "[hello_mod] error 0x11")        # present | instruction fetch


def test_module_headers_leave_the_kernels_internal_names_free(booted_snapshots, kmod):
    """The headers are the kernel's API only: a module may define `struct task`, `kalloc`,
    NCPU ... (the guest kernel's own names) and still use mutexes, lists, completions."""
    m = booted_snapshots(1)
    m.insmod(kmod("namespace-mod"))
    assert m.dmesg.splitlines()[-1] == "namespace_mod: tasks: sum 15, spinlock 1, done 0"
    m.rmmod("namespace_mod")
