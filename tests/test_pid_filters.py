"""set_ftrace_pid and set_ftrace_notrace_pid with the ``function-fork`` option, as
func-filter-pid.tc uses them: a listed task's children are listed from their creation on and
a freed task leaves the lists; without the option the lists stay as written. The filtering is
the guest callback's own (nothing on the host runs per call or per context switch)."""
from __future__ import annotations

from emu import Machine


def tracing_syscalls(*options: str, pid_file: str = "set_ftrace_pid",
                     functions: str = "do_syscall_64") -> Machine:
    """Every system call (or ``functions``) traced for init (pid 1) and, with
    ``function-fork``, its children; or, in set_ftrace_notrace_pid, for all others."""
    m = Machine(cpus=2)
    m.boot()
    tfs = m.tracefs
    tfs.write("set_ftrace_filter", functions)
    tfs.write(pid_file, "1")
    for opt in options:
        tfs.write("trace_options", opt)
    tfs.write("current_tracer", "function")
    return m


def spawn_faulter(m: Machine) -> int:
    """init starts guest/user/faulter.c (about 20 ms of sleeps, then killed by a fault)."""
    name = m.call("kalloc")
    m.write(name, b"faulter\0")
    return m.call("user_spawn", name)


def tasks_in_trace(m: Machine) -> set[str]:
    return {line.split()[0] for line in m.tracefs.read("trace").splitlines() if not line.startswith("#")}


def test_with_function_fork_the_children_of_a_listed_task_are_traced_until_freed():
    m = tracing_syscalls("function-fork")
    pid = spawn_faulter(m)
    assert f"\n{pid}\n" in "\n" + m.tracefs.read("set_ftrace_pid")
    m.run(ms=10)
    assert f"faulter-{pid}" in tasks_in_trace(m)
    m.run(ms=60)                                   # killed, then freed
    assert f"{pid}\n" not in m.tracefs.read("set_ftrace_pid").splitlines(keepends=True)
    assert "1\n" in m.tracefs.read("set_ftrace_pid").splitlines(keepends=True)
    m.tracefs.write("options/function-fork", "0")  # the fork and free hooks go
    assert [line.split()[0] for line in m.tracefs.read("enabled_functions").splitlines()] == [
        "do_syscall_64"]


def test_without_function_fork_only_the_listed_pid_is_traced():
    m = tracing_syscalls()
    pid = spawn_faulter(m)
    m.run(ms=10)
    assert m.tracefs.read("set_ftrace_pid") == "1\n"
    assert tasks_in_trace(m) <= {"init-1"}
    assert f"faulter-{pid}" not in tasks_in_trace(m)


def test_children_of_a_notrace_pid_are_not_traced_either():
    m = tracing_syscalls("function-fork", pid_file="set_ftrace_notrace_pid", functions="schedule")
    pid = spawn_faulter(m)
    assert m.tracefs.read("set_ftrace_notrace_pid").splitlines()[-1] == str(pid)
    m.run(ms=10)
    seen = {task.rsplit("-", 1)[0] for task in tasks_in_trace(m)}
    assert "rcu_sync" in seen                      # kernel threads are not init's children
    assert not {"init", "faulter", "ping", "pong"} & seen


def test_a_machine_snapshot_keeps_the_option_and_its_hooks_together():
    m = tracing_syscalls()
    saved = m.snapshot()
    m.tracefs.write("options/function-fork", "1")
    m.restore(saved)
    assert m.tracefs.read("options/function-fork") == "0\n"
    pid = spawn_faulter(m)
    assert m.tracefs.read("set_ftrace_pid") == "1\n"
    m.tracefs.write("options/function-fork", "1")
    child = spawn_faulter(m)
    assert {"1", str(child)} <= set(m.tracefs.read("set_ftrace_pid").split()) and child != pid
