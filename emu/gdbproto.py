"""The GDB remote serial protocol's framing: ``$payload#checksum`` packets over a socket, acks
(until ``QStartNoAckMode``), binary escapes, and the out-of-band interrupt byte 0x03."""
from __future__ import annotations

import select
import socket

INTERRUPT = 0x03
_ESCAPED = frozenset(b"#$}*")


def checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) & 0xFF)


def escape_binary(data: bytes) -> bytes:
    """Escape ``#``, ``$``, ``}`` and ``*`` as ``}`` followed by the byte XOR 0x20."""
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it, 0) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


class Disconnected(Exception):
    """The debugger closed the connection."""


class RspConnection:
    """One debugger connection: reads packets and interrupt bytes, sends replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ack = True
        self._buf = bytearray()
        self.interrupted = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, timeout: float | None) -> bool:
        """Read what the socket has (waiting up to ``timeout``; None waits for ever)."""
        if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
            return False
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            raise Disconnected()
        self._buf += data
        return True

    def poll_interrupt(self) -> bool:
        """While the guest runs: has the debugger sent 0x03 (Ctrl-C)? Never blocks; other
        bytes stay buffered for the next ``read_packet``."""
        while self._fill(0):
            pass
        i, start = self._buf.find(INTERRUPT), self._buf.find(b"$")
        if i >= 0 and (start < 0 or i < start):      # not a byte of a (binary) packet
            del self._buf[i]
            self.interrupted = True
        return self.interrupted

    def read_packet(self) -> bytes:
        """The next packet's payload (blocking); acks it in ack mode. An interrupt byte met
        while stopped only sets ``interrupted`` (a stopped guest has nothing to interrupt)."""
        while True:
            while self._buf and self._buf[0] != ord("$"):
                if self._buf[0] == INTERRUPT:
                    self.interrupted = True
                del self._buf[0]                  # acks (+/-) and noise before a packet
            end = self._buf.find(b"#")
            if self._buf and end >= 0 and len(self._buf) >= end + 3:
                payload = bytes(self._buf[1:end])
                good = self._buf[end + 1:end + 3].lower() == checksum(payload)
                del self._buf[:end + 3]
                if self.ack:
                    self.sock.sendall(b"+" if good else b"-")
                if good or not self.ack:
                    return payload
                continue
            self._fill(None)

    def send(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.sock.sendall(b"$" + payload + b"#" + checksum(payload))
