"""The GDB remote stub, packet by packet, driven by a tiny protocol client on a thread (the
machine itself runs on the test's thread, as it does under ``ftemu gdb``)."""
from __future__ import annotations

import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu.gdbproto import checksum, escape_binary
from emu.gdbregs import BY_NAME, REGS
from emu.gdbstub import GdbServer
from ftrace import FtraceOps


class Client:
    """Just enough of gdb's side: send a packet, read the reply, ack in ack mode."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, payload: bytes | str) -> None:
        p = payload.encode("latin-1") if isinstance(payload, str) else payload
        self.sock.sendall(b"$" + p + b"#" + checksum(p))

    def reply(self) -> str:
        while True:
            start, end = self.buf.find(b"$"), self.buf.find(b"#")
            if start >= 0 and end > start and len(self.buf) >= end + 3:
                payload = self.buf[start + 1:end]
                assert self.buf[end + 1:end + 3] == checksum(payload)
                self.buf = self.buf[end + 3:]
                self.sock.sendall(b"+")
                return payload.decode("latin-1")
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stub closed the connection")
            self.buf += data

    def ask(self, payload: bytes | str) -> str:
        self.send(payload)
        return self.reply()

    def ask_all(self, payload: str) -> list[str]:
        """A reply preceded by console ``O`` packets: all of them."""
        self.send(payload)
        out = [self.reply()]
        while out[-1].startswith("O") and out[-1] != "OK":
            out.append(self.reply())
        return out

    def reg(self, name: str) -> int:
        return int.from_bytes(bytes.fromhex(self.ask(f"p{BY_NAME[name]:x}")), "little")


def session(m, script, sessions: int = 1):
    """Serve ``m`` on the test's thread while ``script(client, server)`` runs on another;
    returns what the script returned and the server's exit reason."""
    server = GdbServer(m, 0)
    result: dict = {}

    def client_side() -> None:
        try:
            result["value"] = script(Client(server.port), server)
        except BaseException as e:     # noqa: BLE001 - re-raised on the test's thread
            result["error"] = e
    t = threading.Thread(target=client_side)
    t.start()
    try:
        reason = server.serve(sessions)
    finally:
        server.close()
        t.join(30)
    if "error" in result:
        raise result["error"]
    return result.get("value"), reason


@pytest.fixture
def m(booted_snapshots):
    return booted_snapshots(2)


def test_qsupported_and_target_xml_describe_every_register(m):
    def script(c, _):
        feats = c.ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
        xml, off = "", 0
        while True:                                 # read in small pieces, as gdb may
            r = c.ask(f"qXfer:features:read:target.xml:{off:x},200")
            xml += r[1:]
            off += len(r) - 1
            if r[0] == "l":
                break
        regs = c.ask("g")
        c.ask("D")
        return feats, xml, regs
    (feats, xml, regs), _ = session(m, script)
    assert "qXfer:features:read+" in feats and "swbreak+" in feats and "vContSupported+" in feats
    root = ET.fromstring(xml)
    assert root.find("architecture").text == "i386:x86-64"
    names = [r.get("name") for r in root.iter("reg")]
    assert names[:17] == ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                          *[f"r{i}" for i in range(8, 16)], "rip"]
    for needed in ("cs", "ss", "ds", "es", "fs", "gs", "fs_base", "gs_base", "cr3"):
        assert needed in names
    features = {f.get("name") for f in root.iter("feature")}
    assert {"org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments"} <= features
    assert len(bytes.fromhex(regs)) == sum(int(r.get("bitsize")) for r in root.iter("reg")) // 8


def test_every_vcpu_is_a_thread_with_its_state_and_task(booted_snapshots):
    m = booted_snapshots(4)

    def script(c, _):
        out = [c.ask("qfThreadInfo"), c.ask("qsThreadInfo"), c.ask("T4"), c.ask("T5"),
               bytes.fromhex(c.ask("qThreadExtraInfo,1")).decode(), c.ask("Hg3"), c.reg("rip")]
        c.ask("D")
        return out
    (threads, more, alive, dead, info, hg, rip), _ = session(m, script)
    assert (threads, more, alive, dead, hg) == ("m1,2,3,4", "l", "OK", "E01", "OK")
    assert info.startswith(f"CPU 0 {m.cpus[0].state}, task ")
    assert rip == m.cpus[2].rip()


