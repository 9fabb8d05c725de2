"""Interrupts, exceptions and system calls enter the guest kernel as a 64-bit CPU does it.

Unicorn does neither IDT delivery nor SYSCALL: the host does, in C (emu/native/deliver.c)
where it can and in Python (emu/trap.py, VCpu._on_syscall: the reference) where C meets
anything unusual. Each case here enters the kernel twice from the same CPU state, once each
way, and the CPU state and every byte of RAM must come out the same; the counters say which
path did the work. A whole run then gives the same machine either way."""
from __future__ import annotations

import ctypes
import struct

import pytest

from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_R11, UC_X86_REG_RCX

from emu import Machine
from emu import memlayout as L
from emu import trap, ucx
from emu.cpu import MSR_FMASK, MSR_LSTAR, MSR_STAR

pytestmark = pytest.mark.skipif(not trap.native_available(), reason="native delivery unavailable")

CF, ZF, OF = 1 << 0, 1 << 6, 1 << 11
LINUX_FMASK = 0x257FD5                # CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID: Linux's
PAGE_EDGE = L.DIRECT_MAP_VA + 0x0200010      # direct map: 0x10 above a page boundary


def edit_context(cpu, fn) -> None:
    """Change the vCPU's saved state with ``fn(buf)`` (a ucx context buffer)."""
    cpu.uc.context_update(cpu.ctx)
    fn(cpu.ctx_buf)
    cpu.uc.context_restore(cpu.ctx)


def in_user_mode(cpu) -> None:
    """As after an iretq to ring 3: user CS/SS, CPL 3, interrupts on, the direction flag set,
    and registers a syscall overwrites holding values it cannot hold after it."""
    def fn(buf):
        cpu.load_cs_ss(buf, L.USER_CS, L.USER_DS, 3)
        eflags = struct.unpack_from("<Q", buf, ucx.CTX_EFLAGS)[0]
        struct.pack_into("<Q", buf, ucx.CTX_EFLAGS, eflags | trap.RFLAGS_IF)
        struct.pack_into("<i", buf, ucx.CTX_DF, -1)
        struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, 0x7FFF_FFFF_E000)
        for reg in (1, 11):                                   # rcx, r11
            struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * reg, 0x5A5A_5A5A_5A5A_5A5A)
    edit_context(cpu, fn)


def stack_at(rsp: int):
    def setup(cpu) -> None:
        edit_context(cpu, lambda buf: struct.pack_into("<Q", buf, ucx.CTX_REGS + 8 * 4, rsp))
    return setup


def cpu_state(cpu) -> bytes:
    """The CPU state: a saved context from after its header up to old_exception; what follows
    (and the header) holds the engine's host pointers, which differ between two machines."""
    return bytes(cpu.uc.context_save())[ucx.CTX_HDR:ucx.CAL.old_exc_offset + 4]


def differing_offsets(a: bytes, b: bytes) -> list[int]:
    return [i for i in range(len(a)) if a[i] != b[i]][:16] if a != b else []


def both_ways(m, setup, enter) -> tuple[int, ...]:
    """``enter(cpu)`` from the same state with the native path and with Python only; assert
    identical CPU state and RAM, and return the native counters' increments (delivered in C,
    left to Python, syscalls done in C) in the native run."""
    cpu = m.cpus[0]
    native = cpu.native_trap
    snap = m.snapshot()
    results = []
    for use_native in (True, False):
        m.restore(snap)
        setup(cpu)
        cpu.native_trap = native if use_native else None
        t = native.t
        before = t.delivered, t.slow, t.syscalls
        try:
            enter(cpu)
        finally:
            cpu.native_trap = native
        counts = t.delivered - before[0], t.slow - before[1], t.syscalls - before[2]
        results.append((cpu_state(cpu), bytes(m.ram), counts))
    m.restore(snap)
    (ctx_c, ram_c, counts), (ctx_py, ram_py, py_counts) = results
    assert py_counts == (0, 0, 0)
    assert differing_offsets(ctx_c, ctx_py) == []
    assert ram_c == ram_py
    return counts


def deliver_both_ways(m, setup, vector: int, error: int | None = None, soft: bool = False):
    """both_ways for one delivery: returns (delivered in C, left to Python)."""
    return both_ways(m, setup, lambda cpu: trap.deliver(cpu, vector, error, soft))[:2]


def frame(m, n: int) -> tuple[int, ...]:
    cpu = m.cpus[0]
    return struct.unpack(f"<{n}Q", m.walker.read(cpu.cr3(), cpu.stack_pointer(), 8 * n))


def test_timer_interrupt_in_kernel_mode(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, lambda cpu: None, L.LOCAL_TIMER_VECTOR) == (1, 0)


