"""The guest code of ftrace, generated at run time (the kernel's arch/x86/kernel/ftrace_64.S).

Register contracts, as comments above each entry point in the kernel. The callers build one
of three frames (``Frame``):
- ``Frame.NONE``, the private trampoline of an ops that neither asks for regs nor modifies
  the ip: saves only what a C callee may clobber of the traced function's entry state (the
  argument registers and rax) under the kernel's two frame-pointer frames, calls
  ``func(ip, parent_ip, op, NULL)``, restores and returns. The seed's "regs is NULL without
  SAVE_REGS": nobody can read a frame here, so none is built; that halves the cost of a
  plain callback (the kernel's copies of ftrace_caller build its ftrace_regs even so).
- ``Frame.ARGS``, ``ftrace_caller`` itself and the private trampoline of an IPMODIFY ops
  without SAVE_REGS (livepatch's): the kernel's ftrace_caller with DYNAMIC_FTRACE_WITH_ARGS.
  Under the two frames, a pt_regs-shaped ``ftrace_regs``: rax, rcx, rdx, rsi, rdi, r8, r9,
  the original rbp, ip (site+5), sp (the parent's return slot), orig_ax = 0 and cs = 0 (so
  ``ftrace_get_regs`` says NULL and the list function skips SAVE_REGS ops); the other fields
  are not written. Calls ``func(ip, parent_ip, op, fregs)``, then copies the ip slot into
  the return slot ("handlers can change the RIP"), restores those registers and returns:
  to the traced function, or to the new ip with the stack as the parent left it.
- ``Frame.REGS``, ``ftrace_regs_caller``: ``pushfq`` first, then two frame-pointer frames
  and a full pt_regs in the kernel's layout (cs = KERNEL_CS, ss = KERNEL_DS, flags); calls
  ``func(ip, parent_ip, op, regs)``, copies the ip slot into the return slot and flags into
  the pushfq slot, restores everything but r11, popfq, returns.
- ``ftrace_ops_list_func(ip, parent_ip, op, fregs)``: LIST-bit recursion lock, then every ops
  newest first: skip STUB, skip RCU ops while RCU is not watching, skip SAVE_REGS ops without
  regs, test filter/notrace, call.
- ``ftrace_ops_assist_func(ip, parent_ip, op, fregs)``: LIST-bit lock, RCU test, call op->func.
- ``ftrace_rec_lock(start, ip, parent_ip) -> bit | -1`` and ``ftrace_rec_unlock(bit)``: the
  kernel's trace_test_and_set_recursion on current->trace_recursion with preempt_count
  raised while held; a refused re-entry is reported to the host (recursed_functions).
All three build two frame-pointer frames first, so guest backtraces pass through them.
"""
from __future__ import annotations

import enum
import functools
import struct

from emu import memlayout as L

from ...flags import FtraceOpsFlags as FL
from .asm import CodeBuilder
from .ptregs import PT_REGS_OFFSET as R

HCALL_CALLBACK_PORT = 0xE0      # out 0xe0, eax=ops id: run a Python callback (args at rsp)
HCALL_RECURSION_PORT = L.FTRACE_RECURSION_PORT   # a recursion was refused (ip, parent_ip at rsp)
TRACE_FTRACE_START, TRACE_LIST_START = 0, 5
MCOUNT_FRAME_SIZE = 40          # the saved rbp and two fake frames
FRAME_SIZE = 168

# The guest copy of an ftrace_ops (what trampolines and the list function read). Its fields
# are fixed while the ops is registered, except NEXT and HASH: RCU pointers, each changed by
# one aligned 8-byte store. HASH points at an immutable func_hash block (or is 0: trace all):
# u64 filter count, u64 notrace count, the sorted filter ips, then the sorted notrace ips.
OPS_FUNC, OPS_FLAGS, OPS_PRIVATE, OPS_NEXT, OPS_HASH, OPS_ID = 0x00, 0x08, 0x10, 0x18, 0x20, 0x28
OPS_SIZE = 0x30
HASH_HEADER = 16

