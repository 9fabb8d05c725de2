"""set_ftrace_filter, set_ftrace_notrace, the filter commands, the pid and cpumask files and
instances/, used the way a tutorial uses them: through m.tracefs."""
from __future__ import annotations

import errno
import fnmatch
import os

import pytest

ALL = "#### all functions enabled ####\n"
NONE = "#### no functions disabled ####\n"


@pytest.fixture
def m(booted_snapshots):
    return booted_snapshots(2)


def names(m, pattern: str) -> str:
    """The functions of available_filter_functions matching a shell glob, one per line."""
    funcs = m.tracefs.read("available_filter_functions").splitlines()
    return "".join(f + "\n" for f in funcs if fnmatch.fnmatchcase(f, pattern))


class RecordingTrace:
    """Stands in for the tracers' trace array behind the commands (instance.TraceActions):
    the state a trigger flips and every action asked of it, in order."""

    def __init__(self) -> None:
        self.on = True
        self.calls: list[tuple] = []

    def tracer_tracing_is_on(self) -> bool:
        return self.on

    def tracer_tracing_on(self) -> None:
        self.on = True
        self.calls.append(("on",))

    def tracer_tracing_off(self) -> None:
        self.on = False
        self.calls.append(("off",))

    def tracing_alloc_snapshot(self) -> None:
        self.calls.append(("alloc_snapshot",))

    def tracing_snapshot(self, cpu: int) -> None:
        self.calls.append(("snapshot",))

    def ftrace_dump(self, cpu) -> None:
        self.calls.append(("dump", cpu))

    def trace_dump_stack(self, cpu: int) -> None:
        self.calls.append(("stack", cpu))


def test_empty_hashes_list_as_the_kernel_says(m):
    assert m.tracefs.read("set_ftrace_filter") == ALL
    assert m.tracefs.read("set_ftrace_notrace") == NONE


@pytest.mark.parametrize("token, glob", [
    ("*schedule", "*schedule"), ("*schedule*", "*schedule*"), ("schedule*", "schedule*"),
    ("*pin*lock", "*pin*lock"), ("sch*ule", "sch*ule"), ("[Ss]ched*", "[Ss]ched*"),
    ("sch?dule", "sch?dule"), ("schedule", "schedule"),
])
def test_globs_select_exactly_the_matching_functions(m, token, glob):
    m.tracefs.write("set_ftrace_filter", token + "\n")
    assert m.tracefs.read("set_ftrace_filter") == names(m, glob) != ""


def test_tokens_add_and_remove_and_an_index_names_a_line(m):
    t = m.tracefs
    t.write("set_ftrace_filter", "*sched* !__schedule !sched_init\n")
    assert t.read("set_ftrace_filter") == "".join(
        line for line in names(m, "*sched*").splitlines(True)
        if line not in ("__schedule\n", "sched_init\n"))
    t.write("set_ftrace_filter", "1")
    assert t.read("set_ftrace_filter") == t.read("available_filter_functions").splitlines(True)[0]


def test_the_hash_changes_when_the_write_completes(m):
    ops = m.ftrace.instances.top.ops
    h = m.tracefs.open("set_ftrace_filter", os.O_WRONLY | os.O_TRUNC)
    h.write(b"kfree ", 0)
    h.write(b"kal", 6)                 # a token split across two write(2) calls
    h.write(b"loc\n", 9)
    assert ops.filter_hash == frozenset()
    h.release()
    assert m.tracefs.read("set_ftrace_filter") == "kalloc\nkfree\n"
    assert ops.filter_hash == {m.ftrace.function_address("kfree"),
                               m.ftrace.function_address("kalloc")}


def test_a_failing_token_keeps_the_ones_before_it(m):
    t = m.tracefs
    with pytest.raises(OSError) as e:
        t.write("set_ftrace_filter", "kfree no_such_function kalloc\n")
    assert e.value.errno == errno.EINVAL
    assert t.read("set_ftrace_filter") == "kfree\n"
    with pytest.raises(OSError) as e:          # unterminated: found at close
        t.write("set_ftrace_filter", "no_such_function", append=True)
    assert e.value.errno == errno.EINVAL and t.read("set_ftrace_filter") == "kfree\n"


