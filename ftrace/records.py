"""dyn_ftrace records: one per `call __fentry__` site, sorted by ip, found by binary search."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ftrace.flags import FTRACE_FL_DISABLED, FTRACE_REF_MAX, MCOUNT_INSN_SIZE

# kallsyms lookup: addr -> (name, offset, size), or None when no symbol covers addr.
SymbolLookup = Callable[[int], "tuple[str, int, int] | None"]

ENTRIES_PER_PAGE = 4096 // 16  # PAGE_SIZE / sizeof(struct dyn_ftrace)
MAX_PAGE_ORDER = 10

# ENDBR_INSN_SIZE: a site further than this into its symbol belongs to a discarded weak function.
FTRACE_MCOUNT_MAX_OFFSET = 4


@dataclass(slots=True, eq=False)
class DynFtrace:
    """struct dyn_ftrace: the site's ip and flags; the low 19 bits of flags count attached ops."""

    ip: int
    flags: int = 0

    @property
    def count(self) -> int:
        """ftrace_rec_count()."""
        return self.flags & FTRACE_REF_MAX


class FtraceRecords:
    """All records in ip order (the kernel's ftrace_pages, flattened into one list)."""

    def __init__(self, call_sites: Iterable[int]) -> None:
        # ftrace_process_locs: sort, and skip zeroed (discarded) entries.
        self.recs = [DynFtrace(ip) for ip in sorted(set(call_sites)) if ip]
        self._ips = [rec.ip for rec in self.recs]
        self.owner: dict[int, str] = {}     # ip -> module name, for sites of loaded modules

    def add_module(self, module: str, call_sites: Iterable[int]) -> list[DynFtrace]:
        """ftrace_process_locs for a module: new records for its sites, kept in ip order."""
        new = [DynFtrace(ip) for ip in sorted(set(call_sites)) if ip and ip not in self.owner]
        self.recs = sorted(self.recs + new, key=lambda r: r.ip)
        self._ips = [rec.ip for rec in self.recs]
        self.owner.update((rec.ip, module) for rec in new)
        return new

    def state(self) -> tuple:
        return [(rec.ip, rec.flags) for rec in self.recs], dict(self.owner)

    def set_state(self, st: tuple) -> None:
        self.recs = [DynFtrace(ip, flags) for ip, flags in st[0]]
        self._ips = [rec.ip for rec in self.recs]
        self.owner = dict(st[1])

    def remove_module(self, module: str) -> list[DynFtrace]:
        """ftrace_release_mod: drop the module's records; returns them."""
        gone = [rec for rec in self.recs if self.owner.get(rec.ip) == module]
        self.recs = [rec for rec in self.recs if self.owner.get(rec.ip) != module]
        self._ips = [rec.ip for rec in self.recs]
        for rec in gone:
            del self.owner[rec.ip]
        return gone

    def __iter__(self) -> Iterator[DynFtrace]:
        return iter(self.recs)

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, index: int) -> DynFtrace:
        return self.recs[index]

    def lookup_rec(self, start: int, end: int) -> DynFtrace | None:
        """The first record whose 5-byte call overlaps [start, end]."""
        i = bisect.bisect_right(self._ips, start - MCOUNT_INSN_SIZE)
        if i < len(self.recs) and self.recs[i].ip <= end:
            return self.recs[i]
        return None

    def ftrace_location(self, addr: int, lookup: SymbolLookup) -> int:
        """The site ip for `addr`, or 0. As the kernel: any byte of a site's call maps to the
        site, and `sym+0` maps to the first site inside [sym, sym+size) (skipping an endbr64)."""
        rec = self.lookup_rec(addr, addr)
        if rec is None:
            sym = lookup(addr)
            if sym is None or sym[1] != 0:
                return 0
            rec = self.lookup_rec(addr, addr + sym[2] - 1)
        return rec.ip if rec else 0

    def mark_invalid(self, lookup: SymbolLookup) -> None:
        """test_for_valid_rec: sites of discarded weak functions are DISABLED for good."""
        for rec in self.recs:
            if not valid_site(rec.ip, lookup):
                rec.flags |= FTRACE_FL_DISABLED


def valid_site(ip: int, lookup: SymbolLookup) -> bool:
    """A site is a function entry: its symbol offset is at most FTRACE_MCOUNT_MAX_OFFSET."""
    sym = lookup(ip)
    return sym is not None and sym[1] <= FTRACE_MCOUNT_MAX_OFFSET


def ftrace_pages_and_groups(count: int) -> tuple[int, int]:
    """ftrace_allocate_pages: groups of 2^order pages, order = fls(pages needed) - 1."""
    pages = groups = 0
    while count > 0:
        order = min((-(-count // ENTRIES_PER_PAGE)).bit_length() - 1, MAX_PAGE_ORDER)
        pages += 1 << order
        groups += 1
        count -= ENTRIES_PER_PAGE << order
    return pages, groups
