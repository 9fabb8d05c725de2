"""Stopping a vCPU at one instruction, for the tests that prove a hot path safe by changing
things while some vCPU stands at each of its instructions."""
from __future__ import annotations

from typing import Callable

from emu import BudgetExceeded


def pause_at(m, pc: int, ms: float, when: Callable | None = None):
    """Run until a vCPU (one ``when(cpu)`` accepts, if given) is about to execute ``pc`` and
    stop it right there; that vCPU, or None if none got there within ``ms`` of guest time."""
    paused = []

    def stop(cpu) -> None:
        if not paused and (when is None or when(cpu)):
            paused.append(cpu)
            cpu.request_stop()
    hook = m.add_code_hook(pc, stop)
    try:
        m.run_until(lambda: bool(paused), ms)
    except BudgetExceeded:
        return None
    finally:
        hook.remove()
    return paused[0]
