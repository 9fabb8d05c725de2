"""IPMODIFY without SAVE_REGS, as x86-64 Linux (DYNAMIC_FTRACE_WITH_ARGS) lets livepatch do:
the ops' trampoline builds only ftrace_caller's ``struct ftrace_regs`` (arguments, rax, rbp,
ip, sp; cs = 0), passes it as the 4th argument and goes on at whatever ip the callback left
there, with the traced function's arguments as the caller set them."""
from __future__ import annotations

import pytest

from ftrace import FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_SAVE_REGS, FtraceOps
from ftrace.arch.x86.asm import assemble
from ftrace.arch.x86.ptregs import FtraceRegs

F1 = "trace_selftest_dynamic_test_func"          # int f(void): returns 0


def replacement(m) -> int:
    """A new function for F1 that uses the arguments it is called with: rdi + 2 * rsi."""
    new_func = m.execmem.alloc(16)
    m.write(new_func, assemble("lea eax, [rdi + rsi*2]\nret", new_func))
    return new_func


def test_a_python_ipmodify_callback_gets_ftrace_regs_and_redirects_the_call(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    new_func, site = replacement(m), m.symbol_address(F1)
    seen = []

    def klp_like(ip, parent_ip, op, fregs):
        seen.append((type(fregs), fregs.ip, fregs.di, fregs.si, fregs.cs, fregs.orig_ax,
                     m.read_u64(fregs.sp) == parent_ip))
        with pytest.raises(AttributeError, match="ftrace_regs.r15: not saved without "
                                                 "FTRACE_OPS_FL_SAVE_REGS"):
            fregs.r15
        fregs.ip = new_func
    ops = FtraceOps(klp_like, FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter_ip(ops, site, False, False)
    ft.register_ftrace_function(ops)
    assert m.call(F1, 7, 8) == 7 + 2 * 8                  # new_func ran, with the arguments
    assert seen == [(FtraceRegs, site + 5, 7, 8, 0, 0, True)]
    name = klp_like.__qualname__
    assert ft.enabled_functions == (f"{F1} (1)   I     M \ttramp: ftrace_trampoline+0x0/0xd8 "
                                    f"[__builtin__ftrace] ({name}) ->{name}\n")
    ft.unregister_ftrace_function(ops)
    assert m.call(F1, 7, 8) == 0


def test_a_guest_callback_sets_the_ip_slot_of_ftrace_regs(booted_snapshots):
    # ftrace_regs_set_instruction_pointer(fregs, new_func) in guest code: fregs->ip is at
    # pt_regs' ip offset (0x80); the trampoline copies it into its return slot.
    m = booted_snapshots(1)
    ft = m.ftrace
    new_func = replacement(m)
    func = m.execmem.alloc(32)
    m.write(func, assemble(f"mov rax, {new_func}\nmov qword ptr [rcx + 0x80], rax\nret", func))
    ops = FtraceOps(func, FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter(ops, F1, True)
    ft.register_ftrace_function(ops)
    assert [m.call(F1, i, 1) for i in range(3)] == [2, 3, 4]
    ft.unregister_ftrace_function(ops)
    assert m.call(F1, 1, 1) == 0


def test_a_shared_site_honours_the_ip_through_ftrace_caller_and_ftrace_regs_caller(booted_snapshots):
    # With a second ops on the function the site calls the shared ftrace_caller and the
    # list function: its ftrace_regs carries the ip change too, while the plain ops still
    # sees regs as None (seed) and a SAVE_REGS ops is skipped there (cs = 0). Once a
    # SAVE_REGS ops joins, the site calls ftrace_regs_caller: a full pt_regs for both.
    m = booted_snapshots(1)
    ft, x86 = m.ftrace, m.ftrace.x86
    new_func, site = replacement(m), m.symbol_address(F1)
    seen: list[tuple[str, str]] = []

    def patcher(ip, parent_ip, op, fregs):
        seen.append(("patcher", type(fregs).__name__))
        fregs.ip = new_func
    lp = FtraceOps(patcher, FTRACE_OPS_FL_IPMODIFY)
    plain = FtraceOps(lambda ip, pip, op, regs: seen.append(("plain", type(regs).__name__)))
    full = FtraceOps(lambda ip, pip, op, regs: seen.append(("full", type(regs).__name__)),
                     FTRACE_OPS_FL_SAVE_REGS)
    for ops in (lp, plain, full):
        ft.ftrace_set_filter(ops, F1, True)
    ft.register_ftrace_function(lp)
    ft.register_ftrace_function(plain)
    assert m.read(site, 5) == b"\xe8" + (x86.ftrace_caller - site - 5).to_bytes(4, "little", signed=True)
    assert m.call(F1, 1, 2) == 5
    assert seen == [("plain", "NoneType"), ("patcher", "FtraceRegs")]   # newest first
    del seen[:]
    ft.register_ftrace_function(full)
    assert m.read(site, 5) == b"\xe8" + (x86.ftrace_regs_caller - site - 5).to_bytes(4, "little", signed=True)
    assert m.call(F1, 1, 2) == 5
    assert seen == [("full", "PtRegs"), ("plain", "NoneType"), ("patcher", "FtraceRegs")]
    for ops in (full, plain, lp):
        ft.unregister_ftrace_function(ops)
    assert m.call(F1, 1, 2) == 0


def test_a_kept_ftrace_regs_reads_what_it_read_and_refuses_writes(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    kept = []
    ops = FtraceOps(lambda ip, pip, op, fregs: kept.append(fregs), FTRACE_OPS_FL_IPMODIFY)
    ft.ftrace_set_filter(ops, F1, True)
    ft.register_ftrace_function(ops)
    m.call(F1, 3, 4)
    ft.unregister_ftrace_function(ops)
    fregs = kept[0]
    assert (fregs.di, fregs.si, fregs.ip) == (3, 4, m.symbol_address(F1) + 5)
    with pytest.raises(AttributeError, match="ftrace_regs.ip: the frame is gone"):
        fregs.ip = 0
    assert repr(fregs).startswith("ftrace_regs(bp=0x")


def test_ipmodify_works_where_the_machine_has_no_full_regs(kmod):
    # Machine(ftrace_regs=False): no ftrace_regs_caller, SAVE_REGS refused (an arch without
    # DYNAMIC_FTRACE_WITH_REGS, as arm64). IPMODIFY needs only ftrace_regs, so a live patch
    # with the kernel's flags still applies there.
    from emu import Machine
    m = Machine(cpus=1, ftrace_regs=False)
    m.boot()
    m.insmod(kmod("klp-cmdline"))
    m.run(ms=1100)
    assert m.fs.read("/proc/cmdline") == "klp_cmdline: patched command line\n"
    assert m.ftrace.enabled_functions.startswith(
        "cmdline_proc_show (1)   I     M \ttramp: ftrace_trampoline+0x0/0xd8 [__builtin__ftrace] ")
