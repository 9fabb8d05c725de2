"""The filter files (ftrace.c ftrace_regex_open/write/release): set_ftrace_filter and
set_ftrace_notrace of each trace array, and the same machinery for any other hash a layer
exposes (stack_trace_filter). One whitespace-separated token at a time: a pattern (§6.2 of the
grammar, ``!`` removes), ``func:mod:module``, or a command ``func:cmd[:param]``.

Open with O_TRUNC starts from an empty pending hash (and forgets cached ``:mod:`` entries),
without it from a copy of the live one. Patterns change only the pending hash; it replaces
the live hash at release, in one step, as the kernel does. Commands act at once.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.pseudofs import O_TRUNC, Handle, fs_error, wants_write

from . import views
from .func_probe import FTRACE_COMMANDS
from .flags import FTRACE_FL_DISABLED
from .hash import match_records
from .ops import EMPTY_HASH, FtraceOps
from .regex import MatchType, filter_parse_regex, ftrace_match

if TYPE_CHECKING:
    from .instance import FtraceInstance
    from .machine import MachineFtrace

ALL_ENABLED = "#### all functions enabled ####\n"
NONE_DISABLED = "#### no functions disabled ####\n"


class RegexFile:
    """A filter file over one hash: ``get_hash()`` reads the live hash, ``set_hash(new)``
    publishes a new one. ``enable`` is True for a filter, False for a notrace hash;
    ``inst`` gives commands and ``:mod:`` caching their trace array (None: ENODEV);
    ``commands`` False makes every token a plain pattern."""

    mode = 0o644

    def __init__(self, ft: "MachineFtrace", get_hash: Callable[[], frozenset[int]],
                 set_hash: Callable[[frozenset[int]], None], enable: bool,
                 inst: "FtraceInstance | None" = None, commands: bool = True) -> None:
        self.ft, self.get_hash, self.set_hash = ft, get_hash, set_hash
        self.enable, self.inst, self.commands = enable, inst, commands

    def open(self, flags: int) -> Handle:
        return RegexHandle(self, flags)

    # ---- the listing (t_show) ------------------------------------------------------
    def listing(self) -> str:
        live = self.get_hash()
        if not live:
            lines = [ALL_ENABLED if self.enable else NONE_DISABLED]
        else:
            lines = [views.print_rec(self.ft, rec.ip)[0] + "\n"
                     for rec in self.ft.records if rec.ip in live]
        if self.inst is not None and self.commands:
            lines += [f"{func}:mod:{module}\n" for func, module in self._mod_cache()]
            if self.enable:
                name_of = lambda ip: views.print_rec(self.ft, ip)[0]   # noqa: E731
                for probe in self.inst.probes:
                    lines += probe.listing(name_of)
        return "".join(lines)

    def _mod_cache(self) -> list[tuple[str, str]]:
        return self.inst.mod_trace if self.enable else self.inst.mod_notrace

    # ---- one token (ftrace_process_regex) ----------------------------------------
    def process(self, pending: frozenset[int], token: str) -> frozenset[int]:
        """Apply one token; returns the new pending hash. EINVAL on no match."""
        func, sep, rest = token.partition(":") if self.commands else (token, "", "")
        if not sep:
            new, _, found = match_records(self.ft.records, self.ft.arch.lookup, pending, func)
            if not found:
                raise fs_error(errno.EINVAL, detail=f"{func!r} matches no traceable function")
            return new
        cmd, sep2, param = rest.partition(":")
        if cmd == "mod":
            return self._mod(pending, func, param if sep2 else "")
        if cmd not in FTRACE_COMMANDS:
            raise fs_error(errno.EINVAL, detail=f"unknown command {cmd!r}")
        if self.inst is None:
            raise fs_error(errno.ENODEV, detail=f"{cmd}: this file has no trace array")
        FTRACE_COMMANDS[cmd](self.inst, func, cmd, param if sep2 else None, self.enable)
        return pending

    def _mod(self, pending: frozenset[int], func: str, module: str) -> frozenset[int]:
        """ftrace_mod_callback: ``func:mod:module`` applied to the pending hash, or, when
        nothing matched, cached for when that module loads (and listed until then)."""
        if not module:
            raise fs_error(errno.EINVAL, detail="':mod:' needs a module name")
        new, found = match_mod_records(self.ft, pending, func, module)
        return new if found else self._cache_mod(pending, func, module)

    def _cache_mod(self, pending: frozenset[int], func: str, module: str) -> frozenset[int]:
        """cache_mod: remember (func, module), or with ``!func`` forget matching entries."""
        if self.inst is None:
            raise fs_error(errno.ENODEV, detail=":mod: needs a trace array")
        cache = self._mod_cache()
        if func.startswith("!"):
            name = func[1:]
            gone = [e for e in cache if e[1] == module and (name == "*" or e[0] == name)]
            if not gone:
                raise fs_error(errno.EINVAL, detail=f"no cached {func[1:]}:mod:{module}")
            cache[:] = [e for e in cache if e not in gone]
        elif module in self.ft.records.owner.values():
            raise fs_error(errno.EINVAL, detail=f"{func}:mod:{module}: no such function in it")
        else:
            cache.insert(0, (func or "*", module))
        return pending


def match_mod_records(ft: "MachineFtrace", pending: frozenset[int], func: str,
                      module: str) -> tuple[frozenset[int], bool]:
    """match_records with a module glob (ftrace_match_record): ``!`` before the module
    excludes the matching modules (``!*`` or ``!`` alone: core kernel only); an empty or
    ``*`` function means every function of the selected code. Returns (hash, found)."""
    g = filter_parse_regex(func)
    mod_g = filter_parse_regex(module)
    exclude = mod_g.remove
    hits = set()
    for rec in ft.records:
        if rec.flags & FTRACE_FL_DISABLED:
            continue
        modname = ft.records.owner.get(rec.ip)
        if not mod_g.search:                       # blank: every module, or core with `!`
            if (not exclude) == (modname is None):
                continue
        else:
            matches = modname is not None and (
                modname == mod_g.search if mod_g.type == MatchType.MATCH_INDEX
                else ftrace_match(modname, mod_g))
            if matches == exclude:
                continue
        if g.search and g.type != MatchType.MATCH_INDEX:
            sym = ft.arch.lookup(rec.ip)
            if sym is None or not ftrace_match(sym[0], g):
                continue
        hits.add(rec.ip)
    new = pending - hits if g.remove else pending | hits
    return frozenset(new), bool(hits)


def process_cached_mods(inst: "FtraceInstance", module: str) -> None:
    """process_mod_list: a module came; apply the trace array's cached ``:mod:`` entries for
    it to its filter and notrace hashes, and forget them."""
    for enable, cache in ((True, inst.mod_trace), (False, inst.mod_notrace)):
        todo = [func for func, mod in cache if mod == module]
        if not todo:
            continue
        cache[:] = [e for e in cache if e[1] != module]
        new = inst.ops.filter_hash if enable else inst.ops.notrace_hash
        for func in todo:
            new, _ = match_mod_records(inst.ft, new, func, module)
        inst.ft._hash_move_and_update_ops(inst.ops, new, enable)


class RegexHandle(Handle):
    """One open of a filter file: the pending hash and the parser's unfinished token."""

    def __init__(self, node: RegexFile, flags: int) -> None:
        self.node = node
        self.writing = wants_write(flags)
        self.pending = EMPTY_HASH
        self.partial = ""
        self._text: bytes | None = None
        self._dirty = False          # the pending hash must be published at release
        self._wrote = False          # data arrived since the last commit
        if self.writing:
            if flags & O_TRUNC:
                self._dirty = True             # `> file` applies an empty hash at close
                if node.inst is not None and node.commands:
                    node._mod_cache().clear()
            else:
                self.pending = node.get_hash()

    def read(self, size: int, offset: int) -> bytes:
        if self._text is None:
            self._text = self.node.listing().encode()
        return self._text[offset:offset + size]

    def write(self, data: bytes, offset: int) -> int:
        if not self.writing:
            raise fs_error(errno.EBADF)
        text = self.partial + data.decode("utf-8", "replace")
        tokens = text.split()
        self.partial = "" if not text or text[-1].isspace() or not tokens else tokens.pop()
        self._dirty = self._wrote = True
        for token in tokens:
            self.pending = self.node.process(self.pending, token)
        return len(data)

    def flush(self) -> None:
        """Commit what was written so far: FUSE's RELEASE comes after close(2) returned, so
        the FUSE view needs the new hash in force by the flush that follows the writes (a
        flush before any write commits nothing). A failing last token is reported here;
        the kernel's release cannot report it."""
        if not self._wrote:
            return
        self._wrote = False
        if self.partial:
            token, self.partial = self.partial, ""
            self.pending = self.node.process(self.pending, token)
        self._commit()

    def release(self) -> None:
        """ftrace_regex_release: process an unfinished token (its error is dropped, as in
        the kernel), then swap the pending hash in."""
        try:
            self.flush()
        except OSError:
            pass
        self._commit()

    def _commit(self) -> None:
        if self._dirty:
            self._dirty = False
            if self.pending != self.node.get_hash():
                self.node.set_hash(self.pending)


def ops_regex_file(ft: "MachineFtrace", ops: FtraceOps, enable: bool,
                   inst: "FtraceInstance | None" = None, commands: bool = True) -> RegexFile:
    """A filter file over an ops' filter (``enable``) or notrace hash, swapped in the way
    ftrace_set_filter does (one update of the patched sites)."""
    def get_hash() -> frozenset[int]:
        return ops.filter_hash if enable else ops.notrace_hash

    def set_hash(new: frozenset[int]) -> None:
        if ft.ftrace_disabled:
            raise fs_error(errno.ENODEV, detail="ftrace is disabled")
        ft._hash_move_and_update_ops(ops, new, enable)
        if inst is not None:        # the users of the global filter follow (the profiler)
            inst.changed("filter" if enable else "notrace")
    return RegexFile(ft, get_hash, set_hash, enable, inst, commands)
