"""The kernel log's user-facing files as a live-patching engineer meets them: klp's debug
lines switched through /sys/kernel/debug/dynamic_debug/control (the queries the kernel's
livepatch selftests write), and /dev/kmsg, where user space puts its own lines between the
kernel's."""
from __future__ import annotations

import errno
import os

import pytest

CONTROL = "/sys/kernel/debug/dynamic_debug/control"
CMDLINE_PATCH = ["livepatch: enabling patch 'klp_cmdline'",
                 "livepatch: 'klp_cmdline': initializing patching transition",
                 "livepatch: 'klp_cmdline': starting patching transition",
                 "livepatch: 'klp_cmdline': completing patching transition",
                 "livepatch: 'klp_cmdline': patching complete"]


def klp_lines(m) -> list[str]:
    return [ln for ln in m.dmesg.splitlines() if "livepatch" in ln]


def test_control_lists_klp_callsites_as_the_kernel(booted_snapshots):
    m = booted_snapshots(1)
    lines = m.fs.read(CONTROL).splitlines()
    assert lines[0] == "# filename:lineno [module]function flags format"
    assert "kernel/livepatch/transition.c:521 [livepatch]klp_init_transition =p " \
           "\"'%s': initializing %s transition\\n\"" in lines
    assert "kernel/livepatch/transition.c:324 [livepatch]klp_try_switch_task =_ " \
           "\"%s: %s:%d is sleeping on function %s\\n\"" in lines


def test_switching_klp_debug_off_and_back_as_the_selftests_do(booted_snapshots, kmod):
    m = booted_snapshots(1)
    # functions.sh's push_config keeps "file F line N =FLAGS" per site; pop_config writes it back
    saved = "\n".join(f"file {ln.split(':')[0]} line {ln.split(':')[1].split()[0]} {ln.split()[2]}"
                      for ln in m.fs.read(CONTROL).splitlines() if ln.startswith("kernel/livepatch"))
    m.fs.write(CONTROL, "file kernel/livepatch/* -p")
    assert " =p " not in m.fs.read(CONTROL)
    m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)
    assert klp_lines(m) == [CMDLINE_PATCH[i] for i in (0, 2, 4)]     # notices only
    m.fs.write(CONTROL, saved)
    m.fs.write(CONTROL, "file transition.c +p; func klp_try_switch_task -p\n")
    m.fs.write(f"/sys/kernel/livepatch/klp_cmdline/enabled", "0")
    m.run(ms=1100)
    assert klp_lines(m)[3:] == [ln.replace("patching", "unpatching") for ln in CMDLINE_PATCH[1:]]


def test_prefix_flags_put_module_function_and_line_first(booted_snapshots, kmod):
    m = booted_snapshots(1)
    m.fs.write(CONTROL, "func klp_init_transition +mfl")
    m.insmod(kmod("klp-cmdline"))
    assert "livepatch:klp_init_transition:521: livepatch: 'klp_cmdline': initializing patching " \
           "transition" in m.dmesg.splitlines()


@pytest.mark.parametrize("query, why", [
    ("func klp_init_transition", "bad flag-op"),
    ("func klp_init_transition +x", "unknown flag"),
    ("func +p", "expecting pairs"),
    ("file a func b module c line 1 format x +p", "too many words"),
    ("colour red +p", "unknown keyword"),
    ("line 9-3 +p", "last-line"),
    ("file 'kernel/livepatch +p", "unclosed quote"),
])
def test_a_bad_query_is_EINVAL_and_changes_nothing(booted_snapshots, query, why):
    m = booted_snapshots(1)
    before = m.fs.read(CONTROL)
    with pytest.raises(OSError) as e:
        m.fs.write(CONTROL, query)
    assert e.value.errno == errno.EINVAL and why in str(e.value)
    assert m.fs.read(CONTROL) == before


def test_a_query_matching_nothing_is_accepted(booted_snapshots):
    m = booted_snapshots(1)
    m.fs.write(CONTROL, "module nosuchmodule +p")


def test_dev_kmsg_writes_are_log_records(booted_snapshots):
    m = booted_snapshots(1)
    m.fs.write("/dev/kmsg", "% modprobe test_klp_livepatch\n")
    m.fs.write("/dev/kmsg", "<3>an error from user space")
    recs = m.log.records[-2:]
    assert [(r.level, r.text) for r in recs] == [(4, "% modprobe test_klp_livepatch"),
                                                 (3, "an error from user space")]
    assert m.dmesg.splitlines()[-2:] == ["% modprobe test_klp_livepatch", "an error from user space"]
    with pytest.raises(OSError) as e:
        m.fs.write("/dev/kmsg", "x" * 1000)
    assert e.value.errno == errno.EINVAL


def test_dev_kmsg_reads_one_record_per_read(booted_snapshots):
    m = booted_snapshots(1)
    m.fs.write("/dev/kmsg", "<6>first")
    h = m.fs.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    n = len(m.log.records)
    lines = [h.read(4096, 0).decode() for _ in range(n)]
    assert lines[-1].startswith(f"6,{n - 1},") and lines[-1].endswith(",-;first\n")
    with pytest.raises(OSError) as e:
        h.read(4096, 0)
    assert e.value.errno == errno.EAGAIN
    h.release()