def test_timer_interrupt_in_user_mode_switches_to_rsp0_and_ring0(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, in_user_mode, L.LOCAL_TIMER_VECTOR) == (1, 0)
    in_user_mode(m.cpus[0])
    trap.deliver(m.cpus[0], L.LOCAL_TIMER_VECTOR)
    rip, cs, rflags, rsp, ss = frame(m, 5)
    assert (cs, rsp, ss) == (L.USER_CS, 0x7FFF_FFFF_E000, L.USER_DS)
    assert rflags & trap.RFLAGS_IF and m.cpus[0].cpl() == 0


def test_nmi_takes_its_ist_stack(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, lambda cpu: None, 2) == (1, 0)


def raised_by_the_engine(vector: int):
    """As the engine leaves an exception it raised: old_exception set (delivery clears it)."""
    def setup(cpu) -> None:
        edit_context(cpu, lambda buf: struct.pack_into("<i", buf, ucx.CAL.old_exc_offset, vector))
    return setup


def test_page_fault_pushes_its_error_code(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, raised_by_the_engine(14), 14, error=2) == (1, 0)
    rip = m.cpus[0].rip()
    trap.deliver(m.cpus[0], 14, 2)
    assert frame(m, 2) == (2, rip)


def test_frame_across_a_page_boundary(booted_snapshots):
    m = booted_snapshots(1)
    assert deliver_both_ways(m, stack_at(PAGE_EDGE), L.LOCAL_TIMER_VECTOR) == (1, 0)


def test_software_interrupt_to_a_kernel_gate_from_ring3_is_a_gp_done_in_python(booted_snapshots):
    m = booted_snapshots(1)
    # C refuses the int (DPL 0 < CPL 3); Python raises #GP(vector*8+2), which C delivers
    assert deliver_both_ways(m, in_user_mode, L.LOCAL_TIMER_VECTOR, soft=True) == (1, 1)


def test_an_unmapped_stack_escalates_the_same_way(booted_snapshots):
    m = booted_snapshots(1)
    counts = deliver_both_ways(m, stack_at(0xFFFF_FF00_0000_0000), L.LOCAL_TIMER_VECTOR)
    assert counts[1] >= 1                  # C left the failing delivery to Python


def idt_entry(cpu, vector: int) -> int:
    cpu.uc.context_update(cpu.ctx)
    return struct.unpack_from("<Q", cpu.ctx_buf, ucx.CTX_IDT_BASE)[0] + 16 * vector


def gate_handler(m, vector: int) -> int:
    lo, _sel, _ist, _attr, mid, hi, _ = trap._gate.unpack(m.read(idt_entry(m.cpus[0], vector), 16))
    return lo | mid << 16 | hi << 32


def gate_attr(vector: int, attr: int):
    """The gate of ``vector`` with type/DPL/present byte ``attr``."""
    def setup(cpu) -> None:
        cpu.machine.write(idt_entry(cpu, vector) + 5, bytes([attr]))
    return setup


@pytest.mark.parametrize("soft, ext", [(False, 1), (True, 0)], ids=["interrupt", "int-n"])
def test_a_gate_not_present_raises_np_naming_the_gate(booted_snapshots, soft, ext):
    """#NP (11), not #GP, with the error code of an IDT entry: index, IDT bit, and EXT set
    unless an int n asked for it (the SDM's delivery order: type, DPL, present)."""
    m = booted_snapshots(1)
    vector = 0x30
    not_present = gate_attr(vector, 0x0E)             # an interrupt gate, P clear
    assert deliver_both_ways(m, not_present, vector, soft=soft) == (1, 1)
    cpu = m.cpus[0]
    not_present(cpu)
    trap.deliver(cpu, vector, soft=soft)
    assert cpu.rip() == gate_handler(m, 11)
    assert frame(m, 1) == (vector * 8 + 2 + ext,)


def test_a_gate_of_a_type_64_bit_mode_lacks_is_a_gp(booted_snapshots):
    """Only 64-bit interrupt and trap gates exist in long mode: a call gate's type (0xC)
    raises #GP naming the gate, where it was taken for a trap gate."""
    m = booted_snapshots(1)
    vector = 0x30
    call_gate = gate_attr(vector, 0x8C)
    assert deliver_both_ways(m, call_gate, vector) == (1, 1)
    cpu = m.cpus[0]
    call_gate(cpu)
    trap.deliver(cpu, vector)
    assert cpu.rip() == gate_handler(m, 13)
    assert frame(m, 1) == (vector * 8 + 2 + 1,)