_NMI, _HARD = L.NMI_MASK, L.NMI_MASK | L.HARDIRQ_MASK
_SOFT = _HARD | L.SOFTIRQ_OFFSET


def emit_helpers(b: CodeBuilder, ops_list_head: int) -> None:
    """ftrace_stub, the recursion lock pair, the hash lookup, the assist and list functions."""
    b.label("ftrace_stub")
    b.emit("ret")
    b.align()
    b.label("ftrace_rec_lock")
    b.emit(f"""
        mov ecx, dword ptr gs:[{L.PCPU_PREEMPT_COUNT}]
        xor eax, eax
        test ecx, {_NMI}
        setnz al
        xor r8d, r8d
        test ecx, {_HARD}
        setnz r8b
        add eax, r8d
        xor r8d, r8d
        test ecx, {_SOFT}
        setnz r8b
        add eax, r8d
        mov r9d, edi
        add r9d, 3
        sub r9d, eax
        mov r8, qword ptr gs:[{L.PCPU_CURRENT}]
        test r8, r8
        jz 2f
        mov rax, qword ptr [r8 + {L.TASK_TRACE_RECURSION}]
        bt rax, r9
        jnc 1f
        lea r9d, [edi + 4]
        bt rax, r9
        jc 3f
    1:  bts rax, r9
        mov qword ptr [r8 + {L.TASK_TRACE_RECURSION}], rax
        inc dword ptr gs:[{L.PCPU_PREEMPT_COUNT}]
        mov eax, r9d
        ret
    3:  push rdx
        push rsi
        out {HCALL_RECURSION_PORT}, eax
        add rsp, 16
    2:  mov eax, -1
        ret""")
    b.align()
    b.label("ftrace_rec_unlock")
    b.emit(f"""
        dec dword ptr gs:[{L.PCPU_PREEMPT_COUNT}]
        mov r8, qword ptr gs:[{L.PCPU_CURRENT}]
        mov rax, qword ptr [r8 + {L.TASK_TRACE_RECURSION}]
        btr rax, rdi
        mov qword ptr [r8 + {L.TASK_TRACE_RECURSION}], rax
        ret""")
    b.align()
    b.label("ftrace_hash_lookup")          # (ip, sorted u64 array, n) -> eax = found
    b.emit("""
        xor ecx, ecx
    1:  cmp rcx, rdx
        jae 3f
        lea rax, [rcx + rdx]
        shr rax, 1
        mov r8, qword ptr [rsi + rax*8]
        cmp r8, rdi
        je 2f
        jb 4f
        mov rdx, rax
        jmp 1b
    4:  lea rcx, [rax + 1]
        jmp 1b
    2:  mov eax, 1
        ret
    3:  xor eax, eax
        ret""")
    b.align()
    lock, unlock, lookup = b.labels["ftrace_rec_lock"], b.labels["ftrace_rec_unlock"], b.labels["ftrace_hash_lookup"]
    prologue = """
        push rbp
        mov rbp, rsp
        push rbx
        push r12
        push r13
        push r14
        push r15
        sub rsp, 8
        mov r12, rdi
        mov r13, rsi
        mov rbx, rdx
        mov r14, rcx"""
    epilogue = """
        add rsp, 8
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbx
        pop rbp
        ret"""
    take_lock = f"""
        mov edi, {TRACE_LIST_START}
        mov rsi, r12
        mov rdx, r13
        call {lock}
        test eax, eax
        js 9f
        mov r15d, eax"""
    call_op = f"""
        mov rdi, r12
        mov rsi, r13
        mov rdx, rbx
        mov rcx, r14
        call qword ptr [rbx + {OPS_FUNC}]"""
    b.label("ftrace_ops_assist_func")
    b.emit(prologue + take_lock + f"""
        test qword ptr [rbx + {OPS_FLAGS}], {int(FL.RCU)}
        jz 1f
        cmp dword ptr gs:[{L.PCPU_RCU_WATCHING}], 0
        je 2f
    1:""" + call_op + f"""
    2:  mov edi, r15d
        call {unlock}
    9:""" + epilogue)
    b.align()
    b.label("ftrace_ops_list_func")
    b.emit(prologue + take_lock + f"""
        mov rbx, {ops_list_head}
        mov rbx, qword ptr [rbx]
    1:  test rbx, rbx
        jz 8f
        mov rax, qword ptr [rbx + {OPS_FLAGS}]
        test eax, {int(FL.STUB)}
        jnz 7f
        test eax, {int(FL.RCU)}
        jz 2f
        cmp dword ptr gs:[{L.PCPU_RCU_WATCHING}], 0
        je 7f
    2:  test eax, {int(FL.SAVE_REGS)}
        jz 3f
        test r14, r14
        jz 7f
        cmp qword ptr [r14 + {R['cs']}], 0
        je 7f
    3:""" + hash_test(lookup) + """
    5:""" + call_op + f"""
    7:  mov rbx, qword ptr [rbx + {OPS_NEXT}]
        jmp 1b
    8:  mov edi, r15d
        call {unlock}
    9:""" + epilogue)
    b.align()


