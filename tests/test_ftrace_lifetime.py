"""What the guest reads is published as RCU does and freed only when no vCPU can reach it:
the ops list, each ops' copy and its func_hash block (issue 6, "what was seen" 1-4)."""
from __future__ import annotations

import errno

import pytest
from vcpu_pause import pause_at

from emu import memlayout as L
from ftrace import FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_SAVE_REGS, FtraceError, FtraceOps
from ftrace.arch.x86.asm import assemble
from ftrace.arch.x86.ftrace_64 import OPS_NEXT

LIVEPATCH = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY


def guest_counter(m):
    """A guest-native callback that counts its calls in a u64: (address, read count)."""
    data = m.execmem.alloc(64)
    func = m.execmem.alloc(32)
    m.write(data, bytes(8))
    m.write(func, assemble(f"mov rax, {data}\nlock inc qword ptr [rax]\nret", func))
    return func, lambda: m.read_u64(data)


def guest_list(m) -> list[int]:
    """The ops copies the guest's list function walks, head first."""
    out, node = [], m.read_u64(m.ftrace.x86.ftrace_ops_list_head)
    while node:
        out.append(node)
        node = m.read_u64(node + OPS_NEXT)
    return out


def copy_of(m, ops) -> int:
    return m.ftrace.x86._guest[id(ops)].copy


