"""The machine: a full-system x86-64 PC on Unicorn (vCPUs, RAM, paging, interrupts, devices).

``Machine`` is the entry point; ``EmuError`` the one base of its errors.
"""
from .errors import (BudgetExceeded, BuildError, CallbackError, EmuError, GuestMemoryError,
                     GuestPanic, TripleFault)
from .machine import Machine, Snapshot

__all__ = ["Machine", "Snapshot", "EmuError", "GuestPanic", "TripleFault", "BudgetExceeded",
           "BuildError", "GuestMemoryError", "CallbackError"]
