"""``m.livepatch.explain()``: why a transition has not completed, in words.

Beyond the kernel (which only logs ``is sleeping on function`` lines when debugging is on):
every task not yet switched, what it is doing, its symbolised stack, and the patched
function that holds it, so the user can decide to wait, signal, force or reverse.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.cpu import RUNNING

from .transition import PENDING, state_word

if TYPE_CHECKING:
    from .core import Livepatch


def explain(lp: "Livepatch") -> str:
    tr = lp.transition
    if tr.patch is None:
        return "no livepatch transition in progress\n"
    lines = [f"'{tr.patch.name}': {state_word(tr.target)} transition in progress, "
             f"{tr.signals_cnt} attempt(s) so far"]
    waiting = [t for t in tr.tasks() if tr.patch_state(t.addr) != tr.target]
    if not waiting:
        lines.append("every task has switched; the next attempt completes it")
    for t in waiting:
        pending = "pending" if tr._flags(t.addr) & PENDING else "not pending"
        if t.cpu is not None and t.cpu.state == RUNNING:
            lines.append(f"{t.comm}:{t.pid} is running on CPU {t.cpu.index} ({pending}); it "
                         "switches at its next return to user space or idle")
            continue
        ret, name = tr._check_stack(t)
        stack = tr._stack(t) or []
        if ret == -98:
            lines.append(f"{t.comm}:{t.pid} is sleeping on function {name} ({pending})")
        elif ret == -22:
            lines.append(f"{t.comm}:{t.pid} has an unreliable stack ({pending})")
        else:
            lines.append(f"{t.comm}:{t.pid} can switch now ({pending})")
        lines += [f"    {lp.m.lookup(a)}" for a in stack[:16]]
    return "\n".join(lines) + "\n"
