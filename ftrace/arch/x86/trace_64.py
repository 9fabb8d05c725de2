"""Guest code of the tracers, generated at run time: the trace clocks, what every event write
shares around the ring buffer's reserve and commit (ring_buffer_64.py): the gates, the
trace_entry word, the fast paths' begin and write; and the function tracer's callback.

Register contracts, as comments above each entry point in the kernel:
- ``trace_clock``: r8 = struct trace_array; returns the clock in rdx; clobbers rax, rcx.
  local = the TSC (virtual ns, exact per instruction), global and mono = the TSC made
  monotonic across CPUs, counter = a global atomic count, uptime = jiffies in USER_HZ.
- ``function_trace_call(ip, parent_ip, op, fregs)`` with r8 = the trace_array: a plain C-ABI
  ftrace callback reached through a per-trace-array thunk (``function_trace_thunk``) that
  loads r8, since op's private belongs to the ftrace files. Writes one TRACE_FN event into
  this CPU's buffer with the latency flags of the guest's real state. The machine holds interrupts and NMIs while a
  vCPU is in this code (``Machine.hold_interrupts_in``), so nothing interleaves a
  half-written event on its CPU without the cost of cli/popfq; a host ``Machine.call`` on a
  vCPU stopped inside a write finds the buffer's nest flag set and its event is counted as
  dropped instead.

struct trace_array (TR_*), as this code reads it: the per-CPU ring_buffer_per_cpu array,
tracing_on, the clock id and tracing_cpumask.
"""
from __future__ import annotations

import re
import struct

from emu import memlayout as L

from ...ring_buffer import PGT_VA, RB_CPU_SIZE, RB_DROPPED, RB_ENTRIES, RB_NEST, RB_PAGES
from .asm import CodeBuilder, assemble, subreg
from .ring_buffer_64 import COMMIT, reserve, reserve_fast, reserve_take, reserve_test

TR_BUFFERS, TR_ON, TR_CLOCK, TR_CPUMASK = 0x00, 0x08, 0x0C, 0x10
TR_PIDS, TR_NO_PIDS = 0x20, 0x28       # {u32 count; u32 pids[]} or 0 (set_ftrace[_notrace]_pid)
CLOCK_LOCAL, CLOCK_GLOBAL, CLOCK_COUNTER, CLOCK_UPTIME, CLOCK_MONO = range(5)
USER_HZ = 100

# trace_flag_type (include/linux/trace_events.h, v6.13+)
TRACE_FLAG_IRQS_OFF, TRACE_FLAG_NEED_RESCHED, TRACE_FLAG_HARDIRQ = 0x01, 0x04, 0x08
TRACE_FLAG_SOFTIRQ, TRACE_FLAG_NMI, TRACE_FLAG_BH_OFF = 0x10, 0x40, 0x80
TRACE_FN = 1
BH_OFF_MASK = 0xFE00                     # softirq-disable depth above SOFTIRQ_OFFSET
TIF_SHIFT = L.TIF_NEED_RESCHED - (TRACE_FLAG_NEED_RESCHED.bit_length() - 1)  # task->flags -> flag

# Shared clock state (one page per machine): the last global time, the counter. The page
# also holds, for the one-branch fast paths, whose reads before their branch must all be
# valid: a ring_buffer_per_cpu that refuses every reserve (its tail page is itself, whose
# commit, its nr_pages, is 0), pointed at when a gate refuses, and a trace_array that
# records on no CPU (its per-CPU buffers: this page), read when there is no real one.
CLK_GLOBAL_LAST, CLK_COUNTER, CLK_REFUSING, CLK_NO_TRACE = 0x00, 0x08, 0x80, 0x200


def clock_page(clock_data: int) -> bytes:
    """The clock page's first contents (at ``clock_data``): zeros but the refusing buffer's
    page table, whose one slot points back at it, and the no-trace array's buffers."""
    page = bytearray(4096)
    refusing = clock_data + CLK_REFUSING
    struct.pack_into("<Q", page, CLK_REFUSING + RB_PAGES, refusing + RB_CPU_SIZE)
    struct.pack_into("<Q", page, CLK_REFUSING + RB_CPU_SIZE + PGT_VA, refusing)
    struct.pack_into("<Q", page, CLK_NO_TRACE + TR_BUFFERS, clock_data)
    assert RB_CPU_SIZE * L.NCPU <= len(page)
    return bytes(page)


def insns(src: str) -> int:
    """The instructions of an assembly snippet (labels and blank lines not counted)."""
    return sum(1 for line in src.split("\n") if re.sub(r"^\s*\w+:", "", line).strip())


# The TSC in rdx (virtual ns, from the rdtsc hook); clobbers rax.
RDTSC = """
        rdtsc
        shl rdx, 32
        or rdx, rax"""