def test_truncate_clears_and_append_adds(m):
    t = m.tracefs
    t.write("set_ftrace_notrace", "kfree\n")
    t.write("set_ftrace_notrace", "kalloc\n", append=True)
    assert t.read("set_ftrace_notrace") == "kalloc\nkfree\n"
    t.write("set_ftrace_notrace", "")
    assert t.read("set_ftrace_notrace") == NONE


def test_filters_change_what_a_registered_ops_sees(m):
    inst = m.ftrace.instances.top
    seen: set[str] = set()
    inst.ops.func = lambda ip, parent_ip, op, regs: seen.add(m.lookup(ip).split("+")[0])
    m.tracefs.write("set_ftrace_filter", "schedule\nscheduler_tick\n")
    m.ftrace.register_ftrace_function(inst.ops)
    try:
        m.tracefs.write("set_ftrace_notrace", "scheduler_tick\n")
        assert m.tracefs.read("enabled_functions").startswith("schedule (1) ")
        m.run(ms=30)
        assert seen == {"schedule"}
        m.tracefs.write("set_ftrace_notrace", "")
        m.run(ms=30)
        assert seen == {"schedule", "scheduler_tick"}
    finally:
        m.ftrace.unregister_ftrace_function(inst.ops)


def test_mod_patterns_are_cached_for_modules_not_loaded(m):
    t = m.tracefs
    t.write("set_ftrace_filter", "non_exist_func:mod:non_exist_module\n")
    t.write("set_ftrace_filter", "*:mod:other\n", append=True)
    assert t.read("set_ftrace_filter") == (
        ALL + "*:mod:other\nnon_exist_func:mod:non_exist_module\n")
    t.write("set_ftrace_filter", "!*:mod:other\n", append=True)
    assert t.read("set_ftrace_filter") == ALL + "non_exist_func:mod:non_exist_module\n"
    with pytest.raises(OSError) as e:
        t.write("set_ftrace_filter", "!x:mod:other\n", append=True)
    assert e.value.errno == errno.EINVAL
    t.write("set_ftrace_filter", "kfree:mod:!mymod\n")      # not in a module: core functions
    assert t.read("set_ftrace_filter") == "kfree\n"


def test_commands_are_listed_as_the_kernel_lists_them(m):
    t = m.tracefs
    m.ftrace.instances.top.trace = RecordingTrace()
    t.write("set_ftrace_filter", "schedule:traceoff\n")
    assert t.read("set_ftrace_filter") == ALL + "schedule:traceoff:unlimited\n"
    for cmd in ("kfree:traceon:3", "kalloc:stacktrace", "kalloc:stacktrace:5", "kfree:dump",
                "kfree:cpudump", "kfree:snapshot:2"):
        t.write("set_ftrace_filter", cmd + "\n", append=True)
    t.write("set_ftrace_filter", "kfree\n")            # `>` keeps the triggers
    assert t.read("set_ftrace_filter") == (
        "kfree\n"
        "kfree:snapshot:count=2\n"
        "kfree:cpudump:unlimited\n"
        "kfree:dump:count=1\n"
        "kalloc:stacktrace:count=5\n"
        "kalloc:stacktrace:unlimited\n"
        "kfree:traceon:count=3\n"
        "schedule:traceoff:unlimited\n")
    for cmd in ("!kfree:traceon:0", "!kalloc:stacktrace", "!kalloc:stacktrace:0", "!kfree:dump",
                "!kfree:cpudump", "!kfree:snapshot:0", "!*:traceoff"):
        t.write("set_ftrace_filter", cmd + "\n", append=True)
    assert t.read("set_ftrace_filter") == "kfree\n"
    assert m.ftrace.ops_list == []                     # every probe ops is gone


