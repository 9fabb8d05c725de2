"""Guest code of the ring buffer's writer (the kernel's ring_buffer_lock_reserve and
ring_buffer_unlock_commit, kernel/trace/ring_buffer.c), inlined by every tracer's event write.

Register contract of every piece: this CPU's ring_buffer_per_cpu in rdi (or the register
named), the event's time in rdx; the reserve leaves rax = the payload, r11 = the tail page
and r9 = the page's new commit, which ``COMMIT`` stores. The caller holds the buffer's nest
flag and keeps interrupts from the write (trace_64's docstring). The struct offsets (RB_*)
and the page format are the host's (ftrace/ring_buffer.py, ring_buffer_format.py).
"""
from __future__ import annotations

from ...ring_buffer import (PGT_START, RB_DROPPED, RB_ENTRIES, RB_HEAD_PAGE, RB_LOST,
                            RB_NR_PAGES, RB_OVERRUN, RB_OVERWRITE, RB_PAGES, RB_READ,
                            RB_TAIL_PAGE, RB_WRITE_STAMP)
from ...ring_buffer_format import (BUF_PAGE_SIZE, RINGBUF_TYPE_PADDING, RINGBUF_TYPE_TIME_EXTEND,
                                   TS_DELTA_MAX)
from .asm import subreg


def tail_page(buf: str) -> str:
    """r11 = the tail page of this CPU's buffer ``buf`` (rax = its slot in the page table)."""
    return f"""
        mov rax, qword ptr [{buf} + {RB_TAIL_PAGE}]
        shl rax, 4
        add rax, qword ptr [{buf} + {RB_PAGES}]
        mov r11, qword ptr [rax]"""


def reserve(length: int | tuple[str, str]) -> str:
    """Inline ring_buffer_lock_reserve for a ``length``-byte payload (a multiple of 4, at
    most 112) in this CPU's buffer rdi at time rdx. Leaves rax = the payload, r11 = the page,
    r9 = the new commit; rax = 0 if the event was dropped (buffer full, no overwrite).
    Clobbers rcx, r8. An empty page is stamped with the event's time (delta 0); a delta of
    27 bits or more gets a TIME_EXTEND first; a full page is closed with padding and the
    next page taken, dropping the oldest page in overwrite mode.

    A size known only at run time is ``length`` = (size, type_len): two registers (not
    rax, rcx, rdx, r8, r9, r11) holding the event's bytes after its header word and its
    type_len: the payload and payload / 4 for a payload of at most 112 bytes; else 4 + the
    payload and 0, the length word (payload + 4) first in what rax points to, which the
    caller stores. At most BUF_PAGE_SIZE - 4 bytes in all."""
    if isinstance(length, int):
        assert length % 4 == 0 and 0 < length <= 112
        size, type_len, first = length + 4, length // 4, f"mov r9d, {length + 4}"
    else:
        size, type_len = f"{length[0]} + 4", subreg(length[1], 32)
        first = f"lea r9d, [{subreg(length[0], 32)} + 4]"
    return tail_page("rdi") + f"""
        mov rcx, qword ptr [r11 + 8]
        test rcx, rcx
        jnz 21f
        mov qword ptr [r11], rdx
        mov qword ptr [rdi + {RB_WRITE_STAMP}], rdx
    21: mov r8, rdx
        sub r8, qword ptr [rdi + {RB_WRITE_STAMP}]
        jae 22f
        xor r8d, r8d
    22: lea r9, [rcx + {size}]
        cmp r8, {TS_DELTA_MAX}
        jbe 23f
        add r9, 8
    23: cmp r9, {BUF_PAGE_SIZE}
        ja 25f
    30: mov qword ptr [rdi + {RB_WRITE_STAMP}], rdx
        lea rax, [r11 + rcx + 16]
        cmp r8, {TS_DELTA_MAX}
        jbe 24f
        mov ecx, r8d
        shl ecx, 5
        or ecx, {RINGBUF_TYPE_TIME_EXTEND}
        mov dword ptr [rax], ecx
        shr r8, 27
        mov dword ptr [rax + 4], r8d
        add rax, 8
        xor r8d, r8d
    24: shl r8d, 5
        or r8d, {type_len}
        mov dword ptr [rax], r8d
        add rax, 4
        jmp 39f
    25: mov eax, {BUF_PAGE_SIZE}
        sub eax, ecx
        cmp eax, 8
        jb 26f
        sub eax, 4
        mov dword ptr [r11 + rcx + 20], eax
        mov dword ptr [r11 + rcx + 16], {RINGBUF_TYPE_PADDING | 1 << 5}
        mov qword ptr [r11 + 8], {BUF_PAGE_SIZE}
        jmp 27f
    26: cmp eax, 4
        jb 27f
        mov dword ptr [r11 + rcx + 16], {RINGBUF_TYPE_PADDING}
    27: mov rcx, qword ptr [rdi + {RB_TAIL_PAGE}]
        inc rcx
        cmp rcx, qword ptr [rdi + {RB_NR_PAGES}]
        jb 28f
        xor ecx, ecx
    28: cmp rcx, qword ptr [rdi + {RB_HEAD_PAGE}]
        jne 31f
        cmp dword ptr [rdi + {RB_OVERWRITE}], 0
        je 38f
        mov r9, rcx
        inc r9
        cmp r9, qword ptr [rdi + {RB_NR_PAGES}]
        jb 29f
        xor r9d, r9d
    29: mov qword ptr [rdi + {RB_HEAD_PAGE}], r9
        mov qword ptr [rdi + {RB_READ}], 0
        shl r9, 4
        add r9, qword ptr [rdi + {RB_PAGES}]
        mov r9, qword ptr [r9 + {PGT_START}]
        mov rax, rcx
        shl rax, 4
        add rax, qword ptr [rdi + {RB_PAGES}]
        sub r9, qword ptr [rax + {PGT_START}]
        add qword ptr [rdi + {RB_OVERRUN}], r9
        add qword ptr [rdi + {RB_LOST}], r9
    31: mov qword ptr [rdi + {RB_TAIL_PAGE}], rcx
        shl rcx, 4
        add rcx, qword ptr [rdi + {RB_PAGES}]
        mov rax, qword ptr [rdi + {RB_ENTRIES}]
        mov qword ptr [rcx + {PGT_START}], rax
        mov r11, qword ptr [rcx]
        mov qword ptr [r11 + 8], 0
        mov qword ptr [r11], rdx
        xor ecx, ecx
        xor r8d, r8d
        {first}
        jmp 30b
    38: inc qword ptr [rdi + {RB_DROPPED}]
        xor eax, eax
    39:"""


