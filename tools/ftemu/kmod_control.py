"""The channel from ``ftemu shell``'s module commands to the running mount: the syscalls
kmod and dmesg make (init_module, delete_module, syslog), served by ``ftemu mount
--control SOCKET`` on a unix socket; the client side is kmod_tools.

One request per connection: a JSON line ``{"op": ..., ...}`` in, a JSON line out with the
call's ``errno`` (0 on success) and its result. Every request runs under the machine lock,
between two slices of the guest, as FUSE requests do; the guest runs on between requests
(a module's init runs in a guest thread while the request waits).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import traceback
from typing import TYPE_CHECKING

from emu.module import module_name

if TYPE_CHECKING:
    from emu import Machine

class ControlServer:
    """Serves the requests for machine ``m`` (``cv`` is the mount's machine lock)."""

    def __init__(self, m: "Machine", cv: threading.Condition, path: str) -> None:
        self.m, self.cv, self.path = m, cv, path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, name="ftemu-control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return                       # closed: the mount is going away
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while not data.endswith(b"\n") and (chunk := conn.recv(1 << 16)):
                data += chunk
            try:
                req = json.loads(data)
                with self.cv:
                    reply = self.handle(req)
            except OSError as e:
                reply = {"errno": e.errno or errno.EIO, "message": str(e)}
            except (ValueError, KeyError, TypeError) as e:
                reply = {"errno": errno.EINVAL, "message": f"bad request: {e}"}
            except Exception as e:           # noqa: BLE001 - e.g. EmuError: the guest is stuck
                traceback.print_exc()        # into the mount's log; the caller gets EIO
                reply = {"errno": errno.EIO, "message": f"{type(e).__name__}: {e}".splitlines()[0]}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def handle(self, req: dict) -> dict:
        """One syscall's worth of work; OSError carries the kernel's errno."""
        op = req["op"]
        if op == "init_module":
            self.m.insmod(req["path"], req.get("params") or None)
            return {"errno": 0, "name": module_name(req["path"])}
        if op == "delete_module":
            self.m.rmmod(req["name"])
            return {"errno": 0}
        if op == "syslog":                  # read all, then clear if asked (dmesg -c / -C)
            records = [[r.level, r.ts_ns, r.text] for r in self.m.log.records]
            if req.get("clear"):
                self.m.log.clear()
            return {"errno": 0, "records": records}
        if op == "klp_explain":
            return {"errno": 0, "text": self.m.livepatch.explain()}
        if op == "modules":
            return {"errno": 0, "text": self.m.fs.read("/proc/modules")}
        raise ValueError(f"unknown op {op!r}")
