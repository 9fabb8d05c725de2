"""Dynamic debug (the kernel's lib/dynamic_debug.c): ``pr_debug`` callsites that the user
switches on and off through /sys/kernel/debug/dynamic_debug/control.

The callsites are the host's half of the kernel: a layer registers the ``pr_debug`` lines it
prints (file, line, function, format, as the kernel's source has them) and asks
``m.dynamic_debug.pr_debug(site, text)``, which logs only while the site has the ``p`` flag
and puts the ``m``/``f``/``l``/``t`` prefixes in front, as ``__dynamic_emit_prefix`` does.
The control file reads and parses as the kernel's: ``file``/``func``/``module``/``format``/
``line`` match-specs with globs, ``+``/``-``/``=`` flag changes, queries split at ``;`` and
newlines, EINVAL for a malformed query (the other queries still apply).
"""
from __future__ import annotations

import errno
import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .pseudofs import fs_error

if TYPE_CHECKING:
    from .machine import Machine

CONTROL = "/sys/kernel/debug/dynamic_debug/control"
HEADER = "# filename:lineno [module]function flags format\n"
FLAG_CHARS = "pmflt"           # opt_array's order: print, module, function, line, thread id
LOGLEVEL_DEBUG = 7
USER_BUF_PAGE = 4096
MAXWORDS = 9


@dataclass(eq=False)
class Callsite:
    """One ``pr_debug`` of the kernel (a ``struct _ddebug``)."""
    modname: str
    filename: str
    function: str
    lineno: int
    format: str
    flags: str = ""             # a subset of FLAG_CHARS

    def line(self) -> str:
        """The control file's line (ddebug_proc_show; seq_escape_str with ESCAPE_SPACE)."""
        fmt = self.format
        for ch, esc in (("\\", "\\\\"), ("\t", "\\t"), ("\r", "\\r"), ("\n", "\\n"), ('"', '\\"')):
            fmt = fmt.replace(ch, esc)
        return (f"{self.filename}:{self.lineno} [{self.modname}]{self.function} "
                f"={self.flags or '_'} \"{fmt}\"\n")


class DynamicDebug:
    """The machine's callsites (``m.dynamic_debug``) and their control file."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self.sites: list[Callsite] = []
        machine.fs.register_text(CONTROL, self.control_text, self.control_write, mode=0o644)
        machine.snapshot_participants.append(self)

    def add(self, site: Callsite) -> Callsite:
        """Register a callsite (ddebug_add_module); returns it for ``pr_debug``."""
        self.sites.append(site)
        return site

    def pr_debug(self, site: Callsite, text: str, pid: int | None = None) -> None:
        """Log ``text`` at KERN_DEBUG if the site prints; ``pid`` is the task for ``t``."""
        if "p" not in site.flags:
            return
        prefix = ""
        if "t" in site.flags:
            prefix += "<intr> " if pid is None else f"[{pid}] "
        tail = "".join(f"{v}:" for flag, v in (("m", site.modname), ("f", site.function),
                                               ("l", site.lineno)) if flag in site.flags)
        self.m.printk(prefix + (tail + " " if tail else "") + text, LOGLEVEL_DEBUG)

    # ---- the control file ---------------------------------------------------------------
    def control_text(self) -> str:
        return HEADER + "".join(s.line() for s in self.sites)

    def control_write(self, text: str) -> None:
        """ddebug_proc_write: every query applied; the last error (EINVAL) is the write's."""
        if len(text.encode()) > USER_BUF_PAGE - 1:
            raise fs_error(errno.E2BIG, detail=f"expected <{USER_BUF_PAGE} bytes into control")
        error = None
        for query in text.replace(";", "\n").split("\n"):
            query = query.strip()
            if not query or query.startswith("#"):
                continue
            try:
                self.exec_query(query)
            except ValueError as e:
                error = e
        if error is not None:
            raise fs_error(errno.EINVAL, detail=str(error))

    def exec_query(self, query: str) -> int:
        """One query (``match-spec... flags``); the number of callsites it matched."""
        words = _split_words(query)
        if not words:
            raise ValueError("empty query")
        if len(words) > MAXWORDS:
            raise ValueError(f"too many words, legal max <={MAXWORDS}")
        op, chars = _parse_flags(words[-1])         # the flags first, as the kernel
        match = _parse_spec(words[:-1])
        found = 0
        for site in self.sites:
            if not _matches(match, site):
                continue
            found += 1
            if op == "=":
                site.flags = chars
            elif op == "+":
                site.flags = "".join(c for c in FLAG_CHARS if c in site.flags or c in chars)
            else:
                site.flags = "".join(c for c in site.flags if c not in chars)
        return found

    # ---- snapshots ------------------------------------------------------------------------
    def snapshot_state(self) -> list[str]:
        return [s.flags for s in self.sites]

    def restore_state(self, st: list[str]) -> None:
        for site, flags in zip(self.sites, st):
            site.flags = flags