def hash_test(lookup: int) -> str:
    """ftrace_ops_test for the ops in rbx, ip in r12: skip the ops (to 7f) unless the filter
    is empty or holds ip, or when the notrace hash holds ip; go on to 5f otherwise. The
    func_hash pointer is loaded once (into the frame's spare slot), so one test sees one
    published block: never half an old hash and half a new one."""
    return f"""
        mov rsi, qword ptr [rbx + {OPS_HASH}]
        test rsi, rsi
        jz 5f
        mov qword ptr [rsp], rsi
        mov rdx, qword ptr [rsi]
        test rdx, rdx
        jz 4f
        mov rdi, r12
        add rsi, {HASH_HEADER}
        call {lookup}
        test eax, eax
        jz 7f
    4:  mov rsi, qword ptr [rsp]
        mov rdx, qword ptr [rsi + 8]
        test rdx, rdx
        jz 5f
        mov rdi, r12
        mov rax, qword ptr [rsi]
        lea rsi, [rsi + rax*8 + {HASH_HEADER}]
        call {lookup}
        test eax, eax
        jnz 7f"""


ARG_REGS = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9")
ARGS_SAVED = ("ax", "cx", "dx", "si", "di", "r8", "r9")        # the same, as pt_regs fields
# save_mcount_regs' two frame-pointer frames (the kernel's, with CONFIG_FRAME_POINTER): one for
# the traced function, returning to its caller, and one for the trampoline, returning into
# the traced function; __fentry__ runs before the traced function builds a frame of its own,
# so without the first a stack trace would skip the caller. rbp ends at the second frame.
MCOUNT_FRAMES = ["push rbp",                          # the original rbp
                 "push qword ptr [rsp + 16]",         # the parent's return address
                 "push rbp", "mov rbp, rsp",
                 "push qword ptr [rsp + 24]",         # site + 5
                 "push rbp", "mov rbp, rsp"]


class Frame(enum.IntEnum):
    """What a caller saves and hands its callback as the 4th argument (module docstring)."""

    NONE = 0        # NULL
    ARGS = 1        # struct ftrace_regs: arguments, rax, rbp, ip, sp; ip honoured
    REGS = 2        # a full struct pt_regs; ip and flags honoured


def emit_caller(b: CodeBuilder, name: str, frame: Frame, op_load: str, target: int) -> None:
    """ftrace_caller / ftrace_regs_caller (or a private copy): labels ``name``,
    ``name``_call and ``name``_end; ``op_load`` puts the ops pointer in rdx; ``target`` is
    what the call calls."""
    b.label(name)
    if frame == Frame.REGS:
        _emit_regs_body(b, name, op_load, target)
    elif frame == Frame.ARGS:
        _emit_args_body(b, name, op_load, target)
    else:
        b.emit("\n".join(MCOUNT_FRAMES + [f"push {r}" for r in ARG_REGS] + [
            "mov rdi, qword ptr [rbp + 8]", "sub rdi, 5",        # ip: the site
            "mov rsi, qword ptr [rbp + 24]",                       # parent_ip
            op_load, "xor ecx, ecx"]))                             # regs: NULL
        b.label(name + "_call")
        b.emit(f"call {target}")
        b.emit("\n".join([f"pop {r}" for r in reversed(ARG_REGS)]
                         + [f"add rsp, {MCOUNT_FRAME_SIZE - 8}", "pop rbp", "ret"]))
    b.label(name + "_end")
    b.align()


