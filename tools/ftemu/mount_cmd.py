"""``ftemu mount DIR``: boot the guest and serve its files through FUSE as a guest root
(DIR/sys/kernel/tracing, DIR/proc, DIR/sys/devices/system/cpu) while the guest runs in the
background, paced to the wall clock; the host processes that open its files are a guest task
(requester.py). Foreground until SIGINT/SIGTERM/SIGHUP or
``fusermount3 -u DIR``; then the mount is gone and the exit status is 0.

Threads: FUSE's loop runs in its own thread (libfuse serves requests on several more); the
main thread runs the guest, one slice at a time under the machine lock, and handles signals
(Python's handlers are installed first, so libfuse leaves them alone): on a signal it wakes
every waiting request, then unmounts with fusermount3, which ends FUSE's loop. With
``--control SOCKET`` a thread serves module loading and the log there (kmod_control).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from emu import EmuError, Machine

from .fusefs import FuseView, load_fuse
from .kmod_control import ControlServer
from .options import UsageError, add_command, add_machine_options, make_machine
from .requester import Requester

SLICE_MS = 5                  # guest time run per lock hold: the latency a request can see
MAX_LAG_S = 0.2               # behind the wall clock by more: forget the debt, don't race


class PacedRunner:
    """Runs ``m`` so that guest time follows the wall clock (never ahead of it; when the
    guest is slower than real time it runs flat out and the debt is dropped)."""

    def __init__(self, m: Machine, cv: threading.Condition) -> None:
        self.m, self.cv = m, cv
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        m = self.m
        wall0, virt0 = time.monotonic(), m.now
        while not self.stop.is_set():
            with self.cv:
                target = virt0 + int((time.monotonic() - wall0) * 1e9)
                if m.now < target - MAX_LAG_S * 1e9:
                    wall0, virt0 = time.monotonic(), m.now
                    target = m.now
                if m.now < target:
                    try:
                        m.run(ms=min(SLICE_MS, (target - m.now) / 1e6))
                    except EmuError as e:
                        self.error = e
                        return
                    if m.exit_code is not None:
                        self.error = EmuError(f"the guest powered off (exit code {m.exit_code})")
                        return
                self.cv.notify_all()
                ahead = (m.now - target) / 1e9
            self.stop.wait(min(max(ahead, 0.0005), SLICE_MS / 1000))


def unmount(mountpoint: str) -> None:
    """fusermount3 -u (lazily, -z, if the first attempt finds it busy)."""
    tool = shutil.which("fusermount3") or "fusermount3"
    r = subprocess.run([tool, "-u", mountpoint], capture_output=True)
    if r.returncode:
        subprocess.run([tool, "-u", "-z", mountpoint], capture_output=True)


def run(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.dir)
    if not os.path.isdir(mountpoint):
        raise UsageError("DIR", f"{args.dir} is not a directory")
    mfusepy = load_fuse()
    m = make_machine(args)
    cv = threading.Condition(threading.RLock())
    requester = Requester(m)
    view = FuseView(m.fs, cv, lambda: bool(mfusepy._libfuse.fuse_interrupted()),
                    on_open=lambda: requester.run_for(mfusepy.fuse_get_context()[2]))
    runner = PacedRunner(m, cv)
    failure: list[BaseException] = []
    stop_signal: list[int] = []

    def on_signal(signum: int, frame) -> None:
        stop_signal.append(signum)
        runner.stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def serve() -> None:
        try:
            mfusepy.FUSE(view, mountpoint, raw_fi=True, foreground=True, fsname="ftemu",
                         subtype="ftemu", attr_timeout=0, entry_timeout=0)
        except BaseException as e:          # noqa: BLE001 - reported by the main thread
            failure.append(e)
        finally:
            runner.stop.set()
    fuse_thread = threading.Thread(target=serve, name="ftemu-fuse", daemon=True)
    fuse_thread.start()
    control = ControlServer(m, cv, args.control) if args.control else None
    if control is not None:
        control.start()
    if not args.quiet:
        print(f"ftemu: the guest's files are mounted at {mountpoint} ({len(m.cpus)} CPUs); "
              f"tracefs is {mountpoint}/sys/kernel/tracing. Ctrl-C or "
              f"'fusermount3 -u {mountpoint}' ends it.", file=sys.stderr, flush=True)
    runner.run()
    if control is not None:
        control.close()
    with cv:
        view.stopping = True
        cv.notify_all()
    if fuse_thread.is_alive():
        unmount(mountpoint)
    fuse_thread.join(timeout=10)
    if failure:
        raise OSError(f"FUSE could not mount {mountpoint}: {failure[0]}")
    if runner.error is not None:
        raise runner.error
    return 0


def register(sub) -> None:
    p = add_command(sub, "mount", "serve the guest's tracefs, /proc and cpu files through FUSE "
                    "while the guest runs", "ftemu mount /tmp/guest && "
                    "cat /tmp/guest/sys/kernel/tracing/available_tracers")
    p.add_argument("dir", metavar="DIR", help="an existing directory to mount on")
    add_machine_options(p, ms=None)
    p.add_argument("--quiet", action="store_true", help="no message once mounted")
    p.add_argument("--control", metavar="SOCKET",
                   help="serve module loading and the kernel log on this unix socket (for "
                        "the module commands of 'ftemu shell')")
    p.set_defaults(func=run)
