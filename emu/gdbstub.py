"""A GDB remote stub for the machine: ``gdb kernel.elf -ex 'target remote :1234'``.

All-stop: gdb sees every vCPU as a thread (thread id = CPU number + 1) and the whole machine
stops together, so virtual time stands still while gdb looks. The machine runs on the thread
that serves the socket, in its usual rounds; between rounds the stub polls the socket for
Ctrl-C. Nothing else touches Unicorn meanwhile.

Breakpoints are Unicorn code hooks at the address, never ``int3`` bytes: ftrace rewrites call
sites in kernel text with its own int3 protocol, and the two must not fight over the bytes
(a breakpoint on a site being patched still stops, as the hook fires for whatever instruction
is there). Watchpoints are memory hooks that stop the vCPU after the accessing instruction
completed, as x86 debug registers trap. A single step runs one instruction on the stepped
vCPU alone, with no interrupt delivery and no time passing (QEMU's default step flags);
stepping a vCPU that waits in ``hlt`` runs the machine until it executes one instruction.
"""
from __future__ import annotations

import select
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from unicorn import UC_HOOK_CODE

from . import gdbregs
from .cpu import RUNNING, STOPPED
from .errors import EmuError
from .gdbproto import Disconnected, RspConnection, escape_binary, unescape_binary
from .gdbwatch import WATCH_KINDS, Watchpoint
from .paging import PageFault

if TYPE_CHECKING:
    from .cpu import VCpu
    from .machine import Machine

SIGINT, SIGILL, SIGTRAP, SIGABRT, SIGSEGV = 2, 4, 5, 6, 11
LOOPBACK = ("127.0.0.1", "::1", "localhost")
RUN_CHUNK_NS = 10_000_000          # run() calls while resumed; the socket is polled every round
FEATURES = ("PacketSize=4000;qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;"
            "vContSupported+")


@dataclass
class StopEvent:
    """Why the machine stopped: a stop reply's signal, thread and extra fields."""
    cpu: int
    signal: int = SIGTRAP
    extra: str = ""
    exit_code: int | None = None

    def reply(self) -> str:
        if self.exit_code is not None:
            return f"W{self.exit_code & 0xFF:02x}"
        return f"T{self.signal:02x}thread:{self.cpu + 1:x};{self.extra}"