def _split_words(query: str) -> list[str]:
    """ddebug_tokenize: whitespace-separated words, quoted ones whole, '#' starts a comment."""
    words, i = [], 0
    while i < len(query):
        if query[i].isspace():
            i += 1
            continue
        if query[i] == "#":
            break
        if query[i] in "\"'":
            end = query.find(query[i], i + 1)
            if end < 0:
                raise ValueError(f"unclosed quote: {query[i + 1:]}")
            words.append(query[i + 1:end])
            i = end + 1
        else:
            end = i
            while end < len(query) and not query[end].isspace():
                end += 1
            words.append(query[i:end])
            i = end
    return words


def _parse_lines(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    try:
        lo = int(first) if first else 0
        hi = (int(last) if last else 1 << 32) if sep else lo
    except ValueError:
        raise ValueError(f"bad line-number: {text}") from None
    if hi < lo:
        raise ValueError(f"last-line:{hi} < 1st-line:{lo}")
    return lo, hi


def _parse_spec(words: list[str]) -> dict:
    """ddebug_parse_query: (keyword, value) pairs, each keyword at most once."""
    if len(words) % 2:
        raise ValueError("expecting pairs of match-spec <value>")
    spec: dict = {}

    def put(key: str, value) -> None:
        if key in spec:
            raise ValueError(f"match-spec:{key} used twice")
        spec[key] = value
    for key, arg in zip(words[::2], words[1::2]):
        if key == "file":
            name, colon, rest = arg.partition(":")
            put("file", name)
            if colon and rest and (rest[0].isalpha() or rest[0] in "*?"):
                put("func", rest)
            elif colon:
                put("line", _parse_lines(rest))
        elif key in ("func", "module"):
            put(key, arg)
        elif key == "format":
            put(key, arg.encode().decode("unicode_escape"))
        elif key == "line":
            put(key, _parse_lines(arg))
        else:
            raise ValueError(f'unknown keyword "{key}"')
    return spec


def _parse_flags(word: str) -> tuple[str, str]:
    if not word or word[0] not in "+-=":
        raise ValueError(f"bad flag-op {word[:1]}, at start of {word}")
    chars = word[1:].replace("_", "")
    bad = [c for c in chars if c not in FLAG_CHARS]
    if bad:
        raise ValueError(f"unknown flag '{bad[0]}'")
    return word[0], chars


def _matches(spec: dict, site: Callsite) -> bool:
    """ddebug_change's tests: module and function globs, the file against its full, base or
    trimmed name, a format substring ('^' anchors it), a line range (0: don't care)."""
    if "module" in spec and not fnmatch.fnmatchcase(site.modname, spec["module"]):
        return False
    if "file" in spec:
        pat, base = spec["file"], site.filename.rsplit("/", 1)[-1]
        if not (fnmatch.fnmatchcase(site.filename, pat) or fnmatch.fnmatchcase(base, pat)):
            return False
    if "func" in spec and not fnmatch.fnmatchcase(site.function, spec["func"]):
        return False
    if "format" in spec:
        fmt = spec["format"]
        if fmt.startswith("^") and not site.format.startswith(fmt[1:]):
            return False
        if not fmt.startswith("^") and fmt not in site.format:
            return False
    if "line" in spec:
        lo, hi = spec["line"]
        if (lo and site.lineno < lo) or (hi and site.lineno > hi):
            return False
    return True
