"""The ftemu pytest plugin (a ``pytest11`` entry point, active wherever ftemu is installed).

Fixtures: ``machine`` (a booted guest, restored from a boot snapshot before every test, so
tests cannot leak into each other) and ``machine_factory`` (other shapes, more machines).
Boots are shared per shape for the session (per worker under pytest-xdist). The marker
``@pytest.mark.machine(cpus=4, cmdline="...", memory_mb=64)`` shapes ``machine``;
``--ftemu-cpus`` and ``--ftemu-kernel`` set the defaults. A failing test's report carries the
guest's console tail, every CPU's RIP and backtrace and the last trace lines; a guest panic
the test swallowed fails it (``allow_panic=True`` in the marker permits one).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from emu import memlayout as L

from emu import Machine

from .pytest_report import failure_report

SHAPE_KEYS = ("cpus", "memory_mb", "cmdline")
_MACHINES = pytest.StashKey[list]()
_ALLOW_PANIC = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ftemu", "ftemu guest machines")
    group.addoption("--ftemu-cpus", type=int, default=2, metavar="N",
                    help="vCPUs of the machine fixture (default 2)")
    group.addoption("--ftemu-kernel", default=None, metavar="ELF",
                    help="guest kernel ELF for the machine fixtures (default: the bundled one)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "machine(cpus=N, cmdline=TEXT, memory_mb=MIB, allow_panic=False): the shape "
        "of the ftemu machine fixture for this test")


class MachinePool:
    """Booted machines per shape with their boot snapshots; a test borrows them restored."""

    def __init__(self, config: pytest.Config) -> None:
        kernel = config.getoption("ftemu_kernel")
        self.kernel = str(Path(kernel).resolve()) if kernel else None
        self.default_cpus = config.getoption("ftemu_cpus")
        self.free: dict[tuple, list[tuple[Machine, Any, dict]]] = {}
        self.boots: list[float] = []
        self.setups: list[float] = []

    def shape(self, cpus: int | None = None, memory_mb: int = 32,
              cmdline: str = "console=ttyS0") -> tuple:
        return (self.default_cpus if cpus is None else cpus, memory_mb, cmdline)

    def acquire(self, shape: tuple) -> tuple[Machine, Any, dict]:
        """A machine of ``shape`` as it was right after boot."""
        entries = self.free.setdefault(shape, [])
        if not entries:
            t0 = time.perf_counter()
            m = Machine(**dict(zip(SHAPE_KEYS, shape)), kernel=self.kernel)
            m.boot()
            self.boots.append(time.perf_counter() - t0)
            return m, m.snapshot(), _tables(m)
        t0 = time.perf_counter()
        entry = entries.pop()
        m, snap, tables = entry
        m.restore(snap)
        if m.tracing is not None:             # None for a kernel without tracer support
            m.tracing.call_traces.clear()
        self.setups.append(time.perf_counter() - t0)
        return entry

    def release(self, shape: tuple, entry: tuple[Machine, Any, dict]) -> None:
        """Back to the pool, unless the test left hooks the snapshot cannot take back."""
        m, _, tables = entry
        now = _tables(m)
        if now["code_hooks"] != tables["code_hooks"]:
            return                                    # Unicorn-level hooks: boot afresh
        for name, value in tables.items():
            _put_table(m, name, value)
        self.free.setdefault(shape, []).append(entry)


def _tables(m: Machine) -> dict:
    """Copies of the machine's host-side dispatch tables (what tests may add to)."""
    return {"port_out": dict(m.port_out), "port_in": dict(m.port_in),
            "trap_hooks": {k: list(v) for k, v in m.trap_hooks.items()},
            "delivery_listeners": list(m.delivery_listeners),
            "serial_listeners": list(m.serial.listeners), "code_hooks": list(m.code_hooks)}


def _put_table(m: Machine, name: str, value: Any) -> None:
    target = m.serial.listeners if name == "serial_listeners" else getattr(m, name)
    if isinstance(target, dict):
        target.clear()
        target.update({k: list(v) if isinstance(v, list) else v for k, v in value.items()})
    else:
        target[:] = value