def _emit_args_body(b: CodeBuilder, name: str, op_load: str, target: int) -> None:
    """The ftrace_caller body (save_mcount_regs, ftrace_call, the ip copy,
    restore_mcount_regs): the ftrace_regs frame under the two frames, no pushfq."""
    ret = FRAME_SIZE + MCOUNT_FRAME_SIZE  # from the frame to the return slot (site + 5)
    save = MCOUNT_FRAMES + [f"sub rsp, {FRAME_SIZE}"]
    save += [f"mov qword ptr [rsp + {R[n]}], {reg64(n)}" for n in ARGS_SAVED]
    save += [f"mov qword ptr [rsp + {R['orig_ax']}], 0",
             f"mov rdx, qword ptr [rsp + {ret - 8}]", f"mov qword ptr [rsp + {R['bp']}], rdx",
             f"mov rsi, qword ptr [rsp + {ret + 8}]",                  # parent_ip
             f"mov rdi, qword ptr [rsp + {ret}]", f"mov qword ptr [rsp + {R['ip']}], rdi",
             "sub rdi, 5",                                             # ip: the site
             f"lea rcx, [rsp + {ret + 8}]", f"mov qword ptr [rsp + {R['sp']}], rcx",
             op_load, "mov rcx, rsp",
             f"mov qword ptr [rsp + {R['cs']}], 0"]                    # not a full pt_regs
    b.emit("\n".join(save))
    b.label(name + "_call")
    b.emit(f"call {target}")
    restore = [f"mov rax, qword ptr [rsp + {R['ip']}]", f"mov qword ptr [rsp + {ret}], rax"]
    restore += [f"mov {reg64(n)}, qword ptr [rsp + {R[n]}]" for n in reversed(ARGS_SAVED)]
    restore += [f"mov rbp, qword ptr [rsp + {R['bp']}]", f"add rsp, {ret}", "ret"]
    b.emit("\n".join(restore))


def _emit_regs_body(b: CodeBuilder, name: str, op_load: str, target: int) -> None:
    """The ftrace_regs_caller body: the kernel's frame and pt_regs layout."""
    top = FRAME_SIZE + MCOUNT_FRAME_SIZE  # from the frame to the pushfq slot
    save = ["pushfq", "push rbp",
            "push qword ptr [rsp + 24]",            # parent return address
            "push rbp", "mov rbp, rsp",
            "push qword ptr [rsp + 32]",            # site + 5
            "push rbp", "mov rbp, rsp",
            f"sub rsp, {FRAME_SIZE}"]
    saved = ["ax", "cx", "dx", "si", "di", "r8", "r9", "r15", "r14", "r13", "r12", "bx", "r11", "r10"]
    save += [f"mov qword ptr [rsp + {R[n]}], {reg64(n)}" for n in saved]
    save += [f"mov qword ptr [rsp + {R['orig_ax']}], 0",
             f"mov rdx, qword ptr [rsp + {top - 8}]", f"mov qword ptr [rsp + {R['bp']}], rdx",
             f"mov rdx, qword ptr [rsp + {top}]", f"mov qword ptr [rsp + {R['flags']}], rdx",
             f"mov qword ptr [rsp + {R['cs']}], {L.KERNEL_CS}",
             f"mov qword ptr [rsp + {R['ss']}], {L.KERNEL_DS}",
             f"mov rdi, qword ptr [rsp + {top + 8}]", f"mov qword ptr [rsp + {R['ip']}], rdi",
             "sub rdi, 5",
             f"mov rsi, qword ptr [rsp + {top + 16}]",
             f"lea rdx, [rsp + {top + 16}]", f"mov qword ptr [rsp + {R['sp']}], rdx",
             op_load, "mov rcx, rsp"]
    b.emit("\n".join(save))
    b.label(name + "_call")
    b.emit(f"call {target}")
    restore = [f"mov rax, qword ptr [rsp + {R['ip']}]", f"mov qword ptr [rsp + {top + 8}], rax",
               f"mov rax, qword ptr [rsp + {R['flags']}]", f"mov qword ptr [rsp + {top}], rax"]
    restore += [f"mov {reg64(n)}, qword ptr [rsp + {R[n]}]"
                for n in ("r15", "r14", "r13", "r12", "r10", "bx", "bp", "r9", "r8", "di", "si", "dx", "cx", "ax")]
    restore += [f"add rsp, {top}", "popfq", "ret"]
    b.emit("\n".join(restore))


