"""``ftemu shell``: the guest's files mounted (``ftemu mount`` in a child process of its
own session, so the terminal's Ctrl-C stays with the shell), then the user's own shell
(``$SHELL -i``, or ``-c CMD``) in the tracing directory; unmounted when the shell exits.
As root, the shell runs in a private mount namespace (``unshare -m``) with the guest's files
bind-mounted at their real paths (REAL_PATHS: /sys/kernel with tracing, livepatch and
debug/dynamic_debug, /sys/module, /dev/kmsg, /proc/cmdline, /proc/meminfo, ...). Otherwise it
says where the files are.

The module commands (insmod, rmmod, modprobe, modinfo, lsmod, dmesg: kmod_tools) come first
on the shell's PATH and act on this guest through the mount's control socket
($FTEMU_CONTROL); modprobe finds modules by name in $FTEMU_MODULE_DIR."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .kmod_tools import COMMANDS, CONTROL_ENV, MODULE_DIR_ENV
from .options import add_command, add_machine_options

TRACING = "sys/kernel/tracing"
# (path in the guest's tree, the same path on the host) bound in the private namespace
# (/sys/kernel holds tracing, livepatch and debug; the host's has no livepatch directory to
# bind over, so the guest's whole /sys/kernel takes its place)
REAL_PATHS = ("sys/kernel", "sys/module", "sys/devices/system/cpu", "dev/kmsg",
              "proc/cmdline", "proc/meminfo", "proc/modules", "proc/kallsyms",
              "proc/sys/kernel/ftrace_enabled", "proc/sys/kernel/stack_tracer_enabled")
MOUNT_WAIT_S = 120


def start_mount(args: argparse.Namespace, root: str, log, control: str) -> subprocess.Popen:
    """``ftemu mount ROOT --quiet --control SOCKET`` with the machine flags, in a session of
    its own."""
    cmd = [sys.executable, "-m", "ftemu", "mount", root, "--quiet", "--cpus", str(args.cpus),
           "--memory", str(args.memory), "--cmdline", args.cmdline, "--control", control]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)


def wait_mounted(child: subprocess.Popen, root: str, log_path: str) -> None:
    """Until ROOT/sys/kernel/tracing is served; the mount's own error if it gave up."""
    deadline = time.monotonic() + MOUNT_WAIT_S
    while not os.path.isdir(os.path.join(root, TRACING)):
        if child.poll() is not None:
            lines = Path(log_path).read_text(errors="replace").strip().splitlines()
            raise OSError(lines[-1].removeprefix("ftemu mount: error: ") if lines
                          else f"ftemu mount exited with status {child.returncode}")
        if time.monotonic() > deadline:
            raise OSError(f"the guest's files did not appear at {root} in {MOUNT_WAIT_S} s")
        time.sleep(0.05)


def can_unshare() -> bool:
    """A private mount namespace needs root (CAP_SYS_ADMIN) and util-linux's unshare."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def namespace_command(root: str, argv: list[str]) -> list[str]:
    """``unshare -m`` running a small sh script: bind each guest path that exists on both
    sides over the host's, cd to /sys/kernel/tracing, exec the user's shell."""
    binds = "".join(f"mount --bind {shlex.quote(os.path.join(root, p))} /{p}\n"
                    for p in REAL_PATHS
                    if os.path.exists(os.path.join(root, p)) and os.path.exists("/" + p))
    script = f"set -e\n{binds}cd /{TRACING}\nexec \"$@\"\n"
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def make_bin(where: str) -> str:
    """A directory of the module commands (small sh scripts running kmod_tools)."""
    bindir = os.path.join(where, "bin")
    os.mkdir(bindir)
    for cmd in COMMANDS:
        path = os.path.join(bindir, cmd)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ftemu.kmod_tools {cmd} "
                    "\"$@\"\n")
        os.chmod(path, 0o755)
    return bindir


def shell_env(args: argparse.Namespace, bindir: str, control: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
    env[CONTROL_ENV] = control
    env[MODULE_DIR_ENV] = os.path.abspath(args.module_dir) if args.module_dir else \
        env.get(MODULE_DIR_ENV) or os.getcwd()
    return env


def run(args: argparse.Namespace) -> int:
    shell = os.environ.get("SHELL") or "/bin/sh"
    argv = [shell, "-c", args.shell_command] if args.shell_command is not None else [shell, "-i"]
    root = tempfile.mkdtemp(prefix="ftemu-guest-")
    with tempfile.TemporaryDirectory(prefix="ftemu-shell-") as work, \
            tempfile.NamedTemporaryFile(prefix="ftemu-mount-", suffix=".log") as log:
        control = os.path.join(work, "control")
        env = shell_env(args, make_bin(work), control)
        child = start_mount(args, root, log, control)
        try:
            wait_mounted(child, root, log.name)
            return run_shell(args, root, argv, env)
        finally:
            stop_mount(child)
            try:
                os.rmdir(root)
            except OSError:
                pass            # still mounted (the unmount failed): leave the directory


def run_shell(args: argparse.Namespace, root: str, argv: list[str], env: dict[str, str]) -> int:
    """The user's shell on the mounted files; its exit status."""
    private = can_unshare() and not args.no_namespace
    cmd = namespace_command(root, argv) if private else argv
    if args.shell_command is None:
        where = (f"at their real paths (/{TRACING}, /proc/cmdline, ...) in a private mount "
                 "namespace" if private else
                 f"under {root} (tracefs: {root}/{TRACING}; run as root for the real paths)")
        print(f"ftemu: the guest's files are {where}; exit the shell to unmount.",
              file=sys.stderr, flush=True)
    # The shell owns the terminal now: its Ctrl-C is not ours.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(cmd, cwd=os.path.join(root, TRACING), env=env)
    finally:
        signal.signal(signal.SIGINT, old)


def stop_mount(child: subprocess.Popen) -> None:
    """SIGTERM to ``ftemu mount``: it unmounts and exits 0."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def register(sub) -> None:
    p = add_command(sub, "shell", "your own shell on the guest's tracing files (mounted, "
                    "unmounted when it exits)",
                    "ftemu shell -c 'echo function > current_tracer; head -20 trace'")
    p.epilog = (f"Inside the shell, {', '.join(COMMANDS)} act on the guest.\nmodprobe and "
                f"modinfo find a module NAME as NAME.ko, or NAME.c (built with the\nguest's "
                f"headers on first use), in ${MODULE_DIR_ENV}: directories separated by ':'\n"
                f"(default: --module-dir, else the directory ftemu shell started in).\n"
                f"${CONTROL_ENV} names the guest's control socket.\n\n" + p.epilog)
    add_machine_options(p, ms=None)
    p.add_argument("-c", dest="shell_command", metavar="CMD",
                   help="run CMD with $SHELL -c instead of an interactive shell")
    p.add_argument("--module-dir", metavar="DIR",
                   help=f"where modprobe finds modules by name (sets ${MODULE_DIR_ENV})")
    p.add_argument("--no-namespace", action="store_true",
                   help="never use a private mount namespace, even as root")
    p.set_defaults(func=run)
