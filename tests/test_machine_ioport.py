"""Port I/O from ring 3 is checked as a real CPU checks it: with CPL > IOPL and no permission
in the TSS I/O bitmap, ``in``/``out`` raise #GP(0) on the instruction itself, through the
guest's IDT, and never reach the host's port handlers (the hypercall ports are the kernel's
alone). Tiny guest variants (tests/tinyguest/tiny.S) do the I/O from ring 3."""
from __future__ import annotations

import pytest

from emu import GuestMemoryError, Machine, blockcount, hypercall
from emu import memlayout as L
from ftrace import FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.ftrace_64 import HCALL_CALLBACK_PORT

GP_EXIT = 13                 # the tiny guest's #GP handler powers off with this code
NORMAL_EXIT = 42 + 5         # its ring-3 program ran to the end


@pytest.fixture(params=["native", "ctypes"])
def out_hook(request, monkeypatch) -> str:
    """Run the test with the native out hook, then with the ctypes fallback (hypercall.py)."""
    if request.param == "ctypes":
        monkeypatch.setenv(blockcount.ENV_SWITCH, "0")
    elif not hypercall.available():
        pytest.skip(f"native out hook unavailable: {hypercall.why_unavailable()}")
    return request.param


@pytest.fixture
def tiny_io(tiny_kernel, out_hook):
    """tiny_kernel, for a test run under both out hooks."""
    return tiny_kernel


def run_tiny(tiny_kernel, *variant: str) -> tuple[Machine, list[tuple[int, int]]]:
    m = Machine(kernel=tiny_kernel(*variant))
    seen: list[tuple[int, int]] = []
    for port in (0xE0, 0xE1):
        m.add_port(port, lambda cpu, p, v: seen.append((p, v & 0xFF)), lambda cpu, p: seen.append((p, 0)) or 0x77)
    m.run(ms=50)
    return m, seen


def gp_record(m: Machine) -> dict[str, int]:
    return {n: m.read_u64(m.symbol_address(n)) for n in ("gp_err", "gp_rip", "gp_cs", "gp_rax", "after_io")}


def user_io_address(m: Machine) -> int:
    return m.symbol_address("user_io") - L.KERNEL_VA_OFFSET     # ring 3 runs it identity-mapped


def gp_on_user_io(m: Machine) -> dict[str, int]:
    """#GP(0) on the ring-3 in/out itself: RAX as before it, nothing after it in its block ran."""
    return {"gp_err": 0, "gp_rip": user_io_address(m), "gp_cs": L.USER_CS, "gp_rax": 0x5A,
            "after_io": 0}


def test_ring3_out_is_a_general_protection_fault_on_the_out(tiny_io):
    m, seen = run_tiny(tiny_io, "USER_OUT")
    assert seen == []
    assert m.exit_code == GP_EXIT
    assert gp_record(m) == gp_on_user_io(m)
    assert m.console == "tiny: hello\n"


def test_ring3_in_faults_before_it_changes_a_register(tiny_io):
    m, seen = run_tiny(tiny_io, "USER_IN")
    assert seen == []
    assert m.exit_code == GP_EXIT
    assert gp_record(m) == gp_on_user_io(m)


def test_iopl_3_lets_ring3_use_ports(tiny_io):
    m, seen = run_tiny(tiny_io, "USER_OUT", "USER_IOPL3")
    assert seen == [(0xE0, 0x5A)]
    assert m.exit_code == NORMAL_EXIT
    assert m.read_u64(m.symbol_address("after_io")) == 1     # the store after it ran once
    assert m.console == "tiny: hello\nhello from ring 3\n"


def test_io_bitmap_allows_its_ports_only(tiny_io):
    m, seen = run_tiny(tiny_io, "USER_IN", "IO_BITMAP")
    assert seen == [(0xE0, 0)] and m.exit_code == NORMAL_EXIT
    m, seen = run_tiny(tiny_io, "USER_OUT", "IO_BITMAP", "USER_PORT=0xe1")
    assert seen == [] and m.exit_code == GP_EXIT
    assert gp_record(m)["gp_rip"] == user_io_address(m)


def test_a_ring3_process_doing_port_io_is_killed_and_the_host_never_sees_it(booted_snapshots):
    m = booted_snapshots(2)
    seen = []
    forward = m.port_out[HCALL_CALLBACK_PORT]
    m.add_port(HCALL_CALLBACK_PORT, lambda cpu, p, v: (seen.append(v), forward(cpu, p, v)))
    pid = m.call("user_spawn", m.symbol_address("uprog_ioport_name"))
    m.run(ms=20)
    assert seen == []
    assert m.console.endswith("ioport: out to port 0xe0\n"
                              f"pid {pid} (ioport): general protection fault ip 0x400545, killed\n")


def test_a_bad_pt_regs_pointer_in_the_mailbox_names_cpu_rip_and_backtrace(booted_snapshots):
    m = booted_snapshots(1)
    ops = FtraceOps(lambda ip, pip, op, regs: None, FTRACE_OPS_FL_SAVE_REGS)
    m.ftrace.ftrace_set_filter(ops, "kstat_inc", True)
    m.ftrace.register_ftrace_function(ops)
    stub = m.ftrace.arch._ops_target(ops)         # the guest function the trampoline calls
    with pytest.raises(GuestMemoryError) as e:
        m.call(stub, m.symbol_address("kstat_inc"), 0, 0, 0xDEAD000)    # fregs: unmapped
    assert e.value.cpu == 0
    assert e.value.rip.startswith("ftrace_ops_stub+")
    assert e.value.message == ("ftrace callback: pt_regs pointer in the mailbox: "
                               "no mapping for guest address 0xdead000")
    m.ftrace.unregister_ftrace_function(ops)


def test_a_bad_printk_record_pointer_names_cpu_rip_and_backtrace(booted_snapshots):
    m = booted_snapshots(1)
    stub = m.execmem.alloc(32)
    m.write(stub, bytes.fromhex("bf00d0ea0d" "be05000000" "31d2" "e6") + bytes([L.KMSG_PORT]) + b"\xc3")
    with pytest.raises(GuestMemoryError) as e:      # mov edi, 0xdead000; mov esi, 5; out KMSG
        m.call(stub)
    assert e.value.cpu == 0 and e.value.rip == m.lookup(stub + 12)
    assert e.value.message == "printk record: no mapping for guest address 0xdead000"


def test_a_restore_forgets_a_refused_in_out_that_a_failed_run_left_pending(booted_snapshots):
    """A run that ends in an engine error never reaches after_emu_start: a refused in/out's
    pending state (every hook ignored until then, a saved CPU state to put back) would stay,
    and the restored machine would ignore its syscalls and interrupts. Restore drops it."""
    m = booted_snapshots(1)
    snap = m.snapshot()

    def run_from_snap() -> tuple:
        m.restore(snap)
        m.run(ms=30)
        return m.now, m.cpus[0].instructions, m.console, bytes(m.ram), m.stats()["total"]

    clean = run_from_snap()
    m.restore(snap)
    m.run(ms=5)
    m.cpus[0]._io_fault()           # as the refused in/out of a run that then failed leaves it
    assert run_from_snap() == clean
    assert clean[-1]["syscalls"] > 0