class GdbServer:
    """Serves gdb on ``host:port`` (loopback only; port 0 picks a free one, see ``port``)."""

    def __init__(self, machine: "Machine", port: int = 1234, host: str = "127.0.0.1",
                 log: Callable[[str], None] | None = None) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"the GDB stub listens on loopback only, not {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        self.m = machine
        for c in machine.cpus:            # single steps and watchpoints stop per instruction
            c.set_precise(True)
        self.listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                             else socket.AF_INET)
        self.port = self.listener.getsockname()[1]
        self.log = log or (lambda msg: None)
        self.conn: RspConnection | None = None
        self.running = False              # the guest runs while no debugger holds it
        self.breakpoints: dict[int, object] = {}
        self.watchpoints: dict[tuple[int, int, int], Watchpoint] = {}
        self._events: list[StopEvent] = []
        self._last = StopEvent(0)
        self._gthread = self._cthread = 0
        self._step_cpu: int | None = None

    # ---- sessions -------------------------------------------------------------------
    def close(self) -> None:
        self._drop_session()
        self.listener.close()
        for c in self.m.cpus:
            c.set_precise(False)

    def serve(self, sessions: int | None = None) -> str:
        """Serve debugger sessions one after another; the guest runs between them if the last
        one detached. Returns ``"killed"`` when gdb kills the target, ``"sessions"`` after
        ``sessions`` sessions ended."""
        done = 0
        try:
            while sessions is None or done < sessions:
                sock = self._accept()
                self.conn = RspConnection(sock)
                self.log(f"gdb connected from {sock.getpeername()[0]}")
                killed = self._session()
                self._drop_session()
                done += 1
                if killed:
                    return "killed"
            return "sessions"
        finally:
            self._drop_session()

    def _accept(self) -> socket.socket:
        """Wait for a debugger; meanwhile run the guest if it was left running."""
        self.listener.setblocking(False)
        try:
            while True:
                try:
                    sock, _ = self.listener.accept()
                    sock.setblocking(True)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._last = StopEvent(self._last.cpu, SIGINT) if self.running else self._last
                    return sock
                except BlockingIOError:
                    pass
                if self.running and self.m.exit_code is None:
                    try:
                        self.m._run(self.m.now + RUN_CHUNK_NS, self._listener_ready)
                    except EmuError as e:
                        self.running = False
                        self._last = self._error_event(e)
                        self.log(str(e))
                else:
                    select.select([self.listener], [], [])
        finally:
            self.listener.setblocking(True)

    def _listener_ready(self) -> bool:
        return bool(select.select([self.listener], [], [], 0)[0])

    def _drop_session(self) -> None:
        for hook in self.breakpoints.values():
            hook.remove()
        for wp in self.watchpoints.values():
            wp.remove()
        self.breakpoints.clear()
        self.watchpoints.clear()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _session(self) -> bool:
        """Answer packets until detach (False), kill (True) or disconnect (False)."""
        conn = self.conn
        try:
            while True:
                packet = conn.read_packet()
                reply = self._dispatch(packet)
                if reply is _DETACH:
                    conn.send("OK")
                    self.running = True
                    self.log("gdb detached; the guest runs on")
                    return False
                if reply is _KILL:
                    if packet.startswith(b"vKill"):
                        conn.send("OK")
                    self.log("gdb killed the target")
                    return True
                conn.send(reply)
                if packet == b"QStartNoAckMode":
                    conn.ack = False
        except Disconnected:
            self.log("gdb disconnected")
            return False

    # ---- packets --------------------------------------------------------------------
    def _dispatch(self, packet: bytes) -> object:
        text = packet.decode("latin-1")
        head = text[:1]
        try:
            if head in "gGpPmMXHTZzcsCSDk?" and head:
                return getattr(self, f"_pkt_{_NAMES[head]}")(text[1:], packet)
            if text.startswith("vCont"):
                return self._vcont(text[5:])
            if text.startswith("vKill"):
                return _KILL
            if text.startswith(("q", "Q")):
                return self._query(text)
        except (ValueError, IndexError) as e:
            self.log(f"bad packet {text[:40]!r}: {e}")
            return "E01"
        return ""                         # unsupported: the empty reply

    def _query(self, text: str) -> str:
        if text.startswith("qSupported"):
            return FEATURES
        if text == "QStartNoAckMode":
            return "OK"
        if text.startswith("qXfer:features:read:target.xml:"):
            off, length = (int(x, 16) for x in text.rsplit(":", 1)[1].split(","))
            xml = gdbregs.target_xml().encode()
            chunk = xml[off:off + length]
            return ("l" if off + length >= len(xml) else "m") + escape_binary(chunk).decode("latin-1")
        if text == "qfThreadInfo":
            return "m" + ",".join(f"{c.index + 1:x}" for c in self.m.cpus)
        if text == "qsThreadInfo":
            return "l"
        if text == "qC":
            return f"QC{self._last.cpu + 1:x}"
        if text.startswith("qAttached"):
            return "1"                    # attached to a running system: quitting detaches
        if text.startswith("qThreadExtraInfo,"):
            return self._thread_info(self._cpu(int(text.split(",")[1], 16))).encode().hex()
        if text.startswith("qSymbol"):
            return "OK"
        return ""

    def _thread_info(self, cpu: "VCpu") -> str:
        """What ``info threads`` shows next to a vCPU: its state and current task."""
        desc = f"CPU {cpu.index} {cpu.state}"
        try:
            task = self.m.kernel.current(cpu.index)
            if task:
                pid, comm = self.m.kernel.task_name(task)
                desc += f", task {comm} (pid {pid})"
        except (LookupError, EmuError):
            pass
        return desc

    def _cpu(self, tid: int) -> "VCpu":
        """The vCPU of thread id ``tid`` (0 or -1: the current one)."""
        if tid in (0, -1):
            return self.m.cpus[self._last.cpu]
        if not 1 <= tid <= len(self.m.cpus):
            raise ValueError(f"no thread {tid}")
        return self.m.cpus[tid - 1]

    @staticmethod
    def _tid(text: str) -> int:
        return -1 if text == "-1" else int(text, 16)

    def _pkt_status(self, _args: str, _raw: bytes) -> str:
        return self._last.reply()

    def _pkt_set_thread(self, args: str, _raw: bytes) -> str:
        cpu = self._cpu(self._tid(args[1:]))
        if args[:1] == "g":
            self._gthread = cpu.index
        else:
            self._cthread = cpu.index
        return "OK"

    def _pkt_alive(self, args: str, _raw: bytes) -> str:
        self._cpu(self._tid(args))
        return "OK"

    def _pkt_regs(self, _args: str, _raw: bytes) -> str:
        return gdbregs.read_all(self.m.cpus[self._gthread]).hex()

    def _pkt_write_regs(self, args: str, _raw: bytes) -> str:
        cpu, data, pos, writes = self.m.cpus[self._gthread], bytes.fromhex(args), 0, []
        for num, reg in enumerate(gdbregs.REGS):
            if pos >= len(data):
                break
            chunk = data[pos:pos + reg.size]
            pos += reg.size
            why = gdbregs.check_write(cpu, num, chunk)
            if why:
                self.log(f"G refused: {why}")
                return "E01"
            writes.append((num, chunk))
        for num, chunk in writes:                 # all checked first: nothing half-written
            gdbregs.write_reg(cpu, num, chunk)
        return "OK"

    def _pkt_reg(self, args: str, _raw: bytes) -> str:
        num = int(args, 16)
        if not 0 <= num < len(gdbregs.REGS):
            return "E01"
        return gdbregs.read_reg(self.m.cpus[self._gthread], num).hex()

    def _pkt_write_reg(self, args: str, _raw: bytes) -> str:
        num_s, _, value = args.partition("=")
        cpu, num, data = self.m.cpus[self._gthread], int(num_s, 16), bytes.fromhex(value)
        why = gdbregs.check_write(cpu, num, data)
        if why:
            self.log(f"P refused: {why}")
            return "E01"
        gdbregs.write_reg(cpu, num, data)
        return "OK"

    # ---- memory ---------------------------------------------------------------------
    def _cr3(self) -> int:
        cpu = self.m.cpus[self._gthread]
        return self.m.kernel_cr3() if cpu.state == STOPPED else cpu.cr3()

    def _pkt_read_mem(self, args: str, _raw: bytes) -> str:
        addr, length = (int(x, 16) for x in args.split(","))
        out, cr3 = bytearray(), self._cr3()
        while length:                         # as much as is mapped, page by page
            chunk = min(length, 0x1000 - (addr & 0xFFF))
            try:
                out += self.m.walker.read(cr3, addr, chunk)
            except PageFault:
                break
            addr, length = addr + chunk, length - chunk
        return out.hex() if out or not length else "E14"

    def _write_mem(self, addr: int, data: bytes) -> str:
        cr3 = self._cr3()
        try:
            for page in range(addr & ~0xFFF, addr + len(data), 0x1000):
                self.m.walker.translate(cr3, page)            # all mapped, or nothing written
        except PageFault:
            return "E14"
        if data:
            self.m.walker.write(cr3, addr, data)
            self.m.invalidate_code(addr, len(data))
        return "OK"

    def _pkt_write_mem(self, args: str, _raw: bytes) -> str:
        where, _, hexdata = args.partition(":")
        addr, length = (int(x, 16) for x in where.split(","))
        data = bytes.fromhex(hexdata)
        return "E01" if len(data) != length else self._write_mem(addr, data)

    def _pkt_write_bin(self, _args: str, raw: bytes) -> str:
        where, _, payload = raw[1:].partition(b":")
        addr, length = (int(x, 16) for x in where.decode().split(","))
        data = unescape_binary(payload)
        return "E01" if len(data) != length else self._write_mem(addr, data)

    # ---- breakpoints and watchpoints ------------------------------------------------
    def _pkt_insert(self, args: str, _raw: bytes) -> str:
        kind, addr, length = (int(x, 16) for x in args.split(",")[:3])
        if kind in (0, 1):
            if addr not in self.breakpoints:
                self.breakpoints[addr] = self.m.add_code_hook(
                    addr, lambda cpu: self._break_hit(cpu, "hwbreak" if kind else "swbreak"))
            return "OK"
        if kind in WATCH_KINDS:
            if not self.m.deterministic:
                self.log("watchpoints need the deterministic mode (instruction counting)")
                return "E01"
            if length <= 0:
                return "E01"
            key = (kind, addr, length)
            if key not in self.watchpoints:
                try:
                    self.watchpoints[key] = Watchpoint(self.m, kind, addr, length, self._cr3(),
                                                       self._watch_hit)
                except PageFault:
                    return "E14"
            return "OK"
        return ""

    def _pkt_remove(self, args: str, _raw: bytes) -> str:
        kind, addr, length = (int(x, 16) for x in args.split(",")[:3])
        if kind in (0, 1):
            hook = self.breakpoints.pop(addr, None)
        elif kind in WATCH_KINDS:
            hook = self.watchpoints.pop((kind, addr, length), None)
        else:
            return ""
        if hook is not None:
            hook.remove()
        return "OK"

    def _break_hit(self, cpu: "VCpu", reason: str) -> None:
        if self._step_cpu == cpu.index or self.m._call_depth:
            # A step stops there anyway, as a step; and a host Machine.call (a callback's)
            # must run to its end: it cannot hand the machine to gdb half-way.
            return
        self._events.append(StopEvent(cpu.index, SIGTRAP, f"{reason}:;"))
        cpu.request_stop()

    def _watch_hit(self, cpu: "VCpu", name: str, addr: int) -> None:
        if self.m._call_depth:
            return
        self._events.append(StopEvent(cpu.index, SIGTRAP, f"{name}:{addr:x};"))
        cpu.stop_after_instruction()

    # ---- running --------------------------------------------------------------------
    def _pkt_continue(self, args: str, _raw: bytes) -> str:
        if args:
            self.m.cpus[self._cthread].regs.write(gdbregs.REGS[gdbregs.BY_NAME["rip"]].uc, int(args, 16))
        return self._resume(None)

    def _pkt_continue_sig(self, args: str, _raw: bytes) -> str:
        return self._resume(None)         # signals mean nothing to a bare-metal guest

    def _pkt_step(self, args: str, _raw: bytes) -> str:
        if args:
            self.m.cpus[self._cthread].regs.write(gdbregs.REGS[gdbregs.BY_NAME["rip"]].uc, int(args, 16))
        return self._resume(self._cthread)

    def _pkt_step_sig(self, args: str, _raw: bytes) -> str:
        return self._resume(self._cthread)

    def _vcont(self, args: str) -> str:
        if args == "?":
            return "vCont;c;C;s;S"
        step = None
        for action in args.lstrip(";").split(";"):
            verb, _, thread = action.partition(":")
            if verb[:1] in "sS":
                step = self._cpu(self._tid(thread)).index if thread else self._cthread
                break
        return self._resume(step)

    def _pkt_detach(self, _args: str, _raw: bytes) -> object:
        return _DETACH

    def _pkt_kill(self, _args: str, _raw: bytes) -> object:
        return _KILL

    def _resume(self, step: int | None) -> str:
        """Run (or step vCPU ``step``) until something stops the machine; the stop reply."""
        if self.m.exit_code is not None:
            return StopEvent(0, exit_code=self.m.exit_code).reply()
        self._events.clear()
        self.conn.interrupted = False
        try:
            event = self._step(self.m.cpus[step]) if step is not None else self._run()
        except EmuError as e:
            event = self._error_event(e)
            self.conn.send("O" + (str(e) + "\n").encode().hex())
        self._last = event
        self._gthread = self._cthread = event.cpu
        return event.reply()

    def _run(self) -> StopEvent:
        m = self.m
        while True:
            m._run(m.now + RUN_CHUNK_NS, self._should_stop)
            if self._events:
                return self._events[0]
            if self.conn.interrupted:
                return StopEvent(self._cthread, SIGINT)
            if m.exit_code is not None:
                return StopEvent(0, exit_code=m.exit_code)

    def _should_stop(self) -> bool:
        return bool(self._events) or self.conn.poll_interrupt()

    def _step(self, cpu: "VCpu") -> StopEvent:
        """One instruction on ``cpu``; the others stay where they are."""
        self._step_cpu = cpu.index
        try:
            if cpu.state == RUNNING:
                cpu.run_slice(self.m.now, 1)
                return next((e for e in self._events if e.cpu == cpu.index), StopEvent(cpu.index))
            return self._step_waiting(cpu)
        finally:
            self._step_cpu = None

    def _step_waiting(self, cpu: "VCpu") -> StopEvent:
        """Step a vCPU that waits (``hlt``, or not started): run the machine until it executes
        its first instruction, and stop it there."""
        def first(uc, addr, size, ud) -> None:
            self._events.append(StopEvent(cpu.index))
            cpu.request_stop()
        h = cpu.uc.hook_add(UC_HOOK_CODE, first, None, 1, 0)
        cpu.uc.ctl_flush_tb()
        try:
            return self._run()
        finally:
            cpu.hook_del(h)
            cpu.uc.ctl_flush_tb()

    @staticmethod
    def _error_event(e: EmuError) -> StopEvent:
        from .errors import GuestPanic
        return StopEvent(e.cpu or 0, SIGABRT if isinstance(e, GuestPanic) else SIGSEGV)


_DETACH, _KILL = object(), object()
_NAMES = {"?": "status", "H": "set_thread", "T": "alive", "g": "regs", "G": "write_regs",
          "p": "reg", "P": "write_reg", "m": "read_mem", "M": "write_mem", "X": "write_bin",
          "Z": "insert", "z": "remove", "c": "continue", "C": "continue_sig", "s": "step",
          "S": "step_sig", "D": "detach", "k": "kill"}
