"""The ring buffer, in the kernel's binary format (kernel/trace/ring_buffer.c): per-CPU lists of
buffer_data_page {u64 time_stamp; local_t commit; data[4080]} holding ring_buffer_event
records {u32 type_len:5, time_delta:27; u32 array[]} with time deltas and TIME_EXTENDs.

The pages live in guest memory and guest code writes them (ftrace/arch/x86/ring_buffer_64.py); this
module is the host side: ``RingBuffer``, which allocates, resets, resizes and reads the
per-CPU buffers a guest writer fills (the format itself, pure, is ring_buffer_format.py).

Guest descriptor of one CPU's buffer (``struct ring_buffer_per_cpu``, RB_* offsets): the page
table (per page {u64 page va; u64 entries written before the page became the tail}), the tail
and head page indexes, the reader's offset in the head page, the last write stamp and the
counters. Only the writer moves the tail; only the host reader consumes; the host runs between
guest instructions, so it always sees a committed state (page->commit is stored last).
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from emu import memlayout as L

from .errors import FtraceError
from .ring_buffer_format import (BUF_PAGE_HDR_SIZE, BUF_PAGE_SIZE, PAGE_SIZE, RB_MISSED_EVENTS,
                                 RB_MISSED_STORED, RINGBUF_TYPE_PADDING, RingBufferEvent,
                                 decode_page, encode_event, nr_pages_for)

if TYPE_CHECKING:
    from emu import Machine


# struct ring_buffer_per_cpu, as the guest writer reads it
RB_PAGES, RB_NR_PAGES, RB_TAIL_PAGE, RB_HEAD_PAGE = 0x00, 0x08, 0x10, 0x18
RB_READ, RB_WRITE_STAMP, RB_ENTRIES, RB_OVERRUN = 0x20, 0x28, 0x30, 0x38
RB_DROPPED, RB_READ_EVENTS, RB_NEST, RB_OVERWRITE = 0x40, 0x48, 0x50, 0x54
RB_LOST = 0x58                          # events the writer overwrote since the reader looked
RB_CPU_SIZE = 0x80
PGT_VA, PGT_START = 0, 8                # one page-table slot: page va, entries before it
PGT_SLOT = 16

_u64 = struct.Struct("<Q")
_u32 = struct.Struct("<I")


@dataclass(slots=True)
class CpuStats:
    """What per_cpu/cpuN/stats prints (ring_buffer_*_cpu)."""

    entries: int
    overrun: int
    commit_overrun: int
    bytes: int
    oldest_event_ts: int
    now_ts: int
    dropped_events: int
    read_events: int


class RingBuffer:
    """The per-CPU buffers of one trace array, in guest memory.

    ``descriptors`` is the guest address of NCPU ring_buffer_per_cpu structs (RB_CPU_SIZE
    apart), which the guest writer finds through its trace_array. Pages come from the
    guest's own page allocator (``alloc_page``/``free_page`` callables returning direct-map
    addresses), page tables from ``alloc_table``."""

    def __init__(self, machine: "Machine", descriptors: int, ncpus: int, size_bytes: int,
                 pages: "GuestPages") -> None:
        self.m = machine
        self.descriptors = descriptors
        self.ncpus = ncpus
        self.pages = pages
        self.nr_pages = [0] * ncpus
        self.tables = [0] * ncpus
        self.overwrite = True
        for cpu in range(ncpus):
            self._alloc_cpu(cpu, nr_pages_for(size_bytes))

    # ---- guest memory -----------------------------------------------------------
    def desc(self, cpu: int) -> int:
        return self.descriptors + cpu * RB_CPU_SIZE

    def _get(self, cpu: int, field: int) -> int:
        return _u64.unpack(self.pages.read(self.desc(cpu) + field, 8))[0]

    def _set(self, cpu: int, field: int, value: int) -> None:
        self.pages.write(self.desc(cpu) + field, _u64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def page_va(self, cpu: int, index: int) -> int:
        return _u64.unpack(self.pages.read(self.tables[cpu] + index * PGT_SLOT, 8))[0]

    def _page_start(self, cpu: int, index: int) -> int:
        return _u64.unpack(self.pages.read(self.tables[cpu] + index * PGT_SLOT + PGT_START, 8))[0]

    def _set_page_start(self, cpu: int, index: int, value: int) -> None:
        self.pages.write(self.tables[cpu] + index * PGT_SLOT + PGT_START, _u64.pack(value))

    def read_page(self, cpu: int, index: int) -> bytes:
        """The raw 4096 bytes of page ``index`` of ``cpu``'s buffer."""
        return self.pages.read(self.page_va(cpu, index), PAGE_SIZE)

    def _alloc_cpu(self, cpu: int, nr: int) -> None:
        """Give ``cpu`` a fresh empty buffer of ``nr`` pages (its counters zero); the old
        pages, if any, are freed only once the new ones are all there."""
        vas = self.pages.alloc_pages(nr)
        table = self.pages.alloc_table(nr * PGT_SLOT)
        self.pages.write(table, b"".join(_u64.pack(va) + bytes(8) for va in vas))
        for va in vas:
            self.pages.write(va, bytes(BUF_PAGE_HDR_SIZE))
        old = [(self.page_va(cpu, i)) for i in range(self.nr_pages[cpu])], self.tables[cpu]
        desc = bytearray(RB_CPU_SIZE)
        struct.pack_into("<QQ", desc, RB_PAGES, table, nr)
        struct.pack_into("<I", desc, RB_OVERWRITE, int(self.overwrite))
        self.pages.write(self.desc(cpu), bytes(desc))
        self.nr_pages[cpu], self.tables[cpu] = nr, table
        for va in old[0]:
            self.pages.free_page(va)
        if old[1]:
            self.pages.free_table(old[1])

    def _free_cpu(self, cpu: int) -> None:
        for i in range(self.nr_pages[cpu]):
            self.pages.free_page(self.page_va(cpu, i))
        self.pages.free_table(self.tables[cpu])
        self.nr_pages[cpu] = self.tables[cpu] = 0

    # ---- the kernel's operations --------------------------------------------------
    def size(self, cpu: int) -> int:
        """ring_buffer_size: bytes of page data per CPU."""
        return self.nr_pages[cpu] * BUF_PAGE_SIZE

    def resize(self, size_bytes: int, cpu: int | None = None) -> None:
        """ring_buffer_resize: one or every CPU to the pages ``size_bytes`` needs, keeping
        the contents as the kernel does: pages are added after the newest data; a shrink
        takes the empty pages first, then the oldest data (counted as overrun and as lost
        events). ENOMEM leaves a CPU as it was. Call with no writer in the buffer."""
        nr = nr_pages_for(size_bytes)
        for c in range(self.ncpus) if cpu is None else [cpu]:
            if self.nr_pages[c] != nr:
                self._resize_cpu(c, nr)

    def _resize_cpu(self, cpu: int, nr: int) -> None:
        old_nr, tail, head, read = self._positions(cpu)
        order = [(head + i) % old_nr for i in range((tail - head) % old_nr + 1)]
        spare = [(tail + 1 + i) % old_nr for i in range(old_nr - len(order))]
        slots = [(self.page_va(cpu, i), self._page_start(cpu, i)) for i in range(old_nr)]
        entries = self._get(cpu, RB_ENTRIES)
        fresh = self.pages.alloc_pages(max(0, nr - old_nr))
        dropped, lost = [slots[i][0] for i in spare[max(0, nr - len(order)):]], 0
        while len(order) > nr:                  # the oldest data goes
            gone = order.pop(0)
            lost += (slots[order[0]][1] if order else entries) - slots[gone][1]
            dropped.append(slots[gone][0])
            read = 0
        keep = [slots[i] for i in order] + [(slots[i][0], entries) for i in spare][:nr - len(order)]
        keep += [(va, entries) for va in fresh]
        for va, _start in keep[len(order):]:
            self.pages.write(va, bytes(BUF_PAGE_HDR_SIZE))
        table = self.pages.alloc_table(nr * PGT_SLOT)
        self.pages.write(table, b"".join(_u64.pack(va) + _u64.pack(start) for va, start in keep))
        old_table = self.tables[cpu]
        self.pages.write(self.desc(cpu), struct.pack("<5Q", table, nr, len(order) - 1, 0, read))
        self.nr_pages[cpu], self.tables[cpu] = nr, table
        if lost:
            self._set(cpu, RB_OVERRUN, self._get(cpu, RB_OVERRUN) + lost)
            self._set(cpu, RB_LOST, self._get(cpu, RB_LOST) + lost)
        for va in dropped:
            self.pages.free_page(va)
        self.pages.free_table(old_table)

    def set_overwrite(self, on: bool) -> None:
        """The ``overwrite`` option: drop the oldest page when full (else drop new events)."""
        self.overwrite = on
        for c in range(self.ncpus):
            self.pages.write(self.desc(c) + RB_OVERWRITE, _u32.pack(int(on)))

    def reset_cpu(self, cpu: int) -> None:
        """ring_buffer_reset_cpu: empty the buffer and zero its counters."""
        table, nr = self.tables[cpu], self.nr_pages[cpu]
        self.pages.write(self.desc(cpu), struct.pack("<QQ", table, nr) + bytes(RB_NEST - RB_TAIL_PAGE))
        self.pages.write(self.desc(cpu) + RB_LOST, bytes(8))
        for i in range(nr):
            self._set_page_start(cpu, i, 0)
        # An empty page: the writer stamps it with its first event's time.
        self.pages.write(self.page_va(cpu, 0), bytes(BUF_PAGE_HDR_SIZE))

    def reset(self) -> None:
        """ring_buffer_reset: every CPU."""
        for c in range(self.ncpus):
            self.reset_cpu(c)

    def free(self) -> None:
        for c in range(self.ncpus):
            self._free_cpu(c)

    # ---- reading --------------------------------------------------------------------
    def _positions(self, cpu: int) -> tuple[int, int, int, int]:
        raw = self.pages.read(self.desc(cpu), RB_WRITE_STAMP)
        _pages, nr, tail, head, read = struct.unpack("<5Q", raw)
        return nr, tail, head, read

    def iter_pages(self, cpu: int) -> Iterator[tuple[int, bytes, int]]:
        """(page index, page bytes, start offset) from the oldest unread page to the tail."""
        nr, tail, head, read = self._positions(cpu)
        if not nr:
            return
        i, start = head, read
        while True:
            yield i, self.read_page(cpu, i), start
            if i == tail:
                return
            i, start = (i + 1) % nr, 0

    def events(self, cpu: int) -> Iterator[RingBufferEvent]:
        """Unread events of ``cpu``, oldest first, without consuming them (the ``trace`` file)."""
        for _i, page, start in self.iter_pages(cpu):
            yield from decode_page(page, start).events

    def consume(self, cpu: int, count: int) -> None:
        """Mark the ``count`` oldest unread events of ``cpu`` as read (trace_pipe)."""
        nr, tail, head, read = self._positions(cpu)
        while count > 0 and nr:
            page = decode_page(self.read_page(cpu, head), read)
            n = min(count, len(page.events))
            if n:
                read = page.events[n - 1].end
                self._set_page_start(cpu, head, self._page_start(cpu, head) + n)
                self._set(cpu, RB_READ_EVENTS, self._get(cpu, RB_READ_EVENTS) + n)
                count -= n
            if read >= page.commit and head != tail:
                head, read = (head + 1) % nr, 0
            elif not n:
                break
        self._set(cpu, RB_HEAD_PAGE, head)
        self._set(cpu, RB_READ, read)

    def read_full_page(self, cpu: int, full: bool = False) -> bytes | None:
        """ring_buffer_read_page for trace_pipe_raw: the oldest unread data as one
        buffer_data_page (its events consumed), or None when nothing is unread. With
        ``full``, only a page the writer has left is handed out. Events the writer
        overwrote since the last read are flagged in commit (RB_MISSED_EVENTS/STORED)."""
        nr, tail, head, read = self._positions(cpu)
        if not nr:
            return None
        page = decode_page(self.read_page(cpu, head), read)
        while not page.events and head != tail:
            # The head page was read to its end (or its padding) while it was the tail; the
            # writer has moved on since: the reader moves on too (rb_get_reader_page).
            head, read = (head + 1) % nr, 0
            self._set(cpu, RB_HEAD_PAGE, head)
            self._set(cpu, RB_READ, 0)
            page = decode_page(self.read_page(cpu, head), read)
        if not page.events or (full and head == tail):
            return None
        raw = bytearray(PAGE_SIZE)
        # The unread part becomes a page of its own; its time_stamp is that of the first
        # event, which then has a zero delta (the kernel copies events one by one likewise).
        first = page.events[0]
        body = bytearray()
        prev = first.ts
        for ev in page.events:
            body += encode_event(ev.data, ev.ts - prev)
            prev = ev.ts
        commit = len(body)
        raw[BUF_PAGE_HDR_SIZE:BUF_PAGE_HDR_SIZE + commit] = body
        lost = self._get(cpu, RB_LOST)
        flags = 0
        if lost:
            flags = RB_MISSED_EVENTS
            if commit + 8 <= BUF_PAGE_SIZE:
                struct.pack_into("<Q", raw, BUF_PAGE_HDR_SIZE + commit, lost)
                flags |= RB_MISSED_STORED
            self._set(cpu, RB_LOST, 0)
        struct.pack_into("<QQ", raw, 0, first.ts, commit | flags)
        self.consume(cpu, len(page.events))
        return bytes(raw)

    # ---- host writers -----------------------------------------------------------------
    def write_event(self, cpu: int, payload: bytes, ts: int) -> bool:
        """Write one event from the host (trace_marker, stack traces of filter commands)
        with the guest writer's rules: an empty page takes the event's time, a big delta
        a TIME_EXTEND, a full page padding and the next page (the oldest dropped in
        overwrite mode, else the event). Call only between guest instructions with the
        CPU's nest flag clear. False if the event was dropped."""
        d = self.desc(cpu)
        raw = self.pages.read(d, RB_CPU_SIZE)
        _pgs, nr, tail, head, _read, stamp = struct.unpack_from("<6Q", raw, 0)
        page = self.page_va(cpu, tail)
        commit = _u64.unpack(self.pages.read(page + 8, 8))[0]
        if commit == 0:
            self.pages.write(page, _u64.pack(ts))
            stamp = ts
        ev = encode_event(payload, max(0, ts - stamp))
        if commit + len(ev) > BUF_PAGE_SIZE:
            rem = BUF_PAGE_SIZE - commit
            if rem >= 8:
                self.pages.write(page + BUF_PAGE_HDR_SIZE + commit,
                                 _u32.pack(RINGBUF_TYPE_PADDING | 1 << 5) + _u32.pack(rem - 4))
                self.pages.write(page + 8, _u64.pack(BUF_PAGE_SIZE))
            nxt = (tail + 1) % nr
            if nxt == head:
                if not self.overwrite:
                    self._set(cpu, RB_DROPPED, self._get(cpu, RB_DROPPED) + 1)
                    return False
                lost = self._page_start(cpu, (nxt + 1) % nr) - self._page_start(cpu, nxt)
                self._set(cpu, RB_HEAD_PAGE, (nxt + 1) % nr)
                self._set(cpu, RB_READ, 0)
                self._set(cpu, RB_OVERRUN, self._get(cpu, RB_OVERRUN) + lost)
                self._set(cpu, RB_LOST, self._get(cpu, RB_LOST) + lost)
            self._set(cpu, RB_TAIL_PAGE, nxt)
            self._set_page_start(cpu, nxt, self._get(cpu, RB_ENTRIES))
            page, commit = self.page_va(cpu, nxt), 0
            self.pages.write(page, struct.pack("<QQ", ts, 0))
            ev = encode_event(payload, 0)
        self.pages.write(page + BUF_PAGE_HDR_SIZE + commit, ev)
        self._set(cpu, RB_WRITE_STAMP, ts)
        self.pages.write(page + 8, _u64.pack(commit + len(ev)))
        self._set(cpu, RB_ENTRIES, self._get(cpu, RB_ENTRIES) + 1)
        return True

    def take_lost(self, cpu: int) -> int:
        """Events overwritten since the last call (the ``[LOST n EVENTS]`` lines)."""
        lost = self._get(cpu, RB_LOST)
        if lost:
            self._set(cpu, RB_LOST, 0)
        return lost

    def stats(self, cpu: int, now: int) -> CpuStats:
        """The per-CPU counters: entries = written - overrun - read (ring_buffer_entries_cpu)."""
        raw = self.pages.read(self.desc(cpu), RB_CPU_SIZE)
        entries, overrun, dropped, read = struct.unpack_from("<4Q", raw, RB_ENTRIES)
        nbytes, oldest = 0, 0
        for _i, page, start in self.iter_pages(cpu):
            dp = decode_page(page, start)
            nbytes += dp.commit - start
            if dp.events and not oldest:
                oldest = dp.events[0].ts
        return CpuStats(entries - overrun - read, overrun, 0, nbytes, oldest, now, dropped, read)

    def counts(self, cpu: int) -> tuple[int, int]:
        """(entries in the buffer, entries written) as trace's header counts them
        (get_total_entries_cpu: written = in buffer + overrun)."""
        entries, overrun, _dropped, read = struct.unpack(
            "<4Q", self.pages.read(self.desc(cpu) + RB_ENTRIES, 32))
        in_buffer = entries - overrun - read
        return in_buffer, in_buffer + overrun


