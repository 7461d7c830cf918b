"""The HSS unit as a real process on 127.0.0.1: Diameter over TCP, SIGHUP, SIGTERM, /status."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imsso.hss.diameter import (
    APP_CX,
    CODE_CE,
    CODE_DW,
    CODE_SAR,
    CODE_UAR,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    VENDOR_3GPP,
    Framer,
    Message,
    avp,
    decode,
    encode,
)

ADDRESS = "127.0.0.1"
SCSCF = "sip:127.100.0.11:5060"
PEER = "icscf.ims.test"  # the Origin-Host request() sends, listed with ADDRESS
DATA: dict[str, Any] = {
    "realm": "ims.test",
    "scscfs": [SCSCF],
    "peers": [{"host": PEER, "address": ADDRESS}],
    "subscribers": [
        {
            "impi": "alice@ims.test",
            "impus": ["sip:alice@ims.test"],
            "password": "alicepw",
            "k": "465b5ce8b199b49faa5f0a2ee238a6bc",
            "opc": "cd63cb71954a9f4e48a5994e37a02baf",
        }
    ],
}
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


class Peer:
    """A Diameter client connection, as cdp would hold one."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((ADDRESS, port), timeout=5)
        self.framer = Framer()
        self.pending: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Message:
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the HSS")
            self.pending += self.framer.feed(chunk)
        return decode(self.pending.pop(0))

    def ask(self, msg: Message) -> Message:
        self.send_raw(encode(msg))
        return self.receive()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(code: int, *avps: Any, app: int = APP_CX) -> Message:
    n = next(_ids)
    head = [
        avp("Session-Id", f"icscf.ims.test;{n}"),
        avp("Origin-Host", "icscf.ims.test"),
        avp("Origin-Realm", "ims.test"),
    ]
    return Message(code, FLAG_R | (FLAG_P if app else 0), app, n, n, head + list(avps))


