"""klp_ftrace_handler under concurrency: a vCPU stopped at each instruction of the handler
(its common case and the kernel's general code) while the host starts, or reverses, a
transition. Each call of the patched function still runs the version its task's state
selects, as the consistency model promises: checked at the first instruction of both
bodies, on every call, for the whole run."""
from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from vcpu_pause import pause_at

from emu import memlayout as L

SYS = "/sys/kernel/livepatch/klp_spinner_patch"


def instructions(m, name: str) -> list[int]:
    sym = m.image.symbol(name)
    return [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(sym.addr, sym.size), sym.addr)]


class Consistency:
    """Code hooks at the original body (after its fentry site) and at the new function:
    whichever runs must be the one the task's state selects (transition.c's rules: in a
    transition a task runs the new code unless its state is UNPATCHED; outside one, the new
    code iff the patch is enabled)."""

    def __init__(self, m, old_func: int, new_func: int) -> None:
        self.m, self.calls, self.wrong = m, {"old": 0, "new": 0}, []
        self.hooks = [m.add_code_hook(old_func + 5, lambda cpu: self.check(cpu, "old")),
                      m.add_code_hook(new_func, lambda cpu: self.check(cpu, "new"))]

    def check(self, cpu, ran: str) -> None:
        lp = self.m.livepatch
        tr = lp.transition
        if tr.patch is not None:
            want_new = tr.patch_state(self.m.kernel.current(cpu.index)) != L.KLP_TRANSITION_UNPATCHED
        else:
            want_new = any(p.enabled for p in lp.patches)
        self.calls[ran] += 1
        if want_new != (ran == "new"):
            self.wrong.append((ran, tr.patch is not None, self.m.now))

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def test_a_vcpu_paused_anywhere_in_the_handler_never_runs_the_wrong_version(booted_snapshots, kmod):
    m = booted_snapshots(2)
    m.insmod(kmod("klp-spinner"))
    m.insmod(kmod("klp-spinner-patch"))
    m.run_until(lambda: m.livepatch.transition.patch is None, 3000)
    func = m.livepatch.patches[0].funcs()[0]
    check = Consistency(m, func.old_func, func.new_func)
    patched = m.snapshot()                      # patched, no transition
    m.fs.write(f"{SYS}/enabled", "0")
    m.run(ms=2)
    assert m.fs.read(f"{SYS}/transition") == "1\n"
    unpatching = m.snapshot()                   # unpatching in progress: the general code
    stops = {"klp_ftrace_handler": 0, "klp_ftrace_handler_general": 0}
    for name, start, action in (("klp_ftrace_handler", patched, "0"),
                                ("klp_ftrace_handler_general", unpatching, "1")):
        for pc in instructions(m, name):
            m.restore(start)
            cpu = pause_at(m, pc, 5)
            if cpu is None:
                continue                        # not on this path (recursion, a nop ...)
            assert cpu.rip() == pc
            stops[name] += 1
            m.fs.write(f"{SYS}/enabled", action)   # start unpatching, or reverse it
            m.run(ms=3)
    m.restore(patched)
    m.fs.write(f"{SYS}/enabled", "0")
    m.run_until(lambda: "klp_spinner_patch" not in m.fs.listdir("/sys/kernel/livepatch"), 3000)
    m.run(ms=3)
    check.remove()
    assert check.wrong == []
    assert check.calls["old"] > 100 and check.calls["new"] > 100
    assert stops["klp_ftrace_handler"] > 25 and stops["klp_ftrace_handler_general"] > 25