def test_command_errors(m):
    t = m.tracefs
    m.ftrace.instances.top.trace = None                # as if no tracer side were attached
    with pytest.raises(OSError) as e:                  # no trace array behind it yet
        t.write("set_ftrace_filter", "schedule:traceoff\n")
    assert e.value.errno == errno.ENODEV
    m.ftrace.instances.top.trace = RecordingTrace()
    cases = [("set_ftrace_filter", "schedule:bogus\n", errno.EINVAL),
             ("set_ftrace_notrace", "schedule:traceoff\n", errno.EINVAL),
             ("set_ftrace_filter", "nothing_matches:traceoff\n", errno.EINVAL),
             ("set_ftrace_filter", "schedule:traceoff:abc\n", errno.EINVAL),
             ("set_ftrace_filter", "!schedule:traceon\n", errno.ENODEV)]
    for path, text, code in cases:
        with pytest.raises(OSError) as e:
            t.write(path, text, append=True)
        assert e.value.errno == code, text
    t.write("set_ftrace_filter", "schedule:traceoff\n")
    with pytest.raises(OSError) as e:                  # attached already: nothing new
        t.write("set_ftrace_filter", "schedule:traceoff\n", append=True)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        t.write("set_ftrace_filter", "!kfree:traceoff\n", append=True)
    assert e.value.errno == errno.EINVAL


def test_traceoff_counts_only_the_hits_that_turned_tracing_off(m):
    tr = m.ftrace.instances.top.trace = RecordingTrace()
    m.tracefs.write("set_ftrace_filter", "schedule:traceoff:2\n")
    m.run(ms=20)
    assert tr.calls == [("off",)]                      # later hits found it off already
    assert m.tracefs.read("set_ftrace_filter") == ALL + "schedule:traceoff:count=1\n"
    tr.on = True
    m.run(ms=20)
    tr.on = True
    m.run(ms=20)
    assert tr.calls == [("off",), ("off",)] and tr.on
    assert m.tracefs.read("set_ftrace_filter") == ALL + "schedule:traceoff:count=0\n"
    assert "schedule (1)" in m.tracefs.read("enabled_functions")
    m.tracefs.write("set_ftrace_filter", "!schedule:traceoff:0\n")
    assert m.tracefs.read("set_ftrace_filter") == ALL and m.ftrace.ops_list == []


def test_a_late_hit_on_a_function_a_counted_command_let_go_of_does_nothing(m):
    """A vCPU that entered the trampoline before ``!schedule:traceoff`` and calls the
    probe afterwards (it found no count: a KeyError ended ``ftemu mount``'s guest)."""
    m.tracefs.write("set_ftrace_filter", "schedule:traceoff:3\n")
    probe = m.ftrace.instances.top.probes[0]
    ip = m.symbol_address("schedule")
    m.tracefs.write("set_ftrace_filter", "!schedule:traceoff:0\n")
    probe._call(ip, 0, probe.ops, None)
    assert m.tracefs.read("tracing_on") == "1\n"


def test_dump_fires_once_cpudump_every_time_and_stacktrace_counts(m):
    tr = m.ftrace.instances.top.trace = RecordingTrace()
    m.tracefs.write("set_ftrace_filter", "schedule:dump\nschedule:cpudump\n"
                    "scheduler_tick:stacktrace:3\n")
    m.run(ms=50)
    dumps = [c for c in tr.calls if c[0] == "dump"]
    assert dumps.count(("dump", None)) == 1            # dump: once, every CPU
    assert len(dumps) > 3 and all(c[1] in (0, 1) for c in dumps if c != ("dump", None))
    assert [c for c in tr.calls if c[0] == "stack"].__len__() == 3


def test_pid_files(m):
    t = m.tracefs
    told: list[str] = []
    m.ftrace.instances.top.listeners.append(told.append)
    assert t.read("set_ftrace_pid") == "no pid\n" == t.read("set_ftrace_notrace_pid")
    t.write("set_ftrace_pid", "7 3\n")
    t.write("set_ftrace_pid", "0x10\n", append=True)
    assert t.read("set_ftrace_pid") == "3\n7\n16\n"
    assert m.ftrace.instances.top.pids == {3, 7, 16}
    with pytest.raises(OSError) as e:
        t.write("set_ftrace_pid", "12 x\n", append=True)
    assert e.value.errno == errno.EINVAL and t.read("set_ftrace_pid") == "3\n7\n16\n"
    t.write("set_ftrace_pid", "")
    assert t.read("set_ftrace_pid") == "no pid\n"
    t.write("set_ftrace_notrace_pid", "1\n")
    assert told == ["pids", "pids", "pids", "no_pids"]