def poison_free_code_area(m, value: int) -> None:
    """Fill every free byte of the code area with ``value`` (as KASAN poisons free memory):
    a guest read past the end of a block then sees it."""
    word = value.to_bytes(8, "little")
    for va, n in m.execmem.code.free_list + m.execmem.data.free_list:
        pa = va - L.EXECMEM_VA + L.EXECMEM_PA
        m.ram[pa:pa + n] = word * (n // 8)


def test_unregister_that_changes_no_site_still_unlinks_and_stops_the_guest_callback(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    counters = [guest_counter(m) for _ in range(3)]
    ops = [FtraceOps(func) for func, _ in counters]
    for o in ops:
        ft.ftrace_set_filter(o, "kstat_inc", True)
        ft.register_ftrace_function(o)
    m.run(ms=5)
    gone = copy_of(m, ops[0])                       # first in the guest list
    text = m.read(ft.function_address("kstat_inc"), 5)
    ft.unregister_ftrace_function(ops[0])
    assert m.read(ft.function_address("kstat_inc"), 5) == text        # no site changed
    assert gone not in guest_list(m)
    assert guest_list(m) == [copy_of(m, ops[2]), copy_of(m, ops[1])]
    count = counters[0][1]()
    m.run(ms=20)
    assert counters[0][1]() == count and counters[1][1]() > 0
    for o in ops[1:]:
        ft.unregister_ftrace_function(o)


def test_unregister_with_ftrace_disabled_unlinks_first(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    (fa, count_a), (fb, _) = guest_counter(m), guest_counter(m)
    a, b = FtraceOps(fa), FtraceOps(fb)
    for o in (a, b):
        ft.ftrace_set_filter(o, "kstat_inc", True)
        ft.register_ftrace_function(o)
    ft.ftrace_enabled = 0
    gone = copy_of(m, b)
    ft.unregister_ftrace_function(b)
    assert guest_list(m) == [copy_of(m, a)]
    assert gone not in guest_list(m)
    ft.ftrace_enabled = 1
    m.run(ms=10)
    assert count_a() > 0
    ft.unregister_ftrace_function(a)
    assert guest_list(m) == []


def test_a_refused_ipmodify_registration_leaves_no_trace_in_the_guest(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    a, b = FtraceOps(lambda *x: None, LIVEPATCH), FtraceOps(lambda *x: None, LIVEPATCH)
    ft.ftrace_set_filter(a, "kstat_inc", True)
    ft.register_ftrace_function(a)
    ft.ftrace_set_filter(b, "kstat_inc", True)
    head, used = guest_list(m), dict(m.execmem.used)
    with pytest.raises(FtraceError) as e:
        ft.register_ftrace_function(b)
    assert e.value.errno == errno.EBUSY
    assert guest_list(m) == head and m.execmem.used == used
    m.run(ms=5)
    ft.unregister_ftrace_function(a)
    assert guest_list(m) == []


def test_list_function_paused_at_every_instruction_sees_an_old_or_new_hash(booted_snapshots):
    # Two `keep` ops on kstat_inc send its site through the list function. CPU 1 is
    # stopped at each instruction of the list function in turn, while it tests `ops` for
    # kstat_inc, and then the filter of `ops` changes from four other functions to two.
    # Whatever CPU 1 read before and after, `ops` is never called for kstat_inc: neither the
    # old nor the new filter holds it. (The old list function loaded a hash's count and its
    # array with two loads: the old count with the new array read past its end.)
    from unicorn.x86_const import UC_X86_REG_R12, UC_X86_REG_RBX
    m = booted_snapshots(2)
    ft = m.ftrace
    seen: list[int] = []
    keep = [FtraceOps(lambda *a: None) for _ in range(2)]
    for k in keep:
        ft.ftrace_set_filter(k, "kstat_inc", True)
        ft.register_ftrace_function(k)
    ops = FtraceOps(lambda ip, *a: seen.append(ip))
    kstat_inc = ft.function_address("kstat_inc")
    below = [r.ip for r in ft.records if r.ip < kstat_inc][:2]
    others = [ft.function_address(f) for f in ("timer_interrupt", "do_syscall_64")]
    old, new = below + others, below      # four ips, then two: a count/array mix-up would
    x86 = ft.x86                          # read past the new array, into poisoned memory
    start = x86.ftrace_ops_list_func
    size = x86.symbols[start][1]
    stops = 0
    ft.ftrace_set_filter_ips(ops, old, False, True)
    ft.register_ftrace_function(ops)
    for pc in range(start, start + size):
        ft.ftrace_set_filter_ips(ops, old, False, True)
        cpu = pause_at(m, pc, 2, lambda c: c.index == 1 and c.regs.read(UC_X86_REG_R12) == kstat_inc
                       and c.regs.read(UC_X86_REG_RBX) == copy_of(m, ops))
        if cpu is not None:                              # else it never got there this time
            assert cpu.rip() == pc                       # CPU 1 stands right there
            stops += 1
        del seen[:]
        poison_free_code_area(m, kstat_inc)
        ft.ftrace_set_filter_ips(ops, new, False, True)
        m.run(ms=1)
        assert kstat_inc not in seen
    assert stops > 10                               # the pauses really happened
    for o in (ops, *keep):
        ft.unregister_ftrace_function(o)


def test_code_area_returns_to_its_baseline_after_many_filter_changes(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(ops, "schedule", True)
    baseline = len(m.execmem.used), sum(m.execmem.used.values())
    ft.register_ftrace_function(ops)
    for i in range(4000):                           # the old code ran out at about 1500
        ft.ftrace_set_notrace(ops, ("[a-r]*", "*_*")[i % 2], True)
        if i % 1000 == 999:
            m.run(ms=1)
    ft.unregister_ftrace_function(ops)
    m.run(ms=1)
    ft.ftrace_set_notrace(ops, None, True)           # polls the call_rcu queue
    assert (len(m.execmem.used), sum(m.execmem.used.values())) == baseline


def test_ops_that_unregister_themselves_through_defer_are_freed(booted_snapshots):
    m = booted_snapshots(2)
    ft = m.ftrace
    baseline = dict(m.execmem.used)
    refused = []
    for _ in range(20):
        def once(ip, pip, op, regs):
            if op.flags & 1 and not op.private:
                op.private = True
                with pytest.raises(FtraceError) as e:       # not from inside the callback
                    ft.unregister_ftrace_function(op)
                refused.append(e.value.errno)
                m.defer(lambda: ft.unregister_ftrace_function(op))
        ops = FtraceOps(once)
        ft.ftrace_set_filter(ops, "kstat_inc", True)
        ft.register_ftrace_function(ops)
        m.run(ms=2)
        assert not ops.flags & 1
    ft.ftrace_set_filter(FtraceOps(lambda *a: None), "schedule", True)   # polls the queue
    assert m.execmem.used == baseline and refused == [errno.EDEADLK] * 20


def test_running_out_of_code_area_is_enomem_with_nothing_changed(booted_snapshots):
    m = booted_snapshots(1)
    ft = m.ftrace
    ops = FtraceOps(lambda *a: None)
    ft.ftrace_set_filter(ops, "schedule", True)
    ft.register_ftrace_function(ops)
    filler = []
    for executable in (True, False):                  # code, and the NX data part
        while True:
            try:
                filler.append(m.execmem.alloc(16, executable=executable))
            except MemoryError:
                break
    before = (ft.enabled_functions, dict(m.execmem.used), [r.flags for r in ft.records])
    other = FtraceOps(lambda *a: None)
    for call in (lambda: ft.register_ftrace_function(other),
                 lambda: ft.ftrace_set_filter(ops, "kstat_inc", False)):
        with pytest.raises(FtraceError) as e:
            call()
        assert e.value.errno == errno.ENOMEM
        assert (ft.enabled_functions, dict(m.execmem.used), [r.flags for r in ft.records]) == before
    for va in filler:
        m.execmem.free(va)
    ft.ftrace_set_filter(ops, "kstat_inc", False)
    ft.unregister_ftrace_function(ops)                # no reference count underflow
    assert ft.enabled_functions == ""
