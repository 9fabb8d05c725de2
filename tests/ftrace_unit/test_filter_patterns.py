"""Writing patterns: the kernel's token classification, glob grammar and index numbers."""

from __future__ import annotations

import errno

import pytest

from conftest import SITE, cb
from ftrace.errors import FtraceError
from ftrace.hash import kstrtoul
from ftrace.ops import FtraceOps
from ftrace.regex import MatchType, filter_parse_regex, glob_match

M = MatchType


@pytest.mark.parametrize("token, kind, search, remove", [
    ("schedule", M.MATCH_FULL, "schedule", False),
    ("*schedule", M.MATCH_END_ONLY, "schedule", False),
    ("schedule*", M.MATCH_FRONT_ONLY, "schedule", False),
    ("*schedule*", M.MATCH_MIDDLE_ONLY, "schedule", False),
    ("*", M.MATCH_END_ONLY, "", False),
    ("**", M.MATCH_MIDDLE_ONLY, "", False),
    ("!sys_*", M.MATCH_FRONT_ONLY, "sys_", True),
    ("*pin*lock", M.MATCH_GLOB, "*pin*lock", False),
    ("mutex*unl*", M.MATCH_GLOB, "mutex*unl*", False),
    ("sch*ule", M.MATCH_GLOB, "sch*ule", False),
    ("[Ss]y[Ss]_*", M.MATCH_GLOB, "[Ss]y[Ss]_*", False),
    ("sch?dule", M.MATCH_GLOB, "sch?dule", False),
    ("sys\\_read", M.MATCH_GLOB, "sys\\_read", False),
    ("12", M.MATCH_INDEX, "12", False),
    ("!0x3", M.MATCH_INDEX, "0x3", True),
    ("a b", M.MATCH_FULL, "a b", False),
])
def test_filter_parse_regex_classifies_like_the_kernel(token, kind, search, remove):
    g = filter_parse_regex(token)
    assert (g.type, g.search, g.remove) == (kind, search, remove)


@pytest.mark.parametrize("pat, name, matched", [
    ("sch?dule", "schedule", True), ("sch?dule", "schdule", False),
    ("[Ss]y[Ss]_*", "SyS_write", True), ("[Ss]y[Ss]_*", "sys_read", True),
    ("[Ss]y[Ss]_*", "sYs_read", False),
    ("*pin*lock", "_raw_spin_lock", True), ("*pin*lock", "_raw_spin_lock_irq", False),
    ("mutex*unl*", "mutex_unlock", True), ("mutex*unl*", "mutex_lock", False),
    ("sch*ule", "schedule", True), ("sch*ule", "schedule_timeout", False),
    ("a*b*c", "aXbYbZc", True), ("*", "", True), ("?", "", False),
    ("[a-c]x", "bx", True), ("[a-c]x", "dx", False), ("[!a-c]x", "dx", True),
    ("[!a-c]x", "ax", False), ("[^a]", "^", True), ("[^a]", "b", False),
    ("[]]", "]", True), ("[a-]", "-", True), ("[abc", "[abc", True),
    ("a\\*b", "a*b", True), ("a\\*b", "aXb", False), ("\\[x]", "[x]", True),
    ("abc\\", "abc", True),
])
def test_glob_match_is_lib_glob(pat, name, matched):
    assert glob_match(pat, name) is matched


@pytest.mark.parametrize("text, value", [
    ("12", 12), ("0x1f", 31), ("010", 8), ("0", 0), ("7\n", 7),
    ("3abc", None), ("0x", None), ("09", None), ("1 2", None),   # kstrtoul refuses them
])
def test_index_numbers_are_base_0_and_whole(text, value):
    assert kstrtoul(text) == value


def names(ft, hash_):
    return sorted(ft.arch.lookup(ip)[0] for ip in hash_)


@pytest.mark.parametrize("pattern, expected", [
    ("*schedule", ["preempt_schedule", "schedule"]),
    ("*schedule*", ["preempt_schedule", "schedule", "schedule_timeout"]),
    ("schedule*", ["schedule", "schedule_timeout"]),
    ("*pin*lock", ["_raw_spin_lock", "_raw_spin_unlock"]),
    ("mutex*unl*", ["mutex_unlock"]),
    ("sch*ule", ["schedule"]),
    ("[Ss]y[Ss]_*", ["SyS_write", "sys_read"]),
    ("sch?dule", ["schedule"]),
    ("sched_clock", ["sched_clock"]),
    ("1", ["schedule"]),
    ("0xa", ["sched_clock"]),
    ("11", ["weak_dead"]),  # an index reaches even an invalid site
])
def test_set_filter_selects_what_func_filter_glob_expects(ft, pattern, expected):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, pattern, reset=True)
    assert names(ft, ops.filter_hash) == expected


@pytest.mark.parametrize("pattern", ["0", "12", "nope", "weak_dead", "notrace_helper",
                                     "*nothing*", "", "!", "schedule ", "a b"])
def test_pattern_without_match_is_einval_and_changes_nothing(ft, pattern):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "schedule", reset=False)
    with pytest.raises(FtraceError) as e:
        ft.ftrace_set_filter(ops, pattern, reset=True)
    assert e.value.errno == errno.EINVAL
    assert ops.filter_hash == {SITE["schedule"]}


def test_bang_removes_and_counts_as_found_even_if_absent(ft):
    ops = FtraceOps(cb)
    ft.ftrace_set_filter(ops, "*schedule*", reset=False)
    ft.ftrace_set_filter(ops, "!preempt_*", reset=False)
    assert names(ft, ops.filter_hash) == ["schedule", "schedule_timeout"]
    ft.ftrace_set_filter(ops, "!preempt_*", reset=False)
    assert names(ft, ops.filter_hash) == ["schedule", "schedule_timeout"]
