"""klp's ``pr_debug`` lines as dynamic-debug callsites (kernel/livepatch/transition.c of
Linux 6.1: its file, line numbers, functions and formats), so that
/sys/kernel/debug/dynamic_debug/control switches them as on Linux.

The machine starts with the setting the kernel's livepatch selftests make
(``file kernel/livepatch/* +p; func klp_try_switch_task -p``): the transition's lines are in
the log, the per-task ones are not.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emu.dynamic_debug import Callsite

if TYPE_CHECKING:
    from emu import Machine

FILE = "kernel/livepatch/transition.c"
PR_FMT = "livepatch: "
# (line, function, format) of every pr_debug in transition.c
SITES = (
    (75, "klp_complete_transition", "'%s': completing %s transition\n"),
    (148, "klp_cancel_transition", "'%s': canceling patching transition, going to unpatch\n"),
    (316, "klp_try_switch_task", "%s: %s:%d is running\n"),
    (320, "klp_try_switch_task", "%s: %s:%d has an unreliable stack\n"),
    (324, "klp_try_switch_task", "%s: %s:%d is sleeping on function %s\n"),
    (329, "klp_try_switch_task", "%s: Unknown error code (%d) when trying to switch %s:%d\n"),
    (521, "klp_init_transition", "'%s': initializing %s transition\n"),
    (582, "klp_reverse_transition", "'%s': reversing transition from %s\n"),
)


def _pattern(fmt: str) -> re.Pattern:
    parts = re.split(r"(%s|%d)", fmt.rstrip("\n"))
    return re.compile("".join(".*" if p == "%s" else r"-?\d+" if p == "%d" else re.escape(p)
                              for p in parts) + r"\Z", re.S)


class KlpDebug:
    """The callsites, registered with ``m.dynamic_debug``; ``pr_debug(text)`` finds the
    site whose format made ``text`` (a line of klp, ``livepatch: `` first)."""

    def __init__(self, m: "Machine") -> None:
        self.dd = m.dynamic_debug
        self.sites = [(self.dd.add(Callsite("livepatch", FILE, fn, line, fmt,
                                            "" if fn == "klp_try_switch_task" else "p")),
                       _pattern(fmt)) for line, fn, fmt in SITES]

    def pr_debug(self, text: str) -> None:
        body = text.removeprefix(PR_FMT)
        site = next((s for s, pat in self.sites if pat.match(body)), None)
        if site is None:
            raise ValueError(f"no pr_debug callsite prints {text!r}")
        self.dd.pr_debug(site, text)