def clock_read(clock: int, clock_data: int, position: int) -> str:
    """Inline trace_clock for the clocks the fast paths take (local, counter): rdx = now;
    clobbers rax, rcx. local does not rdtsc (Unicorn's rdtsc helper costs ~50 ns): it reads
    the vCPU's pvclock (guest/memlayout.h PCPU_PVCLOCK), exactly what an rdtsc in its place
    would read, given ``position``: the instructions before this code in its translation
    block, which must start after a branch (``insns`` of what lies between; the tests check
    it). Three instructions, as rdtsc's, so tracing costs the same virtual time. Where the
    host does not keep the pvclock the time is PVCLOCK_INVALID or more: the fast reserve
    then refuses it and ``write_fast``'s out-of-line part reads the TSC."""
    if clock == CLOCK_LOCAL:
        return f"""
        imul rdx, qword ptr gs:[{L.PCPU_PVCLOCK}], {L.NS_PER_INSN}
        add rdx, qword ptr gs:[{L.PCPU_PVCLOCK + 8}]
        add rdx, {position * L.NS_PER_INSN}"""
    assert clock == CLOCK_COUNTER
    return f"""
        movabs rcx, {clock_data + CLK_COUNTER}
        mov edx, 1
        lock xadd qword ptr [rcx], rdx
        inc rdx"""


def emit_trace_clock(b: CodeBuilder, clock_data: int, jiffies: int) -> None:
    """trace_clock (see the module docstring)."""
    b.label("trace_clock")
    b.emit(f"""
        mov ecx, dword ptr [r8 + {TR_CLOCK}]
        cmp ecx, {CLOCK_COUNTER}
        je 3f
        cmp ecx, {CLOCK_UPTIME}
        je 4f""" + RDTSC + f"""
        test ecx, ecx
        jz 9f
        movabs rcx, {clock_data + CLK_GLOBAL_LAST}
        mov rax, qword ptr [rcx]
    1:  cmp rdx, rax
        jb 2f
        lock cmpxchg qword ptr [rcx], rdx
        jnz 1b
        ret
    2:  mov rdx, rax
        ret
    3:""" + clock_read(CLOCK_COUNTER, clock_data, 0) + f"""
        ret
    4:  movabs rcx, {jiffies}
        mov rax, qword ptr [rcx]
        xor edx, edx
        mov ecx, {L.HZ // USER_HZ}
        div rcx
        mov rdx, rax
    9:  ret""")
    b.align()


def trace_ctx(type_id: int, out: str = "rcx", t1: str = "rdx", t2: str = "r8",
              has_task: bool = False) -> str:
    """struct trace_entry's first word in ``out``: type, the latency flags (irqs-off from the
    RFLAGS saved at [rsp], the preempt_count bits, need-resched of current), min(preempt
    depth, 15) and current's pid. Clobbers ``t1`` and ``t2``. Branch-free but for a CPU
    without a current task (pid 0; ``has_task``: the caller knows there is one): every
    branch ends a translation block, which costs more than several instructions."""
    assert TIF_SHIFT >= 0
    o, a, c = (subreg(r, 32) for r in (out, t1, t2))
    a8 = subreg(t1, 8)
    o8 = subreg(out, 8)

    def flag_if(mask: int, flag: int) -> str:
        shift = flag.bit_length() - 1
        return f"""
        xor {a}, {a}
        test {o}, {mask}
        setnz {a8}
        shl {a}, {shift}
        or {c}, {a}"""
    return f"""
        mov {o}, dword ptr gs:[{L.PCPU_PREEMPT_COUNT}]
        movzx {c}, byte ptr [rsp + 1]
        not {c}
        shr {c}, 1
        and {c}, {TRACE_FLAG_IRQS_OFF}""" + flag_if(L.NMI_MASK, TRACE_FLAG_NMI) \
        + flag_if(L.HARDIRQ_MASK, TRACE_FLAG_HARDIRQ) + flag_if(BH_OFF_MASK, TRACE_FLAG_BH_OFF) + f"""
        mov {a}, {o}
        shr {a}, {(L.SOFTIRQ_OFFSET // TRACE_FLAG_SOFTIRQ).bit_length() - 1}
        and {a}, {TRACE_FLAG_SOFTIRQ}
        or {c}, {a}
        movzx {o}, {o8}
        mov {a}, 15
        cmp {o}, {a}
        cmova {o}, {a}
        shl {o}, 8
        or {o}, {c}
        mov {t1}, qword ptr gs:[{L.PCPU_CURRENT}]""" + ("" if has_task else f"""
        test {t1}, {t1}
        jz 47f""") + f"""
        mov {t2}, qword ptr [{t1} + {L.TASK_FLAGS}]
        shr {c}, {TIF_SHIFT}
        and {c}, {TRACE_FLAG_NEED_RESCHED}
        or {o}, {c}
        mov {a}, dword ptr [{t1} + {L.TASK_PID}]
    47: shl {o}, 16
        or {o}, {type_id}
        shl {t1}, 32
        or {out}, {t1}"""


