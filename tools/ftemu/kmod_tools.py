"""The module commands ``ftemu shell`` puts on PATH: ``insmod``, ``rmmod``, ``modprobe``,
``modinfo``, ``lsmod`` and ``dmesg``, acting on the guest of the running mount (through
the control socket named by $FTEMU_CONTROL), with kmod's and util-linux's wording.

Module names resolve through the directories of $FTEMU_MODULE_DIR (``:``-separated):
``NAME.ko`` there, else ``NAME.c``, built against the guest's headers on first use
(``ftemu kmod build``) and cached by its source. ``-`` and ``_`` in names are the same, as in
kmod. Run as ``python -m ftemu.kmod_tools COMMAND ARGS...``.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

CONTROL_ENV = "FTEMU_CONTROL"
MODULE_DIR_ENV = "FTEMU_MODULE_DIR"
COMMANDS = ("insmod", "rmmod", "modprobe", "modinfo", "lsmod", "dmesg", "klp-explain")
LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")


class CommandError(Exception):
    """A failure already worded as the tool prints it (after ``prog: ``); exit status 1."""


def call(op: str, **args) -> dict:
    """One request to the mount (see kmod_control); OSError with the errno if it failed."""
    path = os.environ.get(CONTROL_ENV)
    if not path:
        raise CommandError(f"ERROR: ${CONTROL_ENV} is not set: run this inside 'ftemu shell'")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
    except OSError as e:
        raise CommandError(f"ERROR: the guest is not reachable at {path}: {e.strerror}") from None
    reply = json.loads(data)
    if reply["errno"]:
        raise OSError(reply["errno"], reply.get("message") or os.strerror(reply["errno"]))
    return reply


def loaded_modules() -> dict[str, int]:
    """name -> refcnt, from the guest's /proc/modules."""
    out = {}
    for line in call("modules")["text"].splitlines():
        f = line.split()
        out[f[0]] = int(f[2])
    return out


# ---- finding and building modules ----------------------------------------------------------
def module_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(MODULE_DIR_ENV, "").split(os.pathsep) if d]


def find_module(name: str) -> Path | None:
    """NAME.ko in a module directory, else NAME.c built (cached); a path is taken as is."""
    if "/" in name or name.endswith(".ko"):
        return Path(name) if Path(name).is_file() else None
    variants = dict.fromkeys((name, name.replace("_", "-"), name.replace("-", "_")))
    for d in module_dirs():
        for v in variants:
            if (d / f"{v}.ko").is_file():
                return d / f"{v}.ko"
    for d in module_dirs():
        for v in variants:
            if (d / f"{v}.c").is_file():
                return build_cached(d / f"{v}.c")
    return None


def build_cached(src: Path) -> Path:
    """``src`` compiled as a guest module, once per (source, guest headers)."""
    from emu.errors import BuildError
    from emu.kbuild import build_module, build_once, cache_root, source_hash
    key = hashlib.sha256(src.read_bytes() + source_hash().encode()).hexdigest()[:16]
    out = cache_root() / "modules" / key / f"{src.stem}.ko"
    try:
        return build_once(out, lambda: _build_into(build_module, src, out))
    except BuildError as e:
        raise CommandError(f"ERROR: could not build '{src}': {str(e).splitlines()[0]}") from None


def _build_into(build_module, src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".ko.part")
    build_module(src, tmp)
    os.replace(tmp, out)


def not_found(name: str) -> CommandError:
    where = os.environ.get(MODULE_DIR_ENV) or f"(${MODULE_DIR_ENV} is not set)"
    return CommandError(f"FATAL: Module {name} not found in directory {where}")


def modinfo_fields(path: Path) -> list[tuple[str, str]]:
    """The ``tag=value`` strings of the module's .modinfo, in order."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as f:
            sec = ELFFile(f).get_section_by_name(".modinfo")
            data = sec.data() if sec is not None else b""
    except ELFError:
        raise CommandError(f"ERROR: could not get modinfo from '{path.stem}': Invalid argument") \
            from None
    out = []
    for item in data.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            out.append((key, value))
    return out


def module_name(path: Path) -> str:
    return path.name.split(".")[0].replace("-", "_")


# ---- the commands ---------------------------------------------------------------------------
def insert_error(name: str, e: OSError, modprobe: bool) -> CommandError:
    """kmod's words for a failed init_module."""
    if modprobe:
        why = {errno.EEXIST: "Module already in kernel",
               errno.ENOENT: "Unknown symbol in module, or unknown parameter (see dmesg)"}
        return CommandError(f"ERROR: could not insert '{name}': "
                            f"{why.get(e.errno) or os.strerror(e.errno)}")
    why = {errno.ENOEXEC: "Invalid module format", errno.ENOENT: "Unknown symbol in module",
           errno.ESRCH: "Module has wrong symbol version", errno.EINVAL: "Invalid parameters"}
    return CommandError(f"ERROR: could not insert module {name}: "
                        f"{why.get(e.errno) or os.strerror(e.errno)}")


def insmod(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="insmod", description="Insert a module into the guest.")
    p.add_argument("filename")
    p.add_argument("args", nargs="*", help="module parameters (name=value)")
    a = p.parse_args(argv)
    path = Path(a.filename)
    if not path.is_file():
        raise CommandError(f"ERROR: could not load module {a.filename}: No such file or directory")
    try:
        call("init_module", path=str(path.resolve()), params=" ".join(a.args))
    except OSError as e:
        raise insert_error(a.filename, e, modprobe=False) from None
    return 0