MAILBOX_SHIFT = 5               # per CPU 32 bytes: ip, parent_ip, op, fregs

_PLACEHOLDER = L.EXECMEM_VA     # an ops address, as `mov rdx, imm32` sign-extends it
_MOV_RDX_OP = b"\x48\xc7\xc2" + struct.pack("<i", _PLACEHOLDER - (1 << 64))


@functools.lru_cache(maxsize=None)
def trampoline_template(frame: Frame) -> tuple[bytes, int, int]:
    """A private trampoline assembled once: (code, offset of the op immediate, offset of the
    call). ``instantiate_trampoline`` copies and patches it, as the kernel's
    create_trampoline copies ftrace_caller and patches the op load and the call."""
    b = CodeBuilder(L.EXECMEM_VA)
    emit_caller(b, "t", frame, f"mov rdx, {_PLACEHOLDER}", L.EXECMEM_VA)
    code = bytes(b.code[:b.labels["t_end"] - b.base])
    return code, code.index(_MOV_RDX_OP) + 3, b.labels["t_call"] - b.base


def instantiate_trampoline(frame: Frame, base: int, op: int, target: int) -> tuple[bytes, int]:
    """The trampoline for an ops copy at ``op`` calling ``target``, placed at ``base``;
    returns its code and the offset of its call."""
    code, op_off, call_off = trampoline_template(frame)
    out = bytearray(code)
    struct.pack_into("<i", out, op_off, op - (1 << 64))
    struct.pack_into("<i", out, call_off + 1, target - (base + call_off + 5))
    return bytes(out), call_off


@functools.lru_cache(maxsize=None)
def _stub_template(mailboxes: int) -> tuple[bytes, int]:
    b = CodeBuilder(L.EXECMEM_VA)
    emit_python_stub(b, 0x7FFFFFFF, mailboxes)
    code = bytes(b.code)
    return code, code.index(b"\xb8\xff\xff\xff\x7f") + 1        # mov eax, imm32


def python_stub(ops_id: int, mailboxes: int) -> bytes:
    """The Python-callback stub for ``ops_id`` (position-independent: assembled once)."""
    code, id_off = _stub_template(mailboxes)
    out = bytearray(code)
    struct.pack_into("<I", out, id_off, ops_id)
    return bytes(out)


def emit_python_stub(b: CodeBuilder, ops_id: int, mailboxes: int) -> None:
    """A guest function that hands (ip, parent_ip, op, fregs) to the host's Python callback:
    it leaves them in this CPU's mailbox (read by the host straight from RAM) and makes one
    ``out`` hypercall carrying the ops id."""
    b.emit(f"""
        push rbp
        mov rbp, rsp
        mov eax, dword ptr gs:[{L.PCPU_CPU}]
        shl eax, {MAILBOX_SHIFT}
        add rax, {mailboxes}
        mov qword ptr [rax], rdi
        mov qword ptr [rax + 8], rsi
        mov qword ptr [rax + 16], rdx
        mov qword ptr [rax + 24], rcx
        mov eax, {ops_id}
        out {HCALL_CALLBACK_PORT}, eax
        pop rbp
        ret""")
    b.align()


def reg64(name: str) -> str:
    """pt_regs field name -> 64-bit register name."""
    return name if name.startswith("r") and name[1:].isdigit() else "r" + name