def test_registers_read_as_the_vcpu_has_them_and_write_back(m):
    cpu = m.cpus[0]
    before_rax, cs = cpu.regs.read(REGS[0].uc), REGS[BY_NAME["cs"]]

    def script(c, _):
        out = {n: c.reg(n) for n in ("rax", "rip", "rsp", "cs", "gs_base", "cr3")}
        out["P rax"] = c.ask(f"P{BY_NAME['rax']:x}=" + (0x1122334455667788).to_bytes(8, "little").hex())
        out["rax after"] = c.reg("rax")
        out["P cs"] = c.ask(f"P{BY_NAME['cs']:x}=" + (0x33).to_bytes(4, "little").hex())
        out["P rax short"] = c.ask(f"P{BY_NAME['rax']:x}=0011")
        c.ask(f"P{BY_NAME['rax']:x}=" + before_rax.to_bytes(8, "little").hex())
        c.ask("D")
        return out
    out, _ = session(m, script)
    assert out["rip"] == cpu.rip() and out["rsp"] == cpu.stack_pointer() and out["cr3"] == cpu.cr3()
    assert out["cs"] == cpu.uc.reg_read(cs.uc)
    assert out["gs_base"] == cpu.uc.reg_read(REGS[BY_NAME["gs_base"]].uc)
    assert (out["P rax"], out["rax after"]) == ("OK", 0x1122334455667788)
    assert out["P cs"] == "E01" and out["P rax short"] == "E01"
    assert cpu.regs.read(REGS[0].uc) == before_rax


def test_memory_reads_writes_and_refuses_unmapped_addresses(m):
    var = m.symbol_address("nr_cpus_present")
    text = m.symbol_address("schedule")

    def script(c, _):
        out = {"text": c.ask(f"m{text:x},10"), "unmapped": c.ask("m10,8"),
               "M": c.ask(f"M{var:x},4:2a000000")}
        out["after M"] = m.read(var, 4)
        out["X"] = c.ask(b"X%x,4:" % var + escape_binary(b"}#$*"))
        out["after X"] = m.read(var, 4)
        out["M unmapped"] = c.ask("M10,1:00")
        out["bad"] = c.ask("mzz,4")
        c.ask("D")
        return out
    before = m.read(var, 4)
    out, _ = session(m, script)
    m.write(var, before)
    assert bytes.fromhex(out["text"]) == m.read(text, 16)
    assert (out["unmapped"], out["M"], out["X"]) == ("E14", "OK", "OK")
    assert out["after M"] == b"\x2a\0\0\0" and out["after X"] == b"}#$*"
    assert (out["M unmapped"], out["bad"]) == ("E14", "E01")


def test_breakpoint_stops_every_vcpu_without_writing_int3_into_text(m):
    schedule = m.symbol_address("schedule")
    text = m.read(schedule, 16)

    def script(c, _):
        out = {"Z0": c.ask(f"Z0,{schedule:x},1"), "text while set": m.read(schedule, 16)}
        now = m.now
        out["stop"] = c.ask("vCont;c")
        out["rip"] = c.reg("rip")
        out["time moved"] = m.now > now
        out["other rips"] = [cpu.rip() for cpu in m.cpus]
        time.sleep(0.05)
        out["time while stopped"] = m.now
        out["z0"] = c.ask(f"z0,{schedule:x},1")
        c.ask("D")
        return out
    out, _ = session(m, script)
    assert out["Z0"] == "OK" and out["text while set"] == text
    tid = int(out["stop"].split("thread:")[1].split(";")[0], 16)
    assert out["stop"] == f"T05thread:{tid:x};swbreak:;"
    assert out["rip"] == schedule == m.cpus[tid - 1].rip() and out["time moved"]
    assert out["z0"] == "OK"


def test_breakpoint_and_ftrace_callback_share_a_patched_site(m):
    """ftrace has rewritten schedule's call site; the breakpoint there still stops, and the
    callback still runs once the guest goes on."""
    seen = []
    ops = FtraceOps(lambda ip, pip, op, regs: seen.append(ip))
    m.ftrace.ftrace_set_filter(ops, "schedule", True)
    m.ftrace.register_ftrace_function(ops)
    schedule = m.symbol_address("schedule")
    patched = m.read(schedule, 5)

    def script(c, _):
        c.ask(f"Z0,{schedule:x},1")
        stop = c.ask("c")
        calls_at_stop = len(seen)
        c.ask(f"z0,{schedule:x},1")
        c.ask("D")
        return stop, calls_at_stop
    (stop, calls_at_stop), _ = session(m, script, sessions=1)
    m.run(ms=5)
    m.ftrace.unregister_ftrace_function(ops)
    assert patched[0] == 0xE8 and "swbreak" in stop
    assert len(seen) > calls_at_stop


def test_a_host_call_from_a_callback_runs_through_breakpoints(m):
    """A breakpoint inside a function a callback runs with Machine.call does not stop that
    call half-way; the guest stops at the next breakpoint the guest itself reaches."""
    func = m.symbol_address("trace_selftest_dynamic_test_func")
    results = []
    ops = FtraceOps(lambda ip, pip, op, regs: results.append(m.call(func)))
    m.ftrace.ftrace_set_filter(ops, "schedule", True)
    m.ftrace.register_ftrace_function(ops)
    after_site = m.symbol_address("schedule") + 5

    def script(c, _):
        c.ask(f"Z0,{func:x},1")
        c.ask(f"Z0,{after_site:x},1")
        stop = c.ask("c")
        rip = c.reg("rip")
        c.ask(f"z0,{func:x},1")
        c.ask(f"z0,{after_site:x},1")
        c.ask("D")
        return stop, rip
    (stop, rip), _ = session(m, script)
    m.ftrace.unregister_ftrace_function(ops)
    assert "swbreak" in stop and rip == after_site and len(results) >= 1


