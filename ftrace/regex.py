"""Filter pattern grammar: filter_parse_regex (trace_events_filter.c), ftrace_match, lib/glob.c."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MatchType(enum.IntEnum):
    """enum regex_type, in the kernel's order."""

    MATCH_FULL = 0
    MATCH_FRONT_ONLY = 1
    MATCH_MIDDLE_ONLY = 2
    MATCH_END_ONLY = 3
    MATCH_GLOB = 4
    MATCH_INDEX = 5


@dataclass(slots=True, frozen=True)
class FtraceGlob:
    """struct ftrace_glob: a classified pattern; `remove` is the leading `!` (clear_filter)."""

    type: MatchType
    search: str
    remove: bool


def filter_parse_regex(buff: str) -> FtraceGlob:
    """Classify one token exactly as the kernel does.

    `!` removes; a leading digit is an index; `*` first = suffix, last = prefix (both =
    substring); any other `*`, or `[`, `?`, `\\` = full glob on the untouched token.
    """
    remove = buff.startswith("!")
    if remove:
        buff = buff[1:]
    if buff[:1].isdigit():
        return FtraceGlob(MatchType.MATCH_INDEX, buff, remove)
    kind = MatchType.MATCH_FULL
    search = buff
    for i, c in enumerate(buff):
        if c == "*":
            if i == 0:
                kind = MatchType.MATCH_END_ONLY
            elif i == len(buff) - 1:
                kind = (MatchType.MATCH_MIDDLE_ONLY if kind == MatchType.MATCH_END_ONLY
                        else MatchType.MATCH_FRONT_ONLY)
                search = buff[:i]
                break
            else:
                return FtraceGlob(MatchType.MATCH_GLOB, buff, remove)
        elif c in "[?\\":
            return FtraceGlob(MatchType.MATCH_GLOB, buff, remove)
    if buff.startswith("*"):
        search = search[1:]
    return FtraceGlob(kind, search, remove)


def ftrace_match(name: str, g: FtraceGlob) -> bool:
    """Does symbol `name` match the classified pattern (every type but MATCH_INDEX)?"""
    if g.type == MatchType.MATCH_FULL:
        return name == g.search
    if g.type == MatchType.MATCH_FRONT_ONLY:
        return name.startswith(g.search)
    if g.type == MatchType.MATCH_MIDDLE_ONLY:
        return g.search in name
    if g.type == MatchType.MATCH_END_ONLY:
        return name.endswith(g.search)
    if g.type == MatchType.MATCH_GLOB:
        return glob_match(g.search, name)
    raise ValueError(f"ftrace_match: {g.type.name} is not a name pattern")


def glob_match(pat: str, s: str) -> bool:
    """lib/glob.c: `*`, `?`, `[a-z]`/`[!a-z]` classes (only `!` negates; `^` is literal),
    `\\` escapes; one level of backtracking to the last `*`; a malformed class is literal."""
    pat += "\0"
    s += "\0"
    p = i = 0
    back_p = back_i = -1
    while True:
        c, d = s[i], pat[p]
        i += 1
        p += 1
        if d == "*":
            if pat[p] == "\0":
                return True
            back_p = p
            i = back_i = i - 1  # allow a zero-length match
            continue
        if d == "?":
            ok = c != "\0"
        elif d == "[" and (cls := _class_match(pat, p, c)) is not None:
            ok, end = cls
            if ok:
                p = end
        else:
            if d == "\\":
                d = pat[p]
                p += 1
            if c == d == "\0":
                return True
            ok = c == d
        if ok:
            continue
        if c == "\0" or back_p < 0:
            return False
        back_i += 1
        p, i = back_p, back_i


def _class_match(pat: str, p: int, c: str) -> tuple[bool, int] | None:
    """Match `c` against the class whose text starts at pat[p], just after `[`.

    Returns (matched, index after the closing `]`), or None when the class is malformed."""
    inverted = pat[p] == "!"
    k = p + inverted
    a = pat[k]
    k += 1
    match = False
    while True:
        if a == "\0":
            return None
        b = a
        if pat[k] == "-" and pat[k + 1] != "]":
            b = pat[k + 1]
            if b == "\0":
                return None
            k += 2
        match |= a <= c <= b
        a = pat[k]
        k += 1
        if a == "]":
            return match != inverted, k
