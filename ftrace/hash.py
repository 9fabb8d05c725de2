"""Building a new filter/notrace hash from a pattern or from ips (ftrace.c match_records & co)."""

from __future__ import annotations

import errno

from ftrace.errors import FtraceError
from ftrace.flags import FTRACE_FL_DISABLED, FtraceOpsFlags
from ftrace.ops import FtraceOps
from ftrace.records import FTRACE_MCOUNT_MAX_OFFSET, FtraceRecords, SymbolLookup
from ftrace.regex import FtraceGlob, MatchType, ftrace_match, filter_parse_regex


def kstrtoul(text: str) -> int | None:
    """kstrtoul(text, 0): 0x: hex, leading 0: octal, else decimal; the whole string must be
    the number (one trailing newline allowed), else None ("3abc" is no index)."""
    digits, base = text.removesuffix("\n"), 10
    if digits[:2] in ("0x", "0X"):
        digits, base = digits[2:], 16
    elif digits.startswith("0") and len(digits) > 1:
        digits, base = digits[1:], 8
    if not digits or any(c not in "0123456789abcdef"[:base] for c in digits.lower()):
        return None
    return int(digits, base)


def match_records(records: FtraceRecords, lookup: SymbolLookup, hash_: frozenset[int],
                  pattern: str, module: str | None = None) -> tuple[frozenset[int], bool, bool]:
    """Apply one pattern to `hash_`: returns (new hash, remove flag, found).

    Matching records are added (or removed after `!`); adding a present ip or removing an
    absent one is a no-op but still counts as found. With `module`, only that module's
    records match (`:mod:`). DISABLED records and invalid sites
    never match by name; an index (1-based line of available_filter_functions) counts them.
    """
    g = filter_parse_regex(pattern)
    if g.type == MatchType.MATCH_INDEX:
        number = kstrtoul(g.search)
        if number is None:
            raise FtraceError(errno.EINVAL, f"{pattern!r}: an index must be a number")
        index = number - 1
        if not 0 <= index < len(records):
            return hash_, g.remove, False
        hits = {records[index].ip}
    else:
        hits = {rec.ip for rec in records if _match_record(rec.ip, rec.flags, lookup, g)
                and (module is None or records.owner.get(rec.ip) == module)}
    new = hash_ - hits if g.remove else hash_ | hits
    return frozenset(new), g.remove, bool(hits)


def _match_record(ip: int, flags: int, lookup: SymbolLookup, g: FtraceGlob) -> bool:
    if flags & FTRACE_FL_DISABLED:
        return False
    sym = lookup(ip)
    return sym is not None and sym[1] <= FTRACE_MCOUNT_MAX_OFFSET and ftrace_match(sym[0], g)


def split_mod_command(ops: FtraceOps, buf: str, records: FtraceRecords) -> tuple[str, str | None]:
    """ftrace_set_regex's `func:mod:module` split; returns (function part, module or None).

    Only `mod` is accepted, and only for an ops whose `private` is a trace_array (we take the
    TRACE_ARRAY flag as the proof; the kernel trusts any non-NULL private). The module must be
    loaded: a pattern for a module not loaded yet is not cached, it fails with EINVAL.
    """
    func, sep, rest = buf.partition(":")
    if not sep:
        return func, None
    if not (ops.flags & FtraceOpsFlags.TRACE_ARRAY and ops.private is not None):
        raise FtraceError(errno.EINVAL, f"{buf!r}: ':' needs an ops whose private is a trace_array")
    command, _, module = rest.partition(":")
    if command != "mod":
        raise FtraceError(errno.EINVAL, f"{buf!r}: the only command of this API is 'mod'")
    if module not in records.owner.values():
        raise FtraceError(errno.EINVAL, f"{buf!r}: no module {module!r} is loaded")
    return func, module


def ftrace_match_addr(records: FtraceRecords, lookup: SymbolLookup, hash_: frozenset[int],
                      ips: list[int], remove: bool) -> frozenset[int]:
    """ftrace_match_addr: map each ip with ftrace_location and add or remove it.

    EINVAL if an ip is not a site (nor sym+0 of one); ENOENT when removing an absent ip.
    """
    new = set(hash_)
    for ip in ips:
        loc = records.ftrace_location(ip, lookup)
        if not loc:
            raise FtraceError(errno.EINVAL, f"{ip:#x} is not an ftrace call site")
        if remove:
            if loc not in new:
                raise FtraceError(errno.ENOENT, f"{loc:#x} is not in the filter")
            new.discard(loc)
        else:
            new.add(loc)
    return frozenset(new)
