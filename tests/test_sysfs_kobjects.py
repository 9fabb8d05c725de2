"""A module's own sysfs files: kobject_create_and_add makes /sys/kernel/<name>, each
sysfs_create_file a file whose read runs the attribute's show in the guest and whose write runs
its store; the last kobject_put takes the directory away. And module_param_array's lists."""
from __future__ import annotations

import errno

import pytest

from emu.module import ModuleError
from emu.pseudofs import O_RDONLY

D = "/sys/kernel/kobj_mod"


def test_a_modules_kobject_is_a_directory_of_files_its_show_and_store_answer(booted_snapshots, kmod):
    m = booted_snapshots(2)
    m.insmod(kmod("kobj-mod"), "weights=3,-1,4")
    assert sorted(m.fs.listdir(D)) == ["greeting", "level"]
    assert m.fs.read(f"{D}/greeting") == "hello from kobj_mod, 3 weights\n"
    assert m.fs.read(f"{D}/level") == "7\n"
    m.fs.write(f"{D}/level", "42\n")
    assert m.fs.read(f"{D}/level") == "42\n"
    with pytest.raises(OSError) as e:                  # store's -EINVAL
        m.fs.write(f"{D}/level", "forty\n")
    assert e.value.errno == errno.EINVAL
    assert m.fs.read(f"{D}/level") == "42\n"
    with pytest.raises(OSError) as e:                  # __ATTR_RO: mode 0444
        m.fs.write(f"{D}/greeting", "hi\n")
    assert e.value.errno == errno.EACCES
    assert m.fs.stat(f"{D}/level")[1] & 0o777 == 0o644


def test_rmmod_takes_the_directory_away_and_open_files_answer_enodev(booted_snapshots, kmod):
    m = booted_snapshots(1)
    m.insmod(kmod("kobj-mod"))
    h = m.fs.open(f"{D}/greeting", O_RDONLY)
    m.rmmod("kobj_mod")
    assert not m.fs.exists(D)
    with pytest.raises(OSError) as e:                  # the show lived in the unloaded module
        h.read(4096, 0)
    assert e.value.errno == errno.ENODEV
    h.release()
    m.insmod(kmod("kobj-mod"))                         # the name is free again
    assert m.fs.read(f"{D}/level") == "7\n"


def test_a_duplicate_kobject_fails_with_the_kernels_warnings(booted_snapshots, kmod):
    m = booted_snapshots(1)
    m.insmod(kmod("kobj-mod"))
    kobj = m.modules.area.alloc(16)
    m.write(kobj, b"kobj_mod\0")
    assert m.call("kobject_create_and_add", kobj, m.read_u64(m.symbol_address("kernel_kobj"))) == 0
    log = m.dmesg.splitlines()
    assert "sysfs: cannot create duplicate filename '/kernel/kobj_mod'" in log   # then a stack dump
    assert log[-2:] == [
        "kobject_add_internal failed for kobj_mod with -EEXIST, don't try to register things "
        "with the same name in the same directory.",
        "kobject_create_and_add: kobject_add error: -17"]
    assert sorted(m.fs.listdir(D)) == ["greeting", "level"]   # the first one untouched


def test_snapshots_keep_the_kobjects_of_their_moment(booted_snapshots, kmod):
    m = booted_snapshots(1)
    before = m.snapshot()
    m.insmod(kmod("kobj-mod"))
    m.fs.write(f"{D}/level", "9")
    loaded = m.snapshot()
    m.restore(before)
    assert not m.fs.exists(D)
    m.restore(loaded)
    assert m.fs.read(f"{D}/level") == "9\n"


def test_array_parameters_as_params_c_parses_them(booted_snapshots, kmod):
    m = booted_snapshots(1)
    mod = m.insmod(kmod("kobj-mod"), "weights=5,6")
    assert mod.modinfo["parmtype"] == ["weights:array of int"]
    assert m.fs.read("/sys/module/kobj_mod/parameters/weights") == "5,6\n"
    m.fs.write("/sys/module/kobj_mod/parameters/weights", "1,2,3,4")
    assert m.fs.read("/sys/module/kobj_mod/parameters/weights") == "1,2,3,4\n"
    assert m.fs.read(f"{D}/greeting") == "hello from kobj_mod, 4 weights\n"
    m.rmmod("kobj_mod")
    with pytest.raises(ModuleError) as e:
        m.insmod(kmod("kobj-mod"), "weights=1,2,3,4,5")
    assert e.value.errno == errno.EINVAL
    assert m.dmesg.splitlines()[-2:] == ["weights: can only take 4 arguments",
                                         "kobj_mod: `1,2,3,4,5' invalid for parameter `weights'"]
    assert "kobj_mod" not in m.modules.modules and not m.fs.exists(D)
