"""The snapshot buffer of a trace array (kernel/trace/trace.c, CONFIG_TRACER_SNAPSHOT): a second
ring buffer of the same size, swapped with the live one by ``echo 1 > snapshot`` and by the
``snapshot`` filter command, read through the ``snapshot`` files.

The guest writers find a trace array's buffer through one pointer (TR_BUFFERS) to an array
of per-CPU descriptors; a trace array's page holds two such arrays, and a swap of every CPU
is one aligned store of that pointer (update_max_tr), so it may happen from a callback while
other vCPUs trace. A writer that loaded the pointer just before finishes its event in the
buffer that became the snapshot, as in the kernel. A swap of one CPU (ring_buffer_swap_cpu)
exchanges that CPU's descriptors and waits first for writers to leave, as does anything that
frees or clears the snapshot's pages.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from emu import memlayout as L
from emu.pseudofs import fs_error

from .arch.x86.trace_64 import TR_BUFFERS
from .func_probe import kstrtoul
from .ring_buffer import RB_CPU_SIZE, RingBuffer
from .trace_output import merge_by_time

if TYPE_CHECKING:
    from .trace import TraceArray

MAIN_HELP = ("# echo 0 > snapshot : Clears and frees snapshot buffer\n"
             "# echo 1 > snapshot : Allocates snapshot buffer, if not already allocated.\n"
             "#                      Takes a snapshot of the main buffer.\n"
             "# echo 2 > snapshot : Clears snapshot buffer (but does not allocate or free)\n"
             "#                      (Doesn't have to be '2' works with any number that\n"
             "#                       is not a '0' or '1')\n")
PERCPU_HELP = ("# echo 0 > snapshot : Invalid for per_cpu snapshot file.\n"
               "# echo 1 > snapshot : Allocates snapshot buffer, if not already allocated.\n"
               "#                      Takes a snapshot of the main buffer for this cpu.\n"
               "# echo 2 > snapshot : Clears this cpu's snapshot buffer (but does not allocate)\n"
               "#                      (Doesn't have to be '2' works with any number that\n"
               "#                       is not a '0' or '1')\n")


class TraceSnapshot:
    """``tr->max_buffer`` and ``tr->allocated_snapshot`` of one trace array: ``buffer`` is
    the snapshot's ring buffer, None while freed."""

    def __init__(self, tr: "TraceArray", descriptor_areas: tuple[int, int]) -> None:
        self.tr = tr
        self.areas = descriptor_areas
        self.buffer: RingBuffer | None = None
        self.owner: tuple[int, tuple[str, int]] = (0, ("", 0))   # CPU and (comm, pid) that took it
        assert descriptor_areas[1] - descriptor_areas[0] >= L.NCPU * RB_CPU_SIZE

    @property
    def allocated(self) -> bool:
        return self.buffer is not None

    def alloc(self) -> None:
        """tracing_alloc_snapshot_instance: a buffer of the live one's size per CPU (ENOMEM:
        nothing changes). Pages come from the guest allocator, so not from a callback."""
        if self.buffer is not None:
            return
        main = self.tr.ring_buffer()
        area = self.areas[1] if main.descriptors == self.areas[0] else self.areas[0]
        buf = RingBuffer(self.tr.m, area, main.ncpus, main.size(0), main.pages)
        try:
            self._duplicate_size(buf)
        except OSError:
            buf.free()
            raise
        buf.set_overwrite(main.overwrite)
        self.buffer = buf

    def _duplicate_size(self, buf: RingBuffer, cpu: int | None = None) -> None:
        """resize_buffer_duplicate_size: each CPU of ``buf`` the size of the live buffer's."""
        main = self.tr.ring_buffer()
        for c in range(main.ncpus) if cpu is None else [cpu]:
            buf.resize(main.size(c), c)

    def free(self) -> None:
        """free_snapshot, once no writer can still be in the snapshot's pages."""
        if self.buffer is None:
            return
        self.tr.quiesce_writers()
        self.buffer.free()
        self.buffer = None

    def clear(self, cpu: int | None = None) -> None:
        """``echo 2 > snapshot``: empty it (or one CPU of it), allocated or not."""
        if self.buffer is None:
            return
        self.tr.quiesce_writers()
        if cpu is None:
            self.buffer.reset()
        else:
            self.buffer.reset_cpu(cpu)

    def swap(self, cpu: int) -> None:
        """update_max_tr, run on ``cpu``: the live buffer becomes the snapshot and the
        snapshot the live buffer, for every CPU, with one pointer store (callable from a
        callback)."""
        tr, snap = self.tr, self.buffer
        assert snap is not None
        if tr.stop_count:                   # update_max_tr: not while tracing is stopped
            return
        tr.pages.write(tr.va + TR_BUFFERS, struct.pack("<Q", snap.descriptors))
        tr.buffer, self.buffer = snap, tr.buffer
        self._took(cpu)

    def swap_cpu(self, cpu: int) -> None:
        """update_max_tr_single (ring_buffer_swap_cpu): one CPU's buffers trade places;
        both have that CPU's size. Not from a callback: it waits for writers to leave."""
        main, snap = self.tr.ring_buffer(), self.buffer
        assert snap is not None
        self.tr.quiesce_writers()
        pages = main.pages
        a, b = pages.read(main.desc(cpu), RB_CPU_SIZE), pages.read(snap.desc(cpu), RB_CPU_SIZE)
        pages.write(main.desc(cpu), b)
        pages.write(snap.desc(cpu), a)
        for field in ("nr_pages", "tables"):
            ours, theirs = getattr(main, field), getattr(snap, field)
            ours[cpu], theirs[cpu] = theirs[cpu], ours[cpu]
        self._took(cpu)

    def _took(self, cpu: int) -> None:
        """__update_max_tr: the snapshot remembers the CPU and the task running there."""
        task = self.tr.m.kernel.current(cpu)
        pid, comm = self.tr.m.kernel.task_name(task) if task else (0, "")
        self.owner = (cpu, (comm, pid))

    def resize(self, cpu: int | None) -> None:
        """The live buffer was resized: the snapshot follows (__tracing_resize_ring_buffer)."""
        if self.buffer is not None:
            self._duplicate_size(self.buffer, cpu)

    # ---- tracing_snapshot_write / the snapshot files ---------------------------------------
    def write(self, text: str, cpu: int | None) -> None:
        """``echo N > snapshot`` (or per_cpu/cpuN/snapshot): 0 frees (EINVAL per CPU), 1
        allocates if needed and takes a snapshot, any other number clears."""
        tr = self.tr
        tr.expand()                                  # tracing_update_buffers
        val = kstrtoul(text, base=10)
        if val == 0:
            if cpu is not None:
                raise fs_error(errno.EINVAL, detail="a per_cpu snapshot cannot be freed")
            self.free()
        elif val == 1:
            if self.buffer is not None:
                self._duplicate_size(self.buffer, cpu)
            self.alloc()
            if cpu is None:
                self.swap(tr.m.online_cpus()[0])     # the host writes as CPU 0's task
            else:
                self.swap_cpu(cpu)
        else:
            self.clear(cpu)

    def read(self, cpu: int | None) -> str:
        """What ``snapshot`` shows: the snapshot as ``trace`` shows the live buffer, or,
        while it is empty, whether it is allocated and the commands (print_snapshot_help)."""
        tr, buf = self.tr, self.buffer
        cpus = [] if buf is None else list(range(buf.ncpus)) if cpu is None else [cpu]
        tr.tracing.refresh_cmdlines()
        entries = list(merge_by_time((c, buf.events(c)) for c in cpus)) if buf is not None else []
        if not entries:
            state = "allocated" if buf is not None else "freed"
            return (f"# tracer: {tr.tracer.name}\n#\n#\n# * Snapshot is {state} *\n#\n"
                    "# Snapshot commands:\n" + (MAIN_HELP if cpu is None else PERCPU_HELP))
        per = [buf.counts(c) for c in cpus]
        counts = (sum(p[0] for p in per), sum(p[1] for p in per))
        return tr.format(entries, counts, self)