def test_a_gate_ist_field_uses_its_low_three_bits(booted_snapshots):
    """Bits 3-7 of a gate's IST byte are reserved: with only they set, the interrupt stays
    on the current stack (it took IST slot 7 where the whole byte was read)."""
    m = booted_snapshots(1)
    vector = L.LOCAL_TIMER_VECTOR

    def reserved_bits(cpu) -> None:
        cpu.machine.write(idt_entry(cpu, vector) + 4, bytes([0x08]))
    assert deliver_both_ways(m, reserved_bits, vector) == (1, 0)
    cpu = m.cpus[0]
    reserved_bits(cpu)
    rsp = cpu.stack_pointer()
    trap.deliver(cpu, vector)
    assert cpu.stack_pointer() == (rsp & ~0xF) - 40


def kernel_cs_marked_in_user_mode(cpu) -> None:
    """In user mode, with the kernel's CS descriptor edited in place (its AVL bit set)."""
    in_user_mode(cpu)
    cpu.uc.context_update(cpu.ctx)
    at = struct.unpack_from("<Q", cpu.ctx_buf, ucx.CTX_GDT_BASE)[0] + L.KERNEL_CS + 4
    cpu.machine.write(at, struct.pack("<I", struct.unpack("<I", cpu.machine.read(at, 4))[0] | 1 << 20))


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_a_gdt_edited_in_place_is_read_afresh(booted_snapshots, native):
    """An interrupt from ring 3 loads CS's hidden flags from the GDT as it is now, even
    after an earlier delivery read the entry before the edit (as a CPU reads it each time)."""
    m = booted_snapshots(1)
    cpu = m.cpus[0]
    kept, cpu.native_trap = cpu.native_trap, (cpu.native_trap if native else None)
    try:
        in_user_mode(cpu)
        trap.deliver(cpu, L.LOCAL_TIMER_VECTOR)         # reads the entry before the edit
        kernel_cs_marked_in_user_mode(cpu)
        trap.deliver(cpu, L.LOCAL_TIMER_VECTOR)
    finally:
        cpu.native_trap = kept
    cpu.uc.context_update(cpu.ctx)
    assert struct.unpack_from("<I", cpu.ctx_buf, ucx.seg_offset(ucx.R_CS) + 20)[0] & 1 << 20


def syscall(cpu) -> None:
    """A SYSCALL as the engine hands it over: to C's hook where it is installed (the MSRs
    already known to it), else to the Python one."""
    if cpu.native_trap is not None:
        cpu.native_trap.syscall_msrs(*(cpu.uc.msr_read(r) for r in (MSR_STAR, MSR_LSTAR, MSR_FMASK)))
        trap._native.lib.ftemu_syscall(None, ctypes.c_void_p(ctypes.addressof(cpu.native_trap.t)))
    else:
        cpu._on_syscall(cpu.uc, None)


def at_syscall(code: bytes):
    """In user mode at the syscall instruction ``code`` (0F 05, maybe after prefixes)."""
    def setup(cpu) -> None:
        in_user_mode(cpu)
        cpu.machine.write(PAGE_EDGE, code)
        edit_context(cpu, lambda buf: struct.pack_into("<Q", buf, ucx.CTX_RIP, PAGE_EDGE))
    return setup


def with_linux_fmask(cpu) -> None:
    """At a syscall, FMASK clearing the arithmetic flags too (as Linux's does), and the user's
    CF, ZF and OF set. The host reads the MSRs again (its copy is from the first syscall)."""
    at_syscall(b"\x0f\x05")(cpu)
    cpu.uc.msr_write(MSR_FMASK, LINUX_FMASK)
    cpu._syscall_msrs = None
    cpu.regs.write(UC_X86_REG_EFLAGS, cpu.rflags() | CF | ZF | OF)


def test_syscall_clears_the_arithmetic_flags_fmask_names(booted_snapshots):
    """FMASK applies to every RFLAGS bit, the arithmetic ones included (which the engine keeps
    apart, computed lazily); R11 keeps them as they were."""
    m = booted_snapshots(1)
    assert both_ways(m, with_linux_fmask, syscall) == (0, 0, 1)
    cpu = m.cpus[0]
    with_linux_fmask(cpu)
    before = cpu.rflags()
    syscall(cpu)
    assert cpu.regs.read(UC_X86_REG_R11) == before and before & (CF | ZF | OF) == CF | ZF | OF
    assert cpu.rflags() & LINUX_FMASK == 0


def test_syscall_enters_ring0_at_lstar_with_rcx_and_r11_saved(booted_snapshots):
    m = booted_snapshots(1)
    assert both_ways(m, at_syscall(b"\x0f\x05"), syscall) == (0, 0, 1)
    cpu = m.cpus[0]
    at_syscall(b"\x0f\x05")(cpu)
    rip, rflags = cpu.rip(), cpu.rflags()
    syscall(cpu)
    assert (cpu.regs.read(UC_X86_REG_RCX), cpu.regs.read(UC_X86_REG_R11)) == (rip + 2, rflags)
    assert cpu.rip() + 2 == cpu.uc.msr_read(MSR_LSTAR)       # Unicorn adds the 2 after the hook
    assert cpu.cpl() == 0 and not cpu.interrupts_enabled()   # the guest's FMASK clears IF


