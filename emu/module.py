"""Loadable guest modules: the kernel's kernel/module/main.c, done by the host.

A module is a relocatable ELF (``ftemu kmod build``). ``load_module`` lays its allocated
sections out in the module area (text, then data in pages of its own), resolves its
symbols against the kernel's and the loaded modules', applies its relocations, sets its
parameters, then runs its init function in a guest kernel thread (so it may sleep), as
``insmod`` does. Other layers follow a module's life through notifiers called with the
kernel's states: ftrace adds the module's ``__mcount_loc`` sites while it is COMING and
drops them when it is GOING; livepatch patches objects as they come.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from . import memlayout as L
from . import module_files
from .elf import Symbol, section_kind, type_char
from .execmem import ALIGN, ExecMem
from .params import KernelParam, read_params

if TYPE_CHECKING:
    from .machine import Machine

# enum module_state (include/linux/module.h)
MODULE_STATE_LIVE, MODULE_STATE_COMING, MODULE_STATE_GOING, MODULE_STATE_UNFORMED = 0, 1, 2, 3
STATE_NAMES = {MODULE_STATE_LIVE: "Live", MODULE_STATE_COMING: "Loading",
               MODULE_STATE_GOING: "Unloading", MODULE_STATE_UNFORMED: "Unformed"}
MODULE_NAME_LEN = 56
# struct module as guest/include/linux/module.h lays it out (name, state, refcnt).
MOD_NAME, MOD_STATE, MOD_REFCNT, MOD_SIZE = L.MOD_NAME, L.MOD_STATE, L.MOD_REFCNT, L.MOD_SIZE
# struct module_call (guest/module.c): fn, ret, done, comm[16].
CALL_FN, CALL_RET, CALL_DONE, CALL_COMM, CALL_SIZE = 0x00, 0x08, 0x10, 0x18, 0x28

R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S, R_X86_64_PC64 = 1, 2, 4, 10, 11, 24
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
PAGE = 4096

Notifier = Callable[[int, "Module"], None]


class ModuleError(OSError):
    """A failed insmod/rmmod: an OSError carrying the kernel's errno."""


class ModuleArea(ExecMem):
    """First-fit allocator over the module area [MODULES_VA, MODULES_VA + MODULES_SIZE):
    module text in its executable first MODULES_CODE_SIZE bytes, everything else (module
    data, klp's structures, request pages) NX above, as the kernel maps module data."""

    def __init__(self) -> None:
        super().__init__(L.MODULES_VA, L.MODULES_SIZE, L.MODULES_CODE_SIZE)

    def alloc(self, size: int, align: int = ALIGN, executable: bool = False) -> int:
        return super().alloc(size, align, executable)


@dataclass(eq=False)
class Module:
    """A loaded module: where its sections went, its symbols, parameters and state."""
    name: str
    path: Path
    text: int                      # base of the executable pages
    text_size: int
    data: int                      # base of the data pages (struct module first)
    data_size: int
    symbols: dict[str, tuple[int, int]]        # name -> (address, size): functions and objects
    sections: dict[str, int]                   # allocated section -> address
    modinfo: dict[str, list[str]]
    section_sizes: dict[str, int] = field(default_factory=dict)
    mcount_loc: list[int] = field(default_factory=list)
    kallsyms: list[tuple[int, str, str]] = field(default_factory=list)   # (address, type, name)
    params: list[KernelParam] = field(default_factory=list)
    charp_buffers: dict[str, int] = field(default_factory=dict)    # charp param -> its string
    init: int = 0
    exit: int = 0
    state: int = MODULE_STATE_UNFORMED

    @property
    def this_module(self) -> int:
        """Guest address of the module's ``struct module`` (THIS_MODULE)."""
        return self.data

    @property
    def size(self) -> int:
        return self.text_size + self.data_size

    @property
    def livepatch(self) -> bool:
        return self.modinfo.get("livepatch") == ["Y"]

    def contains(self, addr: int) -> bool:
        return (self.text <= addr < self.text + self.text_size
                or self.data <= addr < self.data + self.data_size)


def module_name(path: str | Path) -> str:
    """The name a module file loads under: its stem with '-' spelled '_' (as kbuild does)."""
    return Path(path).name.split(".")[0].replace("-", "_")