def delete(name: str, prefix: str) -> None:
    """delete_module, with kmod's words for its failure."""
    try:
        call("delete_module", name=name)
    except OSError as e:
        raise CommandError(f"{prefix}could not remove module {name}: {os.strerror(e.errno)}") \
            from None


def rmmod_one(name: str) -> None:
    """rmmod's checks first, as kmod's: not loaded, in use."""
    name = module_name(Path(name))
    mods = loaded_modules()
    if name not in mods:
        raise CommandError(f"ERROR: Module {name} is not currently loaded")
    if mods[name]:
        raise CommandError(f"ERROR: Module {name} is in use")
    delete(name, "ERROR: ")


def modprobe_remove(name: str) -> None:
    """modprobe -r: a module that is not loaded is fine if it exists; in use is FATAL."""
    mods = loaded_modules()
    loaded = module_name(Path(name))
    if loaded not in mods:
        if find_module(name) is None:
            raise not_found(name)
        return
    if mods[loaded]:
        raise CommandError(f"FATAL: Module {loaded} is in use.")
    delete(loaded, "FATAL: ")


def rmmod(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rmmod", description="Remove modules from the guest.")
    p.add_argument("modulename", nargs="+")
    for name in p.parse_args(argv).modulename:
        rmmod_one(name)
    return 0


def modprobe(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="modprobe", description="Load (or with -r remove) a "
                                f"guest module by name, found through ${MODULE_DIR_ENV}.")
    p.add_argument("-n", "--dry-run", action="store_true", help="find and build, load nothing")
    p.add_argument("-r", "--remove", action="store_true", help="remove the named modules")
    p.add_argument("-q", "--quiet", action="store_true", help="no error for a missing module")
    p.add_argument("-v", "--verbose", action="store_true", help="print the insmod it runs")
    p.add_argument("modulename")
    p.add_argument("args", nargs="*", help="module parameters (name=value)")
    a = p.parse_args(argv)
    if a.remove:
        for name in [a.modulename, *a.args]:
            if not a.dry_run:
                modprobe_remove(name)
        return 0
    path = find_module(a.modulename)
    if path is None:
        if a.quiet:
            return 1
        raise not_found(a.modulename)
    name = module_name(path)
    params = " ".join(a.args)
    if a.verbose:
        print(f"insmod {path} {params}")
    if a.dry_run or name in loaded_modules():
        return 0
    try:
        call("init_module", path=str(path.resolve()), params=params)
    except OSError as e:
        raise insert_error(name, e, modprobe=True) from None
    return 0


def modinfo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="modinfo", description="Show a guest module's .modinfo.")
    p.add_argument("-F", "--field", help="only this field's values")
    p.add_argument("modulename", nargs="+")
    a = p.parse_args(argv)
    for name in a.modulename:
        path = find_module(name)
        if path is None:
            raise CommandError(f"ERROR: Module {name} not found.")
        fields = [("filename", str(path.resolve()))] + modinfo_fields(path)
        for key, value in fields:
            if a.field is None:
                print(f"{key + ':':<16}{value}")
            elif key == a.field:
                print(value)
    return 0


def lsmod(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="lsmod", description="The guest's modules.").parse_args(argv)
    print("Module                  Size  Used by")
    for line in call("modules")["text"].splitlines():
        name, size, refcnt = line.split()[:3]
        print(f"{name:<19} {int(size):>8}  {refcnt}")
    return 0


def dmesg(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dmesg", description="The guest's kernel log.")
    p.add_argument("-C", "--clear", action="store_true", help="clear the log, print nothing")
    p.add_argument("-c", "--read-clear", action="store_true", help="print, then clear")
    p.add_argument("-t", "--notime", action="store_true", help="no timestamps")
    p.add_argument("-r", "--raw", action="store_true", help="<level> prefixes, no decoding")
    p.add_argument("-l", "--level", help="only these levels (comma-separated: err,warn,...)")
    a = p.parse_args(argv)
    wanted = None
    if a.level:
        try:
            wanted = {LEVELS.index(w) for w in a.level.split(",")}
        except ValueError:
            raise CommandError(f"unknown level '{a.level}'") from None
    records = call("syslog", clear=a.clear or a.read_clear)["records"]
    if a.clear:
        return 0
    out = []
    for level, ts_ns, text in records:
        if wanted is not None and level not in wanted:
            continue
        stamp = "" if a.notime else f"[{ts_ns // 10**9:5d}.{ts_ns // 1000 % 10**6:06d}] "
        out.append((f"<{level}>" if a.raw else "") + stamp + text + "\n")
    sys.stdout.write("".join(out))
    return 0


def klp_explain(argv: list[str]) -> int:
    """Beyond kmod: m.livepatch.explain() of the running guest."""
    argparse.ArgumentParser(
        prog="klp-explain",
        description="Why the guest's livepatch transition has not completed: the tasks not "
                    "yet switched, where each sleeps and which patched function holds it.",
    ).parse_args(argv)
    sys.stdout.write(call("klp_explain")["text"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ftemu.kmod_tools {{{','.join(COMMANDS)}}} ARGS...", file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    try:
        return globals()[cmd.replace("-", "_")](args)
    except CommandError as e:
        print(f"{cmd}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:            # `dmesg | head`: end quietly, as a SIGPIPE death would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
