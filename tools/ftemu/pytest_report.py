"""The report a failing test shows about each ftemu machine it used: the console tail, every
CPU's state, RIP and backtrace, and the last lines of its call traces."""
from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_RBP

from emu import EmuError, Machine
from emu.crash import cpu_line

CONSOLE_TAIL, TRACE_TAIL = 20, 20


def cpu_lines(m: Machine) -> list[str]:
    """Every CPU as a crash report shows it (state, RIP as %pS, task), then its backtrace."""
    out = []
    for c in m.cpus:
        out.append(cpu_line(m, c))
        if c.state != "stopped":
            out += ["    " + f for f in m.backtrace(c, c.rip(), c.regs.read(UC_X86_REG_RBP))[1:]]
    return out


def failure_report(m: Machine, label: str = "machine") -> str:
    """What a failing test shows about ``m``: the console tail, every CPU, the last traces."""
    console = m.console.splitlines()[-CONSOLE_TAIL:]
    parts = [f"--- {label}: {len(m.cpus)} CPUs, {m.now / 1e6:.3f} ms virtual"
             + (f", exit code {m.exit_code}" if m.exit_code is not None else ""),
             f"--- console (last {len(console)} lines)", *console, "--- CPUs"]
    try:
        parts += cpu_lines(m)
    except Exception as e:            # noqa: BLE001 - a report must not hide the failure
        parts.append(f"(CPU state unreadable: {e})")
    for t in getattr(getattr(m, "tracing", None), "call_traces", [])[-2:]:
        lines = t.lines(TRACE_TAIL)
        parts += [f"--- m.tracing({', '.join(map(repr, t.patterns))}): last {len(lines)} of "
                  f"{len(t.calls)} calls", *lines]
    parts += _trace_file_tail(m)
    return "\n".join(parts)


def _trace_file_tail(m: Machine) -> list[str]:
    """The last entries of tracefs ``trace`` when a tracer has recorded any."""
    try:
        lines = [ln for ln in m.fs.read("/sys/kernel/tracing/trace").splitlines()
                 if ln and not ln.startswith("#")]
    except (AttributeError, OSError, EmuError):
        return []
    return [f"--- /sys/kernel/tracing/trace (last {min(len(lines), TRACE_TAIL)} entries)",
            *lines[-TRACE_TAIL:]] if lines else []