class GuestPages:
    """Guest memory for buffers: data pages from the guest kernel's own page allocator
    (``kalloc``, called when no vCPU holds its lock), small tables from execmem's data
    area. Reads and writes go straight to RAM through the direct map."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self._kmem_lock = machine.symbol_address("kmem") if machine.image.has_symbol("kmem") else 0

    def _pa(self, va: int) -> int:
        if va >= L.DIRECT_MAP_VA and va < L.DIRECT_MAP_VA + self.m.ram_size:
            return va - L.DIRECT_MAP_VA
        if L.EXECMEM_VA <= va < L.EXECMEM_VA + L.EXECMEM_SIZE:
            return va - L.EXECMEM_VA + L.EXECMEM_PA
        raise ValueError(f"0x{va:x} is not buffer memory")

    def read(self, va: int, n: int) -> bytes:
        pa = self._pa(va)
        return bytes(self.m.ram[pa:pa + n])

    def write(self, va: int, data: bytes) -> None:
        pa = self._pa(va)
        self.m.ram[pa:pa + len(data)] = data

    def _lock_free(self) -> bool:
        return not self._kmem_lock or not _u32.unpack(self.m.read(self._kmem_lock, 4))[0]

    def alloc_pages(self, n: int) -> list[int]:
        """``n`` zeroed pages from the guest's allocator; ENOMEM (nothing kept) if the guest
        runs out."""
        if not self._lock_free():
            self.m.run_until(self._lock_free, 100)
        out: list[int] = []
        for _ in range(n):
            va = self.m.call("kalloc")
            if not va:
                for p in out:
                    self.free_page(p)
                raise FtraceError(errno.ENOMEM, f"the guest has no memory for {n} ring-buffer pages")
            out.append(va)
        return out

    def free_page(self, va: int) -> None:
        if not self._lock_free():
            self.m.run_until(self._lock_free, 100)
        self.m.call("kfree", va)

    def alloc_table(self, size: int) -> int:
        return self.m.execmem.alloc(size, align=64, executable=False)

    def free_table(self, va: int) -> None:
        self.m.execmem.free(va)