class ModuleLoader:
    """The machine's modules (``m.modules``), in load order."""

    def __init__(self, machine: "Machine") -> None:
        self.m = machine
        self.area = ModuleArea()
        self.modules: dict[str, Module] = {}
        self.notifiers: list[Notifier] = []
        self.livepatch_tainted = False     # TAINT_LIVEPATCH's notice is printed once a boot
        machine.snapshot_participants.append(self)

    # ---- notifiers (the kernel's ftrace_module_init / klp_module_coming and friends) ------
    def register_notifier(self, fn: Notifier) -> None:
        """Call ``fn(state, module)`` when a module is COMING (before its init runs), LIVE and
        GOING (after its exit ran, before its memory goes); GOING also follows a failed init."""
        self.notifiers.append(fn)

    def _set_state(self, state: int, mod: Module) -> None:
        mod.state = state
        self.m.write(mod.this_module + MOD_STATE, struct.pack("<i", state))

    def _notify(self, state: int, mod: Module) -> None:
        self._set_state(state, mod)
        for fn in list(self.notifiers):
            fn(state, mod)

    def _coming(self, mod: Module) -> None:
        """prepare_coming_module: a notifier refusing the module (ModuleError, e.g. a live
        patch's failed pre-patch callback) has cleaned up after itself; the ones before it
        see GOING, the module is freed and insmod fails with its errno."""
        self._set_state(MODULE_STATE_COMING, mod)
        done = []
        for fn in list(self.notifiers):
            try:
                fn(MODULE_STATE_COMING, mod)
            except ModuleError as e:
                self._set_state(MODULE_STATE_GOING, mod)
                for prev in reversed(done):
                    prev(MODULE_STATE_GOING, mod)
                self._free(mod)
                raise ModuleError(e.errno, f"could not insert '{mod.name}': {_strerror(e.errno)}") from None
            done.append(fn)

    # ---- symbols -------------------------------------------------------------------------
    def find_symbol(self, name: str) -> int | None:
        """A kernel symbol, else a loaded module's global one (modules never shadow vmlinux)."""
        if self.m.image.has_symbol(name):
            return self.m.image.symbol(name).addr
        for mod in self.modules.values():
            if name in mod.symbols and mod.state != MODULE_STATE_UNFORMED:
                return mod.symbols[name][0]
        return None

    def kallsyms_text(self) -> str:
        """The modules' lines of /proc/kallsyms, newest module first as the kernel lists
        them: ``<address> <type> <name>\t[<module>]``."""
        return "".join(f"{a:016x} {t} {n}\t[{mod.name}]\n"
                       for mod in reversed(self.modules.values()) for a, t, n in sorted(mod.kallsyms))

    def module_address(self, addr: int) -> Module | None:
        """The module whose memory holds ``addr`` (the kernel's __module_address)."""
        return next((mod for mod in self.modules.values() if mod.contains(addr)), None)

    def containing(self, addr: int) -> tuple[str, int, int, Module] | None:
        """(symbol, offset, size, module) for an address inside a module's symbol."""
        mod = self.module_address(addr)
        if mod is None:
            return None
        for name, (start, size) in mod.symbols.items():
            if start <= addr < start + max(size, 1):
                return name, addr - start, size, mod
        return None

    # ---- loading -------------------------------------------------------------------------
    def load_module(self, path: str | Path, params: str | dict | None = None,
                    budget_ms: float = 10_000) -> Module:
        """insmod: load ``path``, run its init in a guest thread; ModuleError on failure,
        with nothing left behind."""
        path = Path(path)
        name = module_name(path)
        if name in self.modules:
            raise ModuleError(errno.EEXIST, f"could not insert '{name}': File exists")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModuleError(errno.ENOENT, f"could not load module {path}: {e.strerror}") from None
        mod = self._layout_and_relocate(name, path, data)
        if mod.livepatch and not self.livepatch_tainted:        # check_modinfo_livepatch
            self.livepatch_tainted = True
            self.m.printk(f"{name}: tainting kernel with TAINT_LIVEPATCH", 5)
        self.modules[name] = mod
        self.m.image.add_module_symbols(name, [Symbol(n, a, sz) for n, (a, sz) in mod.symbols.items()])
        try:
            read_params(self.m, mod, self._param_text(params))
        except ModuleError:
            self._free(mod)
            raise
        self._coming(mod)
        module_files.register_module(self.m, mod)
        ret = self._run_in_thread(mod.init, "insmod", budget_ms) if mod.init else 0
        if ret < 0:
            self._notify(MODULE_STATE_GOING, mod)
            module_files.unregister_module(self.m, mod)
            self._free(mod)
            err = -ret
            raise ModuleError(err, f"could not insert '{name}': {_strerror(err)}")
        self._notify(MODULE_STATE_LIVE, mod)
        return mod

    @staticmethod
    def _param_text(params: str | dict | None) -> list[tuple[str, str | None]]:
        if params is None:
            return []
        if isinstance(params, dict):
            return [(k, None if v is None else str(v)) for k, v in params.items()]
        if not isinstance(params, str):
            raise TypeError("module parameters are a string 'a=1 b=2' or a dict")
        out = []
        for tok in params.split():
            k, sep, v = tok.partition("=")
            out.append((k, v if sep else None))
        return out

    def delete_module(self, name: str, budget_ms: float = 10_000) -> None:
        """rmmod: EBUSY while referenced, else run its exit in a guest thread and free it."""
        mod = self.modules.get(name)
        if mod is None or mod.state == MODULE_STATE_UNFORMED:
            raise ModuleError(errno.ENOENT, f"Module {name} is not currently loaded")
        if mod.state != MODULE_STATE_LIVE:
            raise ModuleError(errno.EBUSY, f"Module {name} is busy ({STATE_NAMES[mod.state]})")
        if self.refcnt(mod):
            raise ModuleError(errno.EBUSY, f"Module {name} is in use")
        if mod.init and not mod.exit:
            raise ModuleError(errno.EBUSY, f"Module {name} has an init but no exit: it stays")
        self._set_state(MODULE_STATE_GOING, mod)
        if mod.exit:
            self._run_in_thread(mod.exit, "rmmod", budget_ms)
        self._notify(MODULE_STATE_GOING, mod)
        module_files.unregister_module(self.m, mod)
        self._free(mod)

    def refcnt(self, mod: Module) -> int:
        return struct.unpack("<i", self.m.read(mod.this_module + MOD_REFCNT, 4))[0]

    def module_get(self, mod: Module) -> None:
        """try_module_get: one more reference (rmmod now fails with EBUSY)."""
        self._add_ref(mod, 1)

    def module_put(self, mod: Module) -> None:
        self._add_ref(mod, -1)

    def _add_ref(self, mod: Module, delta: int) -> None:
        self.m.write(mod.this_module + MOD_REFCNT, struct.pack("<i", self.refcnt(mod) + delta))

    def _free(self, mod: Module) -> None:
        self.m.write(mod.text, b"\xcc" * mod.text_size)     # a stale call traps at once
        for va in (mod.text, mod.data, *mod.charp_buffers.values()):
            self.area.free(va)
        self.modules.pop(mod.name, None)
        self.m.image.remove_module_symbols(mod.name)

    # ---- snapshots -----------------------------------------------------------------------
    def snapshot_state(self) -> tuple:
        return (self.area.state(), self.livepatch_tainted,
                {n: (mod, mod.state, list(mod.params), dict(mod.charp_buffers))
                 for n, mod in self.modules.items()})

    def restore_state(self, st: tuple) -> None:
        area, self.livepatch_tainted, mods = st
        self.area.set_state(area)
        for name in list(self.modules):
            if name not in mods:
                self.m.image.remove_module_symbols(name)
        for mod in self.modules.values():
            module_files.unregister_module(self.m, mod)
        self.modules = {}
        for name, (mod, state, params, charp) in mods.items():
            mod.state, mod.params, mod.charp_buffers = state, list(params), dict(charp)
            self.modules[name] = mod
            module_files.register_module(self.m, mod)
            self.m.image.add_module_symbols(name, [Symbol(n, a, sz) for n, (a, sz) in mod.symbols.items()])

    def _run_in_thread(self, fn: int, comm: str, budget_ms: float) -> int:
        """Run ``fn()`` in a new guest kernel thread named ``comm`` and wait for it: init and
        exit functions may sleep, take locks and wait for work, as in a process context."""
        if not self.m.kernel.no_spinlock_held():
            self.m.run_until(self.m.kernel.no_spinlock_held, budget_ms)
        req = self.area.alloc(PAGE, align=PAGE)
        try:
            self.m.write(req, struct.pack("<QqQ", fn, 0, 0) + comm.encode()[:15].ljust(16, b"\0"))
            task = self.m.call("kernel_thread", self.m.symbol_address("module_call_thread"),
                               req, req + CALL_COMM)
            if not task:
                raise ModuleError(errno.ENOMEM, "no free task slot for the module's init/exit")
            self.m.run_until(lambda: self.m.read_u64(req + CALL_DONE) != 0, budget_ms)
            return struct.unpack("<q", self.m.read(req + CALL_RET, 8))[0]
        finally:
            self.area.free(req)

    def _layout_and_relocate(self, name: str, path: Path, data: bytes) -> Module:
        import io
        try:
            elf = ELFFile(io.BytesIO(data))
        except ELFError as e:
            raise ModuleError(errno.ENOEXEC, f"{path}: not an ELF module ({e})") from None
        if elf["e_type"] != "ET_REL" or elf["e_machine"] != "EM_X86_64":
            raise ModuleError(errno.ENOEXEC, f"{path}: not a relocatable x86-64 object")
        sections = list(elf.iter_sections())
        placed: dict[int, int] = {}        # section index -> offset within its region
        sizes = {"text": 0, "data": MOD_SIZE}
        for i, s in enumerate(sections):
            if not s["sh_flags"] & SHF_ALLOC or s.name == ".modinfo" or s["sh_size"] == 0:
                continue
            region = "text" if s["sh_flags"] & SHF_EXECINSTR else "data"
            align = max(s["sh_addralign"], 1)
            off = (sizes[region] + align - 1) // align * align
            placed[i] = (region, off)
            sizes[region] = off + s["sh_size"]
        text_size = max(PAGE, -(-sizes["text"] // PAGE) * PAGE)
        data_size = -(-sizes["data"] // PAGE) * PAGE
        try:
            text = self.area.alloc(text_size, align=PAGE, executable=True)
        except MemoryError:
            raise ModuleError(errno.ENOMEM, "module area exhausted") from None
        try:
            data_base = self.area.alloc(data_size, align=PAGE)
        except MemoryError:
            self.area.free(text)
            raise ModuleError(errno.ENOMEM, "module area exhausted") from None
        base = {"text": text, "data": data_base}
        addr = {i: base[r] + off for i, (r, off) in placed.items()}
        image = {"text": bytearray(text_size), "data": bytearray(data_size)}
        for i, (r, off) in placed.items():
            s = sections[i]
            if s["sh_type"] != "SHT_NOBITS":
                image[r][off:off + s["sh_size"]] = s.data()
        mod = Module(name, path, text, text_size, data_base, data_size, {},
                     {sections[i].name: a for i, a in addr.items()}, _modinfo(elf),
                     {sections[i].name: sections[i]["sh_size"] for i in addr})
        try:
            symvals = self._symbols(elf, sections, addr, mod)
            for rel in sections:
                if isinstance(rel, RelocationSection) and rel["sh_info"] in addr:
                    target = rel["sh_info"]
                    r, off = placed[target]
                    _apply(rel, symvals, image[r], off, addr[target], path)
        except ModuleError:
            self.area.free(text)
            self.area.free(data_base)
            raise
        struct.pack_into(f"<{MODULE_NAME_LEN}s", image["data"], MOD_NAME, name.encode()[:MODULE_NAME_LEN - 1])
        struct.pack_into("<ii", image["data"], MOD_STATE, MODULE_STATE_UNFORMED, 0)
        self.m.write(text, bytes(image["text"]))
        self.m.write(data_base, bytes(image["data"]))
        mc = next((i for i in addr if sections[i].name == "__mcount_loc"), None)
        if mc is not None:
            r, off = placed[mc]
            n = sections[mc]["sh_size"] // 8
            mod.mcount_loc = sorted(ip for ip in struct.unpack_from(f"<{n}Q", image[r], off) if ip)
        mod.init = mod.symbols.get("init_module", (0, 0))[0]
        mod.exit = mod.symbols.get("cleanup_module", (0, 0))[0]
        return mod

    def _symbols(self, elf: ELFFile, sections: list, addr: dict[int, int], mod: Module) -> list[int]:
        """Every symbol's value (index order); the module's own named ones go to mod.symbols."""
        symtab = next((s for s in sections if isinstance(s, SymbolTableSection)), None)
        if symtab is None:
            raise ModuleError(errno.ENOEXEC, f"{mod.path}: no symbol table")
        values = []
        for sym in symtab.iter_symbols():
            shndx, kind, bind = sym["st_shndx"], sym["st_info"]["type"], sym["st_info"]["bind"]
            if shndx == "SHN_UNDEF":
                if not sym.name:
                    values.append(0)
                    continue
                if sym.name == "__this_module":
                    values.append(mod.this_module)
                    continue
                v = self.find_symbol(sym.name)
                if v is None:
                    if bind == "STB_WEAK":
                        v = 0
                    else:
                        raise ModuleError(errno.ENOENT, f"{mod.name}: Unknown symbol {sym.name} (err -2)")
                values.append(v)
            elif shndx == "SHN_ABS":
                values.append(sym["st_value"])
            elif shndx == "SHN_COMMON":
                raise ModuleError(errno.ENOEXEC, f"{mod.name}: common symbol {sym.name}: build with -fno-common")
            elif shndx in addr:
                v = addr[shndx] + sym["st_value"]
                values.append(v)
                if sym.name and kind in ("STT_FUNC", "STT_OBJECT"):
                    mod.symbols[sym.name] = (v, sym["st_size"])
                if sym.name and kind not in ("STT_FILE", "STT_SECTION") and not sym.name.startswith(".L"):
                    mod.kallsyms.append((v, type_char(section_kind(sections[shndx]), bind), sym.name))
            else:
                values.append(0)           # a symbol in a section that is not loaded
        return values


def _apply(rel: RelocationSection, symvals: list[int], buf: bytearray, base_off: int,
           base_addr: int, path: Path) -> None:
    """Apply one RELA section to a section placed at ``base_addr`` (bytes at ``base_off``)."""
    for r in rel.iter_relocations():
        t, off = r["r_info_type"], r["r_offset"]
        s, a, p = symvals[r["r_info_sym"]], r["r_addend"], base_addr + off
        at = base_off + off
        if t == R_X86_64_64:
            struct.pack_into("<Q", buf, at, (s + a) & 0xFFFFFFFFFFFFFFFF)
        elif t == R_X86_64_PC64:
            struct.pack_into("<Q", buf, at, (s + a - p) & 0xFFFFFFFFFFFFFFFF)
        elif t in (R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32S, R_X86_64_32):
            v = s + a - p if t in (R_X86_64_PC32, R_X86_64_PLT32) else s + a
            if t == R_X86_64_32:
                ok, v = 0 <= v < 1 << 32, v
            else:
                v = v - (1 << 64) if v >= 1 << 63 else v
                ok = -(1 << 31) <= v < 1 << 31
            if not ok:
                raise ModuleError(errno.ENOEXEC, f"{path}: overflow in relocation type {t} "
                                                 f"val {s + a:x}")
            struct.pack_into("<I", buf, at, v & 0xFFFFFFFF)
        elif t != 0:
            raise ModuleError(errno.ENOEXEC, f"{path}: Unknown rela relocation: {t}")


def _modinfo(elf: ELFFile) -> dict[str, list[str]]:
    """The ``tag=value`` strings of .modinfo (MODULE_LICENSE, MODULE_INFO, parm ...)."""
    sec = elf.get_section_by_name(".modinfo")
    out: dict[str, list[str]] = {}
    if sec is not None:
        for item in sec.data().split(b"\0"):
            if b"=" in item:
                k, _, v = item.decode("utf-8", "replace").partition("=")
                out.setdefault(k, []).append(v)
    return out


def _strerror(err: int) -> str:
    import os
    return os.strerror(err)