COMMIT = f"""
        mov qword ptr [r11 + 8], r9
        inc qword ptr [rdi + {RB_ENTRIES}]"""


def reserve_test(length: int, buf: str, commit: str, refused: str) -> str:
    """The common case of ``reserve`` tested for buffer ``buf`` at time rdx: the tail page
    already has events and room for this one, and the time delta fits 27 bits; branch-free
    but the one branch to ``refused``, with nothing changed. Leaves r11 = the tail page,
    ``commit`` = its commit, rax = the time delta; clobbers rcx."""
    return tail_page(buf) + f"""
        mov {commit}, qword ptr [r11 + 8]
        mov rax, rdx
        sub rax, qword ptr [{buf} + {RB_WRITE_STAMP}]
        lea rcx, [{commit} - 1]
        cmp rcx, {BUF_PAGE_SIZE - (length + 4)}
        cmc
        sbb rcx, rcx
        or rcx, rax
        cmp rcx, {TS_DELTA_MAX}
        ja {refused}"""


def reserve_take(length: int, buf: str, commit: str) -> str:
    """After ``reserve_test`` passed: the event's header written, rax = its payload,
    ``commit`` = the page's new commit (stored after the payload)."""
    return f"""
        mov qword ptr [{buf} + {RB_WRITE_STAMP}], rdx
        shl eax, 5
        or eax, {length // 4}
        mov dword ptr [r11 + {commit} + 16], eax
        lea rax, [r11 + {commit} + 20]
        add {commit}, {length + 4}"""


def reserve_fast(length: int, slow: str) -> str:
    """The common case of ``reserve`` (this CPU's buffer rdi, time rdx, nest flag taken),
    anything else to ``slow`` with nothing changed: same results as ``reserve`` (rax = the
    payload, r11 = the page, r9 = the new commit); clobbers rcx. The tests run branch-free
    and end in one branch: each branch ends a translation block."""
    return reserve_test(length, "rdi", "r9", slow) + reserve_take(length, "rdi", "r9")
