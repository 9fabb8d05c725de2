"""What debugging leaves in a machine: nothing the guest or a restored snapshot could see.

A debugger's precise runs and its breakpoints are Unicorn code hooks; deleting one makes
Unicorn forget the blocks it was translated into, each looked up through the current page
tables, and a user program's block seen from another address space faults inside the
engine. That fault once left CR2, error_code, exception_next_eip and old_exception in the
CPU state (the guest's next page fault became a double fault)."""
from __future__ import annotations

import hashlib

from test_gdb import run_gdb

from emu import Machine, ucx
from emu import memlayout as L


def fresh_machine(cpus: int) -> Machine:
    """A machine no debugger ever ran (the shared booted ones may have been)."""
    m = Machine(cpus=cpus)
    m.boot()
    return m


def cpu_states(m: Machine) -> list[bytes]:
    """Every vCPU's whole CPU state: Unicorn's copy of it, with the fields no register read
    reaches."""
    return [bytes(c.uc.context_save())[ucx.CTX_HDR:] for c in m.cpus]


def continuation(m: Machine, snap) -> tuple:
    """All that 30 ms from ``snap`` show: CPU states, RAM, the console and the counts.
    Always from a restore: the state holds one host address, that of the translated code
    that last filled the TLB (env->retaddr), which lies elsewhere in a machine that went on
    from boot without a restore's flush."""
    m.restore(snap)
    m.run(ms=30)
    return cpu_states(m), hashlib.sha256(m.ram).hexdigest(), m.console, m.stats()


def test_a_restored_machine_continues_as_before_once_precise_runs_ended():
    """Precise runs (a debugger's: count= instead of the native counter) translate the user
    programs under Unicorn's count= hook, which Unicorn deleted at the start of the next
    run without count=: the restored machine's first run."""
    m = fresh_machine(2)
    snap = m.snapshot()
    before = continuation(m, snap)
    m.restore(snap)
    for c in m.cpus:
        c.set_precise(True)
    m.run(ms=30)
    for c in m.cpus:
        c.set_precise(False)
    assert continuation(m, snap) == before


def test_removing_a_code_hook_in_a_user_program_changes_no_cpu_state():
    m = fresh_machine(2)
    hits = []
    hook = m.add_code_hook(L.USER_CODE_VA, lambda cpu: hits.append(cpu.index))
    m.run(ms=30)
    states = cpu_states(m)
    hook.remove()
    assert cpu_states(m) == states
    assert sorted(set(hits)) == [0, 1]      # both vCPUs ran the program under the hook


def test_a_snapshot_restored_after_a_session_continues_as_if_gdb_never_came(require_tool):
    """Breakpoints, a watchpoint and the guest running between two sessions leave nothing
    behind: restored, the machine runs on byte for byte as before gdb attached."""
    gdb = require_tool("gdb")
    m = fresh_machine(2)
    snap = m.snapshot()
    before = continuation(m, snap)
    m.restore(snap)
    first, second = run_gdb(m, gdb, ["break schedule", "continue", "delete", "watch nr_switches",
                                     "continue", "delete", "detach"],
                            ["print nr_switches", "detach"])
    assert "Old value = " in first and "[Inferior 1 (Remote target) detached]" in second
    assert continuation(m, snap) == before