def test_a_prefixed_syscall_saves_the_next_instruction_and_enters_at_lstar(booted_snapshots):
    """Unicorn adds the whole instruction's length to RIP after the hook, so RCX and the
    entry must count the prefixes too (RCX pointed into the instruction, the kernel was
    entered one byte past LSTAR)."""
    m = booted_snapshots(1)
    rex_w_syscall = at_syscall(b"\x48\x0f\x05")      # 3 bytes, as any prefix makes it
    assert both_ways(m, rex_w_syscall, syscall) == (0, 0, 1)
    cpu = m.cpus[0]
    rex_w_syscall(cpu)
    syscall(cpu)
    assert cpu.regs.read(UC_X86_REG_RCX) == PAGE_EDGE + 3
    assert cpu.rip() + 3 == cpu.uc.msr_read(MSR_LSTAR)


def gdt_descriptors_marked(cpu) -> None:
    """At a syscall, with the kernel's CS and SS descriptors in the GDT carrying their AVL
    bit (free for the OS: nothing a far transfer checks)."""
    at_syscall(b"\x0f\x05")(cpu)
    cpu.uc.context_update(cpu.ctx)
    gdt = struct.unpack_from("<Q", cpu.ctx_buf, ucx.CTX_GDT_BASE)[0]
    for sel in (L.KERNEL_CS, L.KERNEL_DS):
        high = struct.unpack("<I", cpu.machine.read(gdt + sel + 4, 4))[0]
        cpu.machine.write(gdt + sel + 4, struct.pack("<I", high | 1 << 20))


def test_syscall_loads_the_fixed_flat_segments_not_the_gdt(booted_snapshots):
    """SYSCALL never reads the GDT: CS becomes flat 64-bit code and SS flat data, both DPL 0
    and accessed, whatever the descriptors at STAR's selectors hold."""
    m = booted_snapshots(1)
    assert both_ways(m, gdt_descriptors_marked, syscall) == (0, 0, 1)
    cpu = m.cpus[0]
    gdt_descriptors_marked(cpu)
    syscall(cpu)
    cpu.uc.context_update(cpu.ctx)
    cs = struct.unpack_from("<IIQII", cpu.ctx_buf, ucx.seg_offset(ucx.R_CS))
    ss = struct.unpack_from("<IIQII", cpu.ctx_buf, ucx.seg_offset(ucx.R_SS))
    assert cs == (L.KERNEL_CS, 0, 0, 0xFFFFFFFF, 0x00AF9B00)
    assert ss == (L.KERNEL_DS, 0, 0, 0xFFFFFFFF, 0x00CF9300)


def test_a_whole_run_is_the_same_with_python_delivery_and_syscalls(monkeypatch):
    """Two machines boot and run 30 ms, one entering the kernel in C, one in Python only."""
    def run(native: bool):
        with monkeypatch.context() as mp:
            if not native:
                mp.setattr(trap, "native_available", lambda: False)
            m = Machine(cpus=2)
        assert all((c.native_trap is not None) == native for c in m.cpus)
        m.boot()
        m.run(ms=30)
        return m, (m.now, [c.instructions for c in m.cpus], m.console)

    m, summary = run(True)
    m_py, summary_py = run(False)
    assert summary == summary_py
    for c, c_py in zip(m.cpus, m_py.cpus):
        assert differing_offsets(cpu_state(c), cpu_state(c_py)) == []
    assert differing_offsets(bytes(m.ram), bytes(m_py.ram)) == []
    assert sum(c.native_trap.t.delivered for c in m.cpus) > 0
    assert sum(c.native_trap.t.syscalls for c in m.cpus) > 0


def test_the_syscall_hook_keeps_what_it_points_at_alive(booted_snapshots):
    """The native SYSCALL hook is installed for the vCPU's life and reads its ``trap_cpu``
    at every syscall: dropping ``cpu.native_trap`` (as the tests above do to take the Python
    path) must not free it under the hook, which then read freed memory (a host crash)."""
    import gc
    import weakref

    m = booted_snapshots(1)
    cpu = m.cpus[0]
    native = cpu.native_trap
    ref = weakref.ref(native)
    try:
        cpu.native_trap = native = None
        gc.collect()
        assert ref() is not None
        m.call("user_spawn", m.symbol_address("uprog_call_getpid_name"))
        before = m.stats()["total"]["syscalls"]
        m.run(ms=3)
        assert m.stats()["total"]["syscalls"] > before       # entered in C, as before
        assert ref().t.syscalls > 0
    finally:
        cpu.native_trap = ref()
