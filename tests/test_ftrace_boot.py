"""ftrace_init at boot, the generated trampolines, and what happens to a site that is not
what ftrace expects (ftrace_bug)."""
from __future__ import annotations

import errno

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from ftrace import FtraceError, FtraceOps
from ftrace.arch.x86.ftrace_64 import Frame
from ftrace.arch.x86.insn import X86_NOP5, call_insn
from ftrace.arch.x86.ptregs import PT_REGS_OFFSET
from ftrace.machine import MachineFtrace

NOP5 = bytes.fromhex("0f1f440000")


def disasm(m, start, end):
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    return [f"{i.mnemonic} {i.op_str}".strip() for i in md.disasm(m.read(start, end - start), start)]


def test_every_mcount_site_is_a_checked_nop_after_boot(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    sites = m.image.u64_array("__mcount_loc")
    assert len(ft.records) == len(sites) > 100
    assert [r.ip for r in ft.records] == sorted(sites)
    assert all(m.read(ip, 5) == NOP5 for ip in sites)
    assert X86_NOP5 == NOP5
    assert ft.log_lines[:2] == [f"ftrace: allocating {len(sites)} entries in 1 pages",
                                "ftrace: allocated 1 pages with 1 groups"]
    # the site is the first instruction of its function (-mfentry, no endbr)
    sched = m.symbol_address("schedule")
    assert ft.function_address("schedule") == sched and sched in sites


def test_available_filter_functions_lists_sites_in_address_order(booted_snapshots):
    m = booted_snapshots(1)
    names = m.ftrace.available_filter_functions.splitlines()
    assert names == [m.image.containing(r.ip).name for r in m.ftrace.records]
    assert "schedule" in names and "trace_selftest_dynamic_test_func" in names
    assert "__fentry__" not in names and "rcu_is_watching" not in names   # notrace


def test_ftrace_caller_builds_the_kernels_ftrace_regs_and_returns_to_its_ip(booted_snapshots):
    # x86-64 with DYNAMIC_FTRACE_WITH_ARGS: two frames, then a pt_regs-shaped ftrace_regs
    # holding the argument registers, rax, rbp, ip and sp, with cs = 0 (not a full pt_regs);
    # after the call the ip slot goes into the return slot: a changed ip is where it returns.
    m = booted_snapshots(1)
    x86 = m.ftrace.x86
    assert disasm(m, x86.ftrace_caller, x86.ftrace_call + 5) == [
        "push rbp", "push qword ptr [rsp + 0x10]", "push rbp", "mov rbp, rsp",   # two frames,
        "push qword ptr [rsp + 0x18]", "push rbp", "mov rbp, rsp",              # as the kernel's
        "sub rsp, 0xa8",                                                         # sizeof(pt_regs)
        "mov qword ptr [rsp + 0x50], rax", "mov qword ptr [rsp + 0x58], rcx",
        "mov qword ptr [rsp + 0x60], rdx", "mov qword ptr [rsp + 0x68], rsi",
        "mov qword ptr [rsp + 0x70], rdi", "mov qword ptr [rsp + 0x48], r8",
        "mov qword ptr [rsp + 0x40], r9",
        "mov qword ptr [rsp + 0x78], 0",                          # orig_ax
        "mov rdx, qword ptr [rsp + 0xc8]", "mov qword ptr [rsp + 0x20], rdx",   # bp: the caller's
        "mov rsi, qword ptr [rsp + 0xd8]",                        # parent_ip
        "mov rdi, qword ptr [rsp + 0xd0]", "mov qword ptr [rsp + 0x80], rdi",   # ip: site + 5
        "sub rdi, 5",                                             # ip argument: the site
        "lea rcx, [rsp + 0xd8]", "mov qword ptr [rsp + 0x98], rcx",             # sp
        f"mov rdx, 0x{x86.function_trace_op:x}", "mov rdx, qword ptr [rdx]",
        "mov rcx, rsp",                                           # fregs
        "mov qword ptr [rsp + 0x88], 0",                          # cs = 0: ftrace_get_regs NULL
        f"call 0x{x86.ftrace_stub:x}"]
    assert disasm(m, x86.ftrace_call + 5, x86.ftrace_call + 80)[:12] == [
        "mov rax, qword ptr [rsp + 0x80]", "mov qword ptr [rsp + 0xd0], rax",   # the ip copy
        "mov r9, qword ptr [rsp + 0x40]", "mov r8, qword ptr [rsp + 0x48]",
        "mov rdi, qword ptr [rsp + 0x70]", "mov rsi, qword ptr [rsp + 0x68]",
        "mov rdx, qword ptr [rsp + 0x60]", "mov rcx, qword ptr [rsp + 0x58]",
        "mov rax, qword ptr [rsp + 0x50]", "mov rbp, qword ptr [rsp + 0x20]",
        "add rsp, 0xd0", "ret"]


def test_a_plain_ops_trampoline_saves_the_argument_registers_and_passes_null_regs(booted_snapshots):
    # Seed over kernel: without SAVE_REGS or IPMODIFY nobody can read a frame, so the ops'
    # private trampoline builds none (regs is NULL) and always returns into the function.
    m = booted_snapshots(1)
    ft, x86 = m.ftrace, m.ftrace.x86
    ops = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    tramp = ops.trampoline
    call = tramp + x86._tramp_call[tramp]
    assert disasm(m, tramp, call + 5) == [
        "push rbp", "push qword ptr [rsp + 0x10]", "push rbp", "mov rbp, rsp",
        "push qword ptr [rsp + 0x18]", "push rbp", "mov rbp, rsp",
        "push rax", "push rcx", "push rdx", "push rsi", "push rdi", "push r8", "push r9",
        "mov rdi, qword ptr [rbp + 8]", "sub rdi, 5",           # ip = return address - 5
        "mov rsi, qword ptr [rbp + 0x18]",                        # parent_ip
        f"mov rdx, 0x{x86._guest[id(ops)].copy:x}",              # this ops
        "xor ecx, ecx",                                           # regs = NULL
        f"call 0x{x86._guest[id(ops)].stub:x}"]
    assert disasm(m, call + 5, call + 20)[:10] == [
        "pop r9", "pop r8", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
        "add rsp, 0x20", "pop rbp", "ret"]
    ft.unregister_ftrace_function(ops)


def test_ftrace_regs_caller_starts_with_pushfq_and_saves_every_register(booted_snapshots):
    m = booted_snapshots(1)
    x86 = m.ftrace.x86
    code = disasm(m, x86.ftrace_regs_caller, x86.ftrace_regs_call + 5)
    assert code[:9] == ["pushfq", "push rbp", "push qword ptr [rsp + 0x18]", "push rbp",
                        "mov rbp, rsp", "push qword ptr [rsp + 0x20]", "push rbp", "mov rbp, rsp",
                        "sub rsp, 0xa8"]                     # two frames, then sizeof(pt_regs)
    for field, reg in (("r15", "r15"), ("r14", "r14"), ("r13", "r13"), ("r12", "r12"),
                       ("bx", "rbx"), ("r11", "r11"), ("r10", "r10"), ("r9", "r9"), ("r8", "r8"),
                       ("ax", "rax"), ("cx", "rcx"), ("dx", "rdx"), ("si", "rsi"), ("di", "rdi")):
        off = PT_REGS_OFFSET[field]
        slot = "[rsp]" if not off else f"[rsp + {off:#x}]" if off > 9 else f"[rsp + {off}]"
        assert f"mov qword ptr {slot}, {reg}" in code, field
    saved = {line.split(", ")[1] for line in code if line.startswith("mov qword ptr [rsp")}
    assert {"r15", "r14", "r13", "r12", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
            "rsi", "rdi"} <= saved
    assert "mov qword ptr [rsp + 0x88], 0x10" in code                # cs = __KERNEL_CS
    assert "mov qword ptr [rsp + 0xa0], 0x18" in code                # ss = __KERNEL_DS
    tail = disasm(m, x86.ftrace_regs_call + 5, x86.ftrace_regs_call + 0x80)
    assert "popfq" in tail and "mov r11, qword ptr [rsp + 0x30]" not in tail   # r11 not restored


def test_a_site_with_unexpected_bytes_is_reported_like_ftrace_bug_and_ftrace_dies(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    site = ft.function_address("trace_selftest_dynamic_test_func")
    m.write(site, b"\x90\x90\x90\x90\x90")                 # someone else changed the text
    before = {r.ip: m.read(r.ip, 5) for r in ft.records}
    ops = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(ops, "trace_selftest_dynamic_test_func*", True)   # func and func2
    with pytest.raises(FtraceError) as died:
        ft.register_ftrace_function(ops)
    assert died.value.errno == errno.ENODEV                 # ftrace died while patching
    bug = ft.log_lines[ft.log_lines.index("------------[ ftrace bug ]------------"):]
    assert " actual:   90:90:90:90:90" in bug and " expected: 0f:1f:44:00:00" in bug
    assert "Setting ftrace call site to call ftrace function" in bug
    # read, compare, then write: nothing was written, not even the good site of func2
    assert {r.ip: m.read(r.ip, 5) for r in ft.records} == before
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(FtraceOps(lambda *a: None))
    assert e.value.errno == errno.ENODEV
    m.run(ms=20)                                           # the machine keeps running


def test_ftrace_init_checks_for_call_fentry():
    m = Machine()
    fentry = m.symbol_address("__fentry__")
    sites = [r.ip for r in m.ftrace.records]
    for ip in sites:                                       # back to the image as built
        m.write(ip, call_insn(ip, fentry))
    bad = sites[3]
    m.write(bad, NOP5)
    ft = MachineFtrace(m)
    assert "------------[ ftrace bug ]------------" in ft.log_lines
    assert "Initializing ftrace call sites" in ft.log_lines
    assert ft.ftrace_disabled


@pytest.mark.parametrize("frame", list(Frame))
def test_private_trampolines_are_copies_patched_like_create_trampoline(frame):
    from ftrace.arch.x86.asm import CodeBuilder
    from ftrace.arch.x86.ftrace_64 import emit_caller, instantiate_trampoline
    base, op, target = 0xffffffffa0012340, 0xffffffffa0001230, 0xffffffffa0000780
    code, call_off = instantiate_trampoline(frame, base, op, target)
    b = CodeBuilder(base)
    emit_caller(b, "t", frame, f"mov rdx, {op}", target)   # assembled from scratch there
    assert code == bytes(b.code[:b.labels["t_end"] - base])
    assert call_off == b.labels["t_call"] - base
