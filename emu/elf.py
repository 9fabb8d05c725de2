"""The guest kernel image: loadable segments and the symbol table (kallsyms for the host)."""
from __future__ import annotations

import bisect
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile


@dataclass(slots=True, frozen=True)
class Symbol:
    """A function or object of the kernel image."""
    name: str
    addr: int
    size: int


@dataclass(slots=True, frozen=True)
class Segment:
    """A PT_LOAD segment: file bytes, copied to ``paddr``, zero-filled up to ``memsz``."""
    vaddr: int
    paddr: int
    data: bytes
    memsz: int


class KernelImage:
    """An ELF kernel read with pyelftools: entry point, segments, sections and symbols."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        raw = self.path.read_bytes()
        self.digest = hashlib.sha256(raw).hexdigest()      # which kernel (snapshots check it)
        try:
            elf = ELFFile(io.BytesIO(raw))
            self.entry: int = elf["e_entry"]
            self.segments = [Segment(s["p_vaddr"], s["p_paddr"], s.data(), s["p_memsz"])
                             for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
            self.sections = {s.name: (s["sh_addr"], s.data() if s["sh_type"] != "SHT_NOBITS" else b"")
                             for s in elf.iter_sections() if s["sh_addr"]}
            symtab = elf.get_section_by_name(".symtab")
            syms = [] if symtab is None else list(symtab.iter_symbols())
            kinds = {i: section_kind(s) for i, s in enumerate(elf.iter_sections())}
        except ELFError as e:
            raise ValueError(f"{self.path} is not an ELF kernel: {e}") from None
        self.kallsyms = sorted(
            (s["st_value"], type_char(kinds.get(s["st_shndx"], "a"), s["st_info"]["bind"]), s.name)
            for s in syms if s.name and s["st_shndx"] != "SHN_UNDEF"
            and s["st_info"]["type"] not in ("STT_FILE", "STT_SECTION"))
        self._by_name: dict[str, Symbol] = {}
        funcs = []
        for s in syms:
            if not s.name or s["st_info"]["type"] in ("STT_FILE", "STT_SECTION"):
                continue
            sym = Symbol(s.name, s["st_value"], s["st_size"])
            if sym.name not in self._by_name or s["st_info"]["bind"] == "STB_GLOBAL":
                self._by_name[sym.name] = sym
            if s["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE", "STT_OBJECT") and sym.addr:
                funcs.append(sym)
        self._kernel_syms = funcs
        self._modules: dict[str, list[Symbol]] = {}    # owner -> its symbols (kallsyms' modules)
        self._index()

    def _index(self) -> None:
        funcs = self._kernel_syms + [s for syms in self._modules.values() for s in syms]
        funcs.sort(key=lambda s: (s.addr, -s.size))
        self._sorted = funcs
        self._addrs = [s.addr for s in funcs]
        self._owner = {s.addr: owner for owner, syms in self._modules.items() for s in syms}

    def kernel_symbols(self) -> list[Symbol]:
        """vmlinux's symbols in address order (duplicates of a name included: kallsyms)."""
        return sorted(self._kernel_syms, key=lambda s: s.addr)

    def add_module_symbols(self, owner: str, symbols: list[Symbol]) -> None:
        """Make a loaded module's symbols known (lookup, %pS with ``[owner]``, by name where
        the kernel has no symbol of that name: vmlinux wins, as in kallsyms_lookup_name)."""
        self._modules[owner] = list(symbols)
        for s in symbols:
            self._by_name.setdefault(s.name, s)
        self._index()

    def remove_module_symbols(self, owner: str) -> None:
        for s in self._modules.pop(owner, []):
            if self._by_name.get(s.name) is s:
                del self._by_name[s.name]
        self._index()

    def module_of(self, addr: int) -> str | None:
        """The module owning the symbol that holds ``addr``, or None for vmlinux."""
        s = self.containing(addr)
        return None if s is None else self._owner.get(s.addr)

    def symbol(self, name: str) -> Symbol:
        """The symbol called ``name``; KeyError if the kernel has none."""
        return self._by_name[name]

    def has_symbol(self, name: str) -> bool:
        return name in self._by_name

    def containing(self, addr: int) -> Symbol | None:
        """The symbol holding ``addr``. An unsized symbol (an assembly label) extends to the
        next symbol, as kallsyms sizes them."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        s = self._sorted[i]
        if s.size:
            return s if addr < s.addr + s.size else None
        nxt = next((a for a in self._addrs[i + 1:] if a > s.addr), None)
        if nxt is None:
            return None          # past the last symbol (_end): not part of the image
        return Symbol(s.name, s.addr, nxt - s.addr)

    def lookup(self, addr: int) -> str:
        """``name+0xoff/0xsize`` as the kernel's %pS prints it, or ``0x...`` if unknown."""
        s = self.containing(addr)
        if s is None:
            return f"0x{addr:x}"
        mod = self._owner.get(s.addr)
        return f"{s.name}+0x{addr - s.addr:x}/0x{s.size:x}" + (f" [{mod}]" if mod else "")

    def functions(self) -> list[Symbol]:
        """Every sized symbol, in address order."""
        return [s for s in self._sorted if s.size]

    def kallsyms_text(self) -> str:
        """/proc/kallsyms: ``<address> <type> <name>`` per symbol, in address order."""
        return "".join(f"{addr:016x} {kind} {name}\n" for addr, kind, name in self.kallsyms)

    def u64_array(self, section: str) -> list[int]:
        """A section read as little-endian 64-bit words (e.g. ``__mcount_loc``)."""
        _, data = self.sections[section]
        return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


def section_kind(section) -> str:
    """nm's letter for symbols of a section: t text, r read-only, d data, b bss."""
    flags = section["sh_flags"]
    if flags & 0x4:                 # SHF_EXECINSTR
        return "t"
    if not flags & 0x1:             # not SHF_WRITE
        return "r"
    return "b" if section["sh_type"] == "SHT_NOBITS" else "d"


def type_char(kind: str, bind: str) -> str:
    """Upper case for global symbols, as nm and /proc/kallsyms print them; W for weak."""
    if bind == "STB_WEAK":
        return "W" if kind == "t" else "V"
    return kind.upper() if bind == "STB_GLOBAL" else kind