def tracing_gate(tr: str, skip: str) -> str:
    """Jump to ``skip`` unless trace_array ``tr`` records (tracing_on) on this CPU
    (tracing_cpumask). Clobbers rax."""
    return f"""
        cmp dword ptr [{tr} + {TR_ON}], 0
        je {skip}
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        bt qword ptr [{tr} + {TR_CPUMASK}], rax
        jnc {skip}"""


def pid_in_array(pid: str, loop: int, missing: str) -> str:
    """Falls through if the pid array {u32 count; u32 pids[]} at r9 holds ``pid`` (a 32-bit
    register), jumps to ``missing`` if not; ``loop`` is the local label it uses. Clobbers r11."""
    return f"""
        mov r11d, dword ptr [r9]
    {loop}: test r11d, r11d
        jz {missing}
        dec r11d
        cmp dword ptr [r9 + r11*4 + 4], {pid}
        jne {loop}b"""


def pid_gate(tr: str, skip: str) -> str:
    """Jump to ``skip`` if trace_array ``tr``'s pid filters leave out the current task
    (trace_ignore_this_task: not in set_ftrace_pid when that has pids, or in
    set_ftrace_notrace_pid). Clobbers rax, r9, r11."""
    return f"""
        mov rax, qword ptr gs:[{L.PCPU_CURRENT}]
        test rax, rax
        jz 70f
        mov eax, dword ptr [rax + {L.TASK_PID}]
    70: mov r9, qword ptr [{tr} + {TR_PIDS}]
        test r9, r9
        jz 72f
""" + pid_in_array("eax", 73, skip) + f"""
    72: mov r9, qword ptr [{tr} + {TR_NO_PIDS}]
        test r9, r9
        jz 75f
""" + pid_in_array("eax", 74, "75f") + f"""
        jmp {skip}
    75:"""


def begin_event(tr: str, length: int | tuple[str, str], type_id: int, busy: str, dropped: str) -> str:
    """This CPU's buffer of trace_array ``tr`` in rdi with its nest flag taken (``busy`` if
    an interrupted write holds it), ``length`` bytes reserved at time rdx (``dropped`` if
    the buffer refused), rax = the payload and rcx = struct trace_entry's word. The caller
    stores the payload, then COMMIT, then clears the nest flag."""
    return f"""
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        shl eax, 7
        mov rdi, qword ptr [{tr} + {TR_BUFFERS}]
        add rdi, rax
        cmp dword ptr [rdi + {RB_NEST}], 0
        jne {busy}
        mov dword ptr [rdi + {RB_NEST}], 1""" + reserve(length) + f"""
        test rax, rax
        jz {dropped}""" + trace_ctx(type_id)


def fast_gate(tr: str, slow: str, extra: str = "", branch: bool = True) -> str:
    """Jump to ``slow`` (registers intact but rax, rcx, r9) unless the plain case holds:
    ``tr`` records on this CPU (tracing_on, tracing_cpumask), no pid filter is set and no
    write holds this CPU's buffer, and ``extra`` (code that ORs a nonzero value into rcx
    to refuse) agrees. Leaves r9 = this CPU's buffer; one branch (or none: ZF clear then
    refuses)."""
    return f"""
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        bt qword ptr [{tr} + {TR_CPUMASK}], rax
        sbb ecx, ecx
        and ecx, dword ptr [{tr} + {TR_ON}]
        xor ecx, 1
        shl eax, 7
        mov r9, qword ptr [{tr} + {TR_BUFFERS}]
        add r9, rax
        or ecx, dword ptr [r9 + {RB_NEST}]
        or rcx, qword ptr [{tr} + {TR_PIDS}]
        or rcx, qword ptr [{tr} + {TR_NO_PIDS}]""" + extra + (f"""
        jnz {slow}""" if branch else "")


FAST_CLOCKS = {CLOCK_LOCAL: "local", CLOCK_COUNTER: "counter"}
HAS_TASK = f"""
        cmp qword ptr gs:[{L.PCPU_CURRENT}], 1
        sbb rax, rax
        or rcx, rax"""                  # fast_gate's extra: refused while the CPU has no task


def fast_begin(moves: str, clock: int, clock_data: int) -> str:
    """Right after a fast gate's branch (which starts a translation block): ``moves`` (which
    put this CPU's buffer in rdi), the buffer's nest flag taken, flags pushed, and the time in
    rdx, read at its position in that block. Clobbers rax, rcx."""
    take = moves + f"""
        mov dword ptr [rdi + {RB_NEST}], 1
        pushfq"""
    return take + clock_read(clock, clock_data, insns(take))