def test_write_watchpoint_stops_after_each_store_once(m):
    var = m.symbol_address("nr_switches")

    def script(c, _):
        out = [c.ask(f"Z2,{var:x},8")]
        for _ in range(3):
            stop = c.ask("c")
            out.append((stop, struct.unpack("<Q", bytes.fromhex(c.ask(f"m{var:x},8")))[0]))
        c.ask(f"z2,{var:x},8")
        c.ask("D")
        return out
    start = struct.unpack("<Q", m.read(var, 8))[0]
    (ok, *hits), _ = session(m, script)
    assert ok == "OK"
    assert [value for _, value in hits] == [start + 1, start + 2, start + 3]
    for stop, _ in hits:
        assert stop.startswith("T05thread:") and stop.endswith(f"watch:{var:x};")


def test_single_step_runs_one_instruction_on_one_vcpu_and_time_stands_still(m):
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    schedule = m.symbol_address("schedule")

    def script(c, _):
        c.ask(f"Z0,{schedule:x},1")
        stop = c.ask("c")
        tid = int(stop.split("thread:")[1].split(";")[0], 16)
        c.ask(f"z0,{schedule:x},1")
        now, others = m.now, [cpu.rip() for cpu in m.cpus if cpu.index != tid - 1]
        steps = []
        for _ in range(3):
            pc = c.reg("rip")
            insn = next(md.disasm(m.read(pc, 16), pc))
            steps.append((insn.mnemonic, pc, c.ask(f"vCont;s:{tid:x}"), c.reg("rip")))
        out = (tid, steps, now == m.now, others == [cpu.rip() for cpu in m.cpus if cpu.index != tid - 1])
        c.ask("D")
        return out
    (tid, steps, still, others_still), _ = session(m, script)
    mnemonics = [s[0] for s in steps]
    assert mnemonics == ["nop", "push", "mov"]            # schedule's site, then its prologue
    for _, pc, stop, after in steps:
        assert stop == f"T05thread:{tid:x};" and after > pc
    assert steps[0][3] == schedule + 5 and steps[1][3] == schedule + 6
    assert still and others_still


def test_ctrl_c_interrupts_a_running_guest(m):
    def script(c, _):
        c.send("c")
        time.sleep(0.2)
        c.sock.sendall(b"\x03")
        stop = c.reply()
        c.ask("D")
        return stop
    now = m.now
    stop, _ = session(m, script)
    assert stop.startswith("T02thread:") and m.now > now


def test_detach_leaves_the_guest_running_and_kill_ends_the_server(m):
    times = []

    def script(c, server):
        times.append(m.now)
        assert c.ask("D") == "OK"
        time.sleep(0.2)                          # the guest runs meanwhile
        c2 = Client(server.port)
        times.append(m.now)
        assert c2.ask("?").startswith("T02thread:")
        c2.send("k")
        return server.running
    running, reason = session(m, script, sessions=None)
    assert running and reason == "killed" and times[1] > times[0]


def test_a_guest_panic_stops_with_sigabrt_and_its_message_then_the_target_exits(m):
    """gdb sends the guest into panic("console=ttyS0") by setting RIP and RDI."""
    def script(c, _):
        c.ask("Hg1")
        c.ask(f"P{BY_NAME['rip']:x}=" + m.symbol_address("panic").to_bytes(8, "little").hex())
        c.ask(f"P{BY_NAME['rdi']:x}=" + m.symbol_address("saved_command_line").to_bytes(8, "little").hex())
        stop = c.ask_all("c")
        again = c.ask("c")
        c.ask("D")
        return stop, again
    (stop, again), _ = session(m, script)
    message = bytes.fromhex(stop[0][1:]).decode()
    assert message.startswith("guest panic: console=ttyS0 (CPU 0 at ")
    assert stop[1:] == ["T06thread:1;"] and again == f"W{m.exit_code & 0xFF:02x}"


def test_unknown_packets_get_the_empty_reply_and_only_loopback_is_served(m):
    def script(c, _):
        out = [c.ask("vMustReplyEmpty"), c.ask("qTStatus"), c.ask("Z9,0,1"), c.ask("QStartNoAckMode")]
        c.ask("D")
        return out
    out, _ = session(m, script)
    assert out == ["", "", "", "OK"]
    with pytest.raises(ValueError, match="loopback"):
        GdbServer(m, 0, host="0.0.0.0")