def test_tracing_cpumask(m):
    t = m.tracefs
    assert t.read("tracing_cpumask") == "3\n"
    t.write("tracing_cpumask", "2\n")
    assert t.read("tracing_cpumask") == "2\n" and m.ftrace.instances.top.tracing_cpumask == 2
    for bad, code in (("4\n", errno.EOVERFLOW), ("zz\n", errno.EINVAL), ("\n", errno.EINVAL)):
        with pytest.raises(OSError) as e:
            t.write("tracing_cpumask", bad)
        assert e.value.errno == code
    assert t.read("tracing_cpumask") == "2\n"


def test_instances_have_their_own_filters_and_go_away_whole(m):
    t = m.tracefs
    made, gone = [], []
    m.ftrace.instances.add_hooks(lambda inst: made.append(inst.name),
                                 lambda inst: gone.append(inst.name))
    assert made == [""]                                 # run for the top level at once
    t.mkdir("instances/foo")
    assert made == ["", "foo"] and "foo" in t.listdir("instances")
    assert {"set_ftrace_filter", "set_ftrace_notrace", "set_ftrace_pid",
            "set_ftrace_notrace_pid", "tracing_cpumask"} <= set(t.listdir("instances/foo"))
    assert "available_filter_functions" not in t.listdir("instances/foo")
    t.write("instances/foo/set_ftrace_filter", "kfree\n")
    assert t.read("instances/foo/set_ftrace_filter") == "kfree\n"
    assert t.read("set_ftrace_filter") == ALL
    foo = m.ftrace.instances.lookup("foo")
    foo.ops.func = lambda *a: None
    m.ftrace.register_ftrace_function(foo.ops)
    with pytest.raises(OSError) as e:
        t.rmdir("instances/foo")
    assert e.value.errno == errno.EBUSY and t.exists("instances/foo")
    m.ftrace.unregister_ftrace_function(foo.ops)
    t.rmdir("instances/foo")
    assert gone == ["foo", "foo"] and t.listdir("instances") == []
    with pytest.raises(OSError) as e:
        t.rmdir("instances/foo")
    assert e.value.errno == errno.ENOENT


def test_readme_advertises_glob_patterns_for_the_selftests(m):
    assert "accepts: func_full_name or glob-matching-pattern" in m.tracefs.read("README")


def test_mod_patterns_wait_for_their_module_and_leave_nothing_after_rmmod(m, kmod):
    t = m.tracefs
    t.write("set_ftrace_filter", "*:mod:hello_mod\n")
    t.write("set_ftrace_notrace", "init*:mod:hello_mod\n")
    assert t.read("set_ftrace_filter") == ALL + "*:mod:hello_mod\n"
    m.insmod(kmod("hello-mod"))
    assert t.read("set_ftrace_filter") == (
        "hello_twice [hello_mod]\ninit_module [hello_mod]\ncleanup_module [hello_mod]\n")
    assert t.read("set_ftrace_notrace") == "init_module [hello_mod]\n"
    t.write("set_ftrace_filter", "!init*:mod:hello_mod\n", append=True)
    t.write("set_ftrace_filter", "kfree:mod:!\n", append=True)         # `!` alone: core
    assert t.read("set_ftrace_filter") == (
        "kfree\nhello_twice [hello_mod]\ncleanup_module [hello_mod]\n")
    with pytest.raises(OSError) as e:                  # loaded, and nothing matches: no cache
        t.write("set_ftrace_filter", "nothing*:mod:hello_mod\n", append=True)
    assert e.value.errno == errno.EINVAL
    t.write("set_ftrace_filter", "!kfree\n", append=True)
    m.rmmod("hello_mod")
    assert t.read("set_ftrace_filter") == ""           # zeroed entries: not "all functions"