def cer() -> Message:
    return request(
        CODE_CE,
        avp("Host-IP-Address", ADDRESS),
        avp("Vendor-Id", VENDOR_3GPP),
        avp("Product-Name", "test"),
        avp("Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]),
        app=0,
    )


def uar(impi: str = "alice@ims.test", impu: str = "sip:alice@ims.test") -> Message:
    return request(CODE_UAR, avp("User-Name", impi), avp("Public-Identity", impu))


def experimental(ans: Message) -> int | None:
    er = ans.find("Experimental-Result")
    return None if er is None else er.get("Experimental-Result-Code")


@dataclass
class Unit:
    proc: subprocess.Popen[bytes]
    port: int
    status_port: int
    subscribers: Path
    log: Path
    pidfile: Path

    def peer(self) -> Peer:
        return Peer(self.port)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{ADDRESS}:{self.status_port}/status", timeout=5) as r:
            assert r.headers["Content-Type"] == "application/json"
            return json.loads(r.read())

    def text(self) -> str:
        return self.log.read_text()

    def hup_and_wait(self, marker: str) -> None:
        before = self.text().count(marker)
        self.proc.send_signal(signal.SIGHUP)
        assert until(lambda: self.text().count(marker) > before), self.text()


def spawn(tmp_path: Path, data: Any = DATA) -> Unit:
    subs, log, pidfile = tmp_path / "hss.json", tmp_path / "hss.log", tmp_path / "hss.pid"
    subs.write_text(json.dumps(data) if not isinstance(data, str) else data)
    port, status_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "imsso.hss.server",
        "--listen",
        ADDRESS,
        "--port",
        str(port),
        "--identity",
        "hss.ims.test",
        "--realm",
        "ims.test",
        "--subscribers",
        str(subs),
        "--status-port",
        str(status_port),
        "--pidfile",
        str(pidfile),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    unit = Unit(proc, port, status_port, subs, log, pidfile)
    until(lambda: "serving" in unit.text() or proc.poll() is not None)
    return unit


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = spawn(tmp_path)
    assert u.proc.poll() is None, u.text()
    yield u
    if u.proc.poll() is None:
        u.proc.terminate()
        try:
            u.proc.wait(10)
        except subprocess.TimeoutExpired:
            u.proc.kill()
            u.proc.wait()


def test_capabilities_exchange_then_uar(unit: Unit) -> None:
    peer = unit.peer()
    cea = peer.ask(cer())
    assert cea.get("Result-Code") == 2001 and cea.get("Origin-Host") == "hss.ims.test"
    vsai = cea.find("Vendor-Specific-Application-Id")
    assert (vsai.get("Vendor-Id"), vsai.get("Auth-Application-Id")) == (VENDOR_3GPP, APP_CX)
    req = uar()
    uaa = peer.ask(req)
    assert uaa.hop_by_hop == req.hop_by_hop and uaa.get("Session-Id") == req.get("Session-Id")
    assert experimental(uaa) == 2001 and uaa.get("Server-Name") == SCSCF
    dwa = peer.ask(request(CODE_DW, app=0))
    assert dwa.get("Result-Code") == 2001
    peer.close()


def test_pipelined_requests_split_across_writes(unit: Unit) -> None:
    peer = unit.peer()
    wire = encode(cer()) + b"".join(encode(uar()) for _ in range(5))
    for i in range(0, len(wire), 7):  # odd-sized pieces, headers cut in the middle
        peer.send_raw(wire[i : i + 7])
        time.sleep(0.001)
    answers = [peer.receive() for _ in range(6)]
    assert answers[0].code == CODE_CE
    assert [experimental(a) for a in answers[1:]] == [2001] * 5
    peer.close()


def test_unknown_command_and_bad_avp_get_error_answers(unit: Unit) -> None:
    peer = unit.peer()
    peer.ask(cer())
    ans = peer.ask(request(999, avp("User-Name", "x")))
    assert ans.flags & FLAG_E and ans.get("Result-Code") == 3001 and ans.code == 999
    good = encode(uar())
    bad = good + b"\x00\x00\x01\x0c\x40\x00\x00\x0b\x00\x00\x07\x00"  # Result-Code of 3 bytes
    bad = bad[:1] + len(bad).to_bytes(3, "big") + bad[4:]
    peer.send_raw(bad)
    ans = peer.receive()
    assert ans.get("Result-Code") == 5014 and ans.find("Failed-AVP") is not None
    assert experimental(peer.ask(uar())) == 2001  # the connection goes on
    peer.close()
    assert "undecodable message" in unit.text()


def test_garbage_closes_only_its_connection(unit: Unit) -> None:
    bystander = unit.peer()
    bystander.ask(cer())
    garbage = unit.peer()
    garbage.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert until(garbage.closed, 5)
    bad_length = unit.peer()  # a Diameter header whose length is not a multiple of 4: answered, closed
    bad_length.ask(cer())
    bad_length.send_raw(encode(uar())[:1] + (22).to_bytes(3, "big") + encode(uar())[4:20])
    ans = bad_length.receive()
    assert ans.get("Result-Code") == 5015
    assert until(bad_length.closed, 5)
    assert experimental(bystander.ask(uar())) == 2001
    fresh = unit.peer()
    assert fresh.ask(cer()).get("Result-Code") == 2001
    for p in (bystander, garbage, bad_length, fresh):
        p.close()
    assert unit.proc.poll() is None
    assert unit.status()["connections_closed_for_garbage"] == 2


def test_status_endpoint(unit: Unit) -> None:
    peer = unit.peer()
    peer.ask(cer())
    peer.ask(uar())
    peer.ask(uar("alice@ims.test", "sip:nobody@ims.test"))
    status = unit.status()
    assert status["requests"]["CER"] == {"DIAMETER_SUCCESS": 1}
    assert status["requests"]["UAR"] == {"DIAMETER_FIRST_REGISTRATION": 1, "DIAMETER_ERROR_USER_UNKNOWN": 1}
    assert status["subscribers"] == 1 and status["registered_impus"] == 0
    assert status["connections"] == 1 and status["pid"] == unit.proc.pid
    assert set(status["latency_ms"]) >= {"avg", "p99"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{ADDRESS}:{unit.status_port}/other", timeout=5)
    assert err.value.code == 404
    peer.close()


def test_sighup_reloads_and_keeps_connections_and_registrations(unit: Unit) -> None:
    peer = unit.peer()
    peer.ask(cer())
    saa = peer.ask(
        request(
            CODE_SAR,
            avp("User-Name", "alice@ims.test"),
            avp("Public-Identity", "sip:alice@ims.test"),
            avp("Server-Name", SCSCF),
            avp("Server-Assignment-Type", 1),
        )
    )
    assert saa.get("Result-Code") == 2001
    bob = {"impi": "bob@ims.test", "impus": ["sip:bob@ims.test"], "password": "bobpw"}
    unit.subscribers.write_text(json.dumps({**DATA, "subscribers": DATA["subscribers"] + [bob]}))
    unit.hup_and_wait("reloaded")
    assert experimental(peer.ask(uar("bob@ims.test", "sip:bob@ims.test"))) == 2001  # same connection
    assert experimental(peer.ask(uar())) == 2002  # alice is still registered
    assert unit.status()["subscribers"] == 2
    unit.subscribers.write_text("{not json")
    unit.hup_and_wait("reload refused")
    assert experimental(peer.ask(uar("bob@ims.test", "sip:bob@ims.test"))) == 2001  # old data kept
    assert unit.proc.poll() is None
    peer.close()


def test_sigterm_stops_cleanly(unit: Unit) -> None:
    peer = unit.peer()
    peer.ask(cer())
    assert unit.pidfile.read_text().strip() == str(unit.proc.pid)
    unit.proc.send_signal(signal.SIGTERM)
    assert unit.proc.wait(10) == 0
    assert not unit.pidfile.exists()
    assert until(peer.closed, 5)
    assert "stopped" in unit.text()
    peer.close()


def test_bad_subscribers_file_at_start(tmp_path: Path) -> None:
    u = spawn(tmp_path, '{"realm": "ims.test", "subscribers": [{"impi": "a"}]}')
    assert u.proc.wait(10) == 1
    assert "impus" in u.text()


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((ADDRESS, 0))
        busy.listen()
        port = busy.getsockname()[1]
        subs = tmp_path / "hss.json"
        subs.write_text(json.dumps(DATA))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "imsso.hss.server",
                "--listen",
                ADDRESS,
                "--port",
                str(port),
                "--subscribers",
                str(subs),
                "--status-port",
                "0",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 2 and "cannot bind" in done.stderr