@pytest.fixture(scope="session")
def _ftemu_pool(pytestconfig: pytest.Config) -> MachinePool:
    pool = MachinePool(pytestconfig)
    pytestconfig.stash[_POOL] = pool
    return pool


@pytest.fixture
def machine_factory(_ftemu_pool: MachinePool, request: pytest.FixtureRequest) -> Callable[..., Machine]:
    """``machine_factory(cpus=4, memory_mb=64, cmdline="...")``: a booted machine of that
    shape, fresh from its boot snapshot; each call in a test gives a distinct machine."""
    borrowed: list[tuple[tuple, tuple]] = []
    request.node.stash.setdefault(_MACHINES, [])

    def make(cpus: int | None = None, memory_mb: int = 32, cmdline: str = "console=ttyS0") -> Machine:
        shape = _ftemu_pool.shape(cpus, memory_mb, cmdline)
        entry = _ftemu_pool.acquire(shape)
        borrowed.append((shape, entry))
        request.node.stash[_MACHINES].append(entry[0])
        return entry[0]
    yield make
    for shape, entry in borrowed:
        _ftemu_pool.release(shape, entry)


@pytest.fixture
def machine(machine_factory: Callable[..., Machine], request: pytest.FixtureRequest) -> Machine:
    """A booted guest (shape from ``@pytest.mark.machine`` and ``--ftemu-*``), as it was
    right after boot."""
    marker = request.node.get_closest_marker("machine")
    kwargs = dict(marker.kwargs) if marker else {}
    request.node.stash[_ALLOW_PANIC] = bool(kwargs.pop("allow_panic", False))
    unknown = set(kwargs) - set(SHAPE_KEYS)
    if unknown or (marker and marker.args):
        raise pytest.UsageError(f"@pytest.mark.machine takes {', '.join(SHAPE_KEYS)} and "
                                f"allow_panic as keywords, not {sorted(unknown) or marker.args}")
    return machine_factory(**kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    outcome = yield
    if outcome.excinfo is not None or item.stash.get(_ALLOW_PANIC, False):
        return
    for m in item.stash.get(_MACHINES, []):
        if m.exit_code == L.EXIT_PANIC:
            panic = next((ln for ln in reversed(m.console.splitlines()) if ln.startswith("panic:")),
                         "panic")
            outcome.force_exception(pytest.fail.Exception(
                f"the guest panicked during the test ({panic}); "
                "@pytest.mark.machine(allow_panic=True) permits it", pytrace=False))
            return


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for i, m in enumerate(item.stash.get(_MACHINES, [])):
            report.sections.append((f"ftemu machine {i}", failure_report(m, f"machine {i}")))


_POOL = pytest.StashKey[MachinePool]()
_WORKERS = pytest.StashKey[list]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its boot and setup times to the controller's summary."""
    pool = session.config.stash.get(_POOL, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if pool is not None and workeroutput is not None:
        workeroutput["ftemu"] = (pool.boots, pool.setups)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    times = getattr(node, "workeroutput", {}).get("ftemu")
    if times:
        node.config.stash.setdefault(_WORKERS, []).append(times)


def _ms(values: list[float]) -> str:
    return "/".join(f"{v * 1e3:.1f}" for v in (min(values), statistics.median(values), max(values)))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    pool = config.stash.get(_POOL, None)
    runs = [(pool.boots, pool.setups)] if pool is not None else []
    runs += config.stash.get(_WORKERS, [])
    boots = [t for b, _ in runs for t in b]
    setups = [t for _, s in runs for t in s]
    if not boots:
        return
    line = (f"ftemu: {len(boots)} boot(s) ({_ms(boots)} ms min/median/max), "
            f"{len(setups)} restored machine fixture(s)")
    if setups:
        line += f", setup {_ms(setups)} ms min/median/max per test"
    if len(runs) > 1 or pool is None:
        line += f" (from {len(runs)} xdist workers)"
    terminalreporter.write_line(line)
