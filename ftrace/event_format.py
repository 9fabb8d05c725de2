"""Trace event ``format`` files (events/<system>/<event>/format), parsed and applied: the
self-description a trace.dat carries, so a recording decodes by its own formats (what
libtraceevent does for trace-cmd), whoever wrote it."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

_FIELD = re.compile(r"\tfield:(?P<decl>[^;]*);\toffset:(?P<offset>\d+);\tsize:(?P<size>\d+);"
                    r"(?:\tsigned:(?P<signed>\d+);)?")
_INT = {1: "b", 2: "h", 4: "i", 8: "q"}


@dataclass(frozen=True, slots=True)
class FormatField:
    """One ``field:`` line: C declaration, name, offset, size, signedness."""

    decl: str
    name: str
    offset: int
    size: int
    signed: bool

    @property
    def is_string(self) -> bool:
        return self.decl.startswith(("char ", "const char ", "__data_loc char"))

    def value(self, data: bytes) -> int | str | bytes:
        """This field's value in one record's payload (``data`` starts at common_type)."""
        raw = data[self.offset:self.offset + self.size]
        if self.decl.startswith("__data_loc"):
            loc = int.from_bytes(raw[:4], "little")
            start, length = loc & 0xFFFF, loc >> 16
            chunk = data[start:start + length]
            return chunk.split(b"\0", 1)[0].decode(errors="replace") if self.is_string else chunk
        if self.is_string:
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        if self.size in _INT and "[" not in self.decl:
            code = _INT[self.size] if self.signed else _INT[self.size].upper()
            return struct.unpack("<" + code, raw)[0]
        return raw


@dataclass(slots=True)
class EventFormat:
    """A parsed ``format`` file: the event's system, name, id, fields and print fmt."""

    system: str
    name: str
    id: int
    fields: list[FormatField]
    print_fmt: str = ""
    by_name: dict[str, FormatField] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}

    @classmethod
    def parse(cls, text: str, system: str = "ftrace") -> EventFormat:
        """Parse one format file; ValueError names what is missing."""
        name = re.search(r"^name: (\S+)$", text, re.MULTILINE)
        ident = re.search(r"^ID: (\d+)$", text, re.MULTILINE)
        if not name or not ident:
            raise ValueError(f"not an event format (no name/ID line): {text[:40]!r}")
        fields = []
        for m in _FIELD.finditer(text):
            decl = " ".join(m["decl"].split())
            fname = re.sub(r"\[.*$", "", decl).split()[-1]
            fields.append(FormatField(decl, fname, int(m["offset"]), int(m["size"]),
                                      m["signed"] == "1"))
        fmt = re.search(r"^print fmt: (.*)$", text, re.MULTILINE)
        return cls(system, name[1], int(ident[1]), fields, fmt[1] if fmt else "")

    def decode(self, data: bytes) -> dict[str, int | str | bytes]:
        """Every field's value in one record's payload, by name."""
        return {f.name: f.value(data) for f in self.fields}