def write_fast(length: int, type_id: int, fill: str, clock: int) -> tuple[str, str]:
    """Reserve, fill and commit a ``length``-byte event of ``type_id`` in buffer rdi (nest
    flag taken, flags pushed) at time rdx: ``reserve_fast``, or the whole ``reserve`` out of
    line when the tail page must be started or closed or the delta needs a TIME_EXTEND (the
    clock is read once either way; a local time from an invalid pvclock is read again, from
    the TSC). ``fill`` stores the payload but its first word at rax
    (rsi, r10 and callee-saved registers survive until then). Then clears the nest flag;
    clobbers rax, rcx, rdx, r8, r9, r11. Returns the inline code, which falls through, and
    the out-of-line part, to be placed where nothing falls into it (a jump over it would
    end a translation block)."""
    inline = reserve_fast(length, "80f") + f"""
    81:""" + fill + trace_ctx(type_id, has_task=True) + f"""
        mov qword ptr [rax], rcx""" + COMMIT + f"""
    85: mov dword ptr [rdi + {RB_NEST}], 0"""
    tsc = "" if clock != CLOCK_LOCAL else f"""
        bt rdx, {L.PVCLOCK_INVALID.bit_length() - 1}
        jnc 82f""" + RDTSC + """
    82:"""
    return inline, f"""
    80:""" + tsc + reserve(length) + """
        test rax, rax
        jnz 81b
        jmp 85b"""


def emit_function_trace_call(b: CodeBuilder, clock_data: int) -> None:
    """function_trace_call (see the module docstring), then a fast variant per clock in
    FAST_CLOCKS (``function_trace_call_<clock>``, which the trace array's thunk points at
    while that clock is selected): the plain case in two or three translation blocks; pid
    filters, a busy buffer or tracing off go to the general code before anything is written
    (local: a page to start or close too)."""
    clock = b.labels["trace_clock"]
    b.label("function_trace_call")
    b.emit(tracing_gate("r8", "99f") + pid_gate("r8", "99f") + f"""
        mov r10, rsi
        mov rsi, rdi
        pushfq
        cli
        call {clock}""" + begin_event("r8", 24, TRACE_FN, "98f", "97f") + f"""
        mov qword ptr [rax], rcx
        mov qword ptr [rax + 8], rsi
        mov qword ptr [rax + 16], r10""" + COMMIT + f"""
    97: mov dword ptr [rdi + {RB_NEST}], 0
        popfq
    99: ret
    98: inc qword ptr [rdi + {RB_DROPPED}]
        popfq
        ret""")
    b.align()
    general = b.labels["function_trace_call"]
    write, tail = write_fast(24, TRACE_FN, """
        mov qword ptr [rax + 8], rsi
        mov qword ptr [rax + 16], r10""", CLOCK_COUNTER)
    b.label("function_trace_call_counter")
    b.emit(fast_gate("r8", str(general), HAS_TASK) + fast_begin("""
        mov r10, rsi
        mov rsi, rdi
        mov rdi, r9""", CLOCK_COUNTER, clock_data) + write + """
        add rsp, 8
        ret""" + tail)
    b.align()
    # local: the clock has no side effect, so the gate, the clock and the reserve's tests all
    # go before one branch (each branch ends a translation block), which leaves anything but
    # the plain case, a page to start or close included, to the general code.
    b.label("function_trace_call_local")
    checks = fast_gate("r8", "", HAS_TASK, branch=False) + f"""
        movabs rax, {clock_data + CLK_REFUSING}
        cmovnz r9, rax
        mov dword ptr [r9 + {RB_NEST}], 1"""
    b.emit(checks + clock_read(CLOCK_LOCAL, clock_data, insns(checks))
           + reserve_test(24, "r9", "r10", "80f") + """
        pushfq""" + reserve_take(24, "r9", "r10") + f"""
        mov qword ptr [rax + 8], rdi
        mov qword ptr [rax + 16], rsi""" + trace_ctx(TRACE_FN, has_task=True) + f"""
        mov qword ptr [rax], rcx
        mov qword ptr [r11 + 8], r10
        inc qword ptr [r9 + {RB_ENTRIES}]
        mov dword ptr [r9 + {RB_NEST}], 0
        add rsp, 8
        ret
    80: mov dword ptr [r9 + {RB_NEST}], 0
        jmp {general}""")
    b.align()


def function_trace_thunk(at: int, tr: int, target: int) -> bytes:
    """The callback of one trace array's ops, placed at ``at``: r8 = ``tr``, then ``target``."""
    return assemble(f"movabs r8, {tr}\njmp {target}", at)
