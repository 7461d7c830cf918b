"""The zone's DNS server as a real process on a loopback address and a high port."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from dns_payloads import KILLERS, ODD_NAMES, QUERY_ID
from imsso.dns.server import MAX_QUERY, TCP_CONNECTIONS
from imsso.drivers.local import probes

ADDRESS = "127.100.250.2"
DOMAIN = "ims.test"
NAPTR_TEXT = '10 50 "s" "SIP+D2U" "" _sip._udp.ims.test.'


def record(name: str, rtype: str, value: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": rtype, "value": value, "ttl": 60, **extra}


ZONE: dict[str, Any] = {
    "domain": DOMAIN,
    "records": [
        record("pcscf-1.ims.test", "A", "127.100.0.10"),
        record("scscf-1.ims.test", "A", "127.100.0.11"),
        record("_sip._udp.ims.test", "SRV", "pcscf-1.ims.test", priority=10, weight=10, port=5060),
        record(
            "ims.test",
            "NAPTR",
            order=10,
            preference=50,
            flags="s",
            service="SIP+D2U",
            regexp="",
            replacement="_sip._udp.ims.test",
        ),
        *[record("big.ims.test", "A", f"127.100.1.{i}") for i in range(1, 41)],  # > 512 bytes
    ],
}


def free_port(start: int = 15353) -> int:
    for port in range(start, start + 200):
        if probes.port_free(ADDRESS, port, "udp") and probes.port_free(ADDRESS, port, "tcp"):
            return port
    raise RuntimeError(f"no free port on {ADDRESS} from {start}")


def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@dataclass
class Dns:
    proc: subprocess.Popen[bytes]
    port: int
    zone: Path
    log: Path
    pidfile: Path

    def ask(self, name: str, rtype: str = "A", tcp: bool = False) -> DNSRecord:
        query = DNSRecord.question(name, rtype)
        return DNSRecord.parse(query.send(ADDRESS, self.port, tcp=tcp, timeout=2))

    def settled(self) -> bool:
        return "serving" in self.log.read_text() or self.proc.poll() is not None

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def hup_and_wait(self, marker: str) -> None:
        before = self.log.read_text().count(marker)
        self.proc.send_signal(signal.SIGHUP)
        assert until(lambda: self.log.read_text().count(marker) > before), self.log.read_text()


def spawn(tmp_path: Path, port: int, zone: Any = ZONE, name: str = "dns", *extra: str) -> Dns:
    zone_path, log = tmp_path / f"{name}.zone.json", tmp_path / f"{name}.log"
    zone_path.write_text(json.dumps(zone) if not isinstance(zone, str) else zone)
    pidfile = tmp_path / f"{name}.pid"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imsso.dns.server",
                "--zone",
                str(zone_path),
                "--listen",
                ADDRESS,
                "--port",
                str(port),
                "--pidfile",
                str(pidfile),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Dns(proc, port, zone_path, log, pidfile)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serving(tmp_path: Path, *extra: str) -> Dns:
    """A started server; a port taken between our check and its bind (a parallel run) means another try."""
    port = 15353
    for _ in range(5):
        server = spawn(tmp_path, port := free_port(port), ZONE, "dns", *extra)
        assert until(server.settled)
        if server.proc.poll() is None:
            return server
        assert server.proc.wait() == 2, server.log.read_text()
        port += 1
    raise AssertionError(f"no port to serve on: {server.log.read_text()}")


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dns]:
    server = serving(tmp_path)
    try:
        yield server
    finally:
        stop(server.proc)


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


TRANSPORTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


@TRANSPORTS
def test_a_srv_naptr(dns: Dns, tcp: bool) -> None:
    for name, rtype, expected in [
        ("pcscf-1.ims.test", "A", ["127.100.0.10"]),
        ("_sip._udp.ims.test", "SRV", ["10 10 5060 pcscf-1.ims.test."]),
        ("ims.test", "NAPTR", [NAPTR_TEXT]),
    ]:
        reply = dns.ask(name, rtype, tcp)
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
        assert answers(reply) == expected
        assert probes.dns_query(ADDRESS, dns.port, name, rtype, tcp=tcp) == expected


def test_srv_carries_target_address(dns: Dns) -> None:
    reply = dns.ask("_sip._udp.ims.test", "SRV")
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [("pcscf-1.ims.test.", "127.100.0.10")]


@TRANSPORTS
def test_unknown_name_in_domain_is_nxdomain_with_soa(dns: Dns, tcp: bool) -> None:
    reply = dns.ask("nobody.ims.test", "A", tcp)
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.aa == 1 and not reply.rr
    assert [(rr.rtype, str(rr.rname), str(rr.rdata.mname)) for rr in reply.auth] == [
        (QTYPE.SOA, "ims.test.", "ns.ims.test.")
    ]
    assert probes.dns_query(ADDRESS, dns.port, "nobody.ims.test", tcp=tcp) == []


@TRANSPORTS
@pytest.mark.parametrize("name", ["example.com", "xims.test", "test"])
def test_outside_the_domain_is_refused(dns: Dns, tcp: bool, name: str) -> None:
    reply = dns.ask(name, "A", tcp)
    assert reply.header.rcode == RCODE.REFUSED and reply.header.aa == 0 and not reply.rr


def test_known_name_other_type_is_empty_noerror(dns: Dns) -> None:
    for name, rtype in [
        ("pcscf-1.ims.test", "AAAA"),
        ("pcscf-1.ims.test", "SRV"),
        ("_udp.ims.test", "A"),
    ]:  # the last: an empty non-terminal
        reply = dns.ask(name, rtype)
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1 and not reply.rr, name
        assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]


def test_apex_soa_and_ns(dns: Dns) -> None:
    soa = dns.ask("ims.test", "SOA")
    assert soa.header.rcode == RCODE.NOERROR and soa.header.aa == 1
    assert [str(rr.rdata.mname) for rr in soa.rr] == ["ns.ims.test."]
    assert answers(dns.ask("ims.test", "NS")) == ["ns.ims.test."]
    # What the local driver's readiness probe asks.
    assert probes.dns_query(ADDRESS, dns.port, "ns.ims.test") == [ADDRESS]


def test_names_are_case_insensitive(dns: Dns) -> None:
    reply = dns.ask("PCSCF-1.Ims.TEST", "A")
    assert answers(reply) == ["127.100.0.10"]
    assert str(reply.rr[0].rname) == "PCSCF-1.Ims.TEST."  # echoes the question's spelling


def test_large_answer_is_truncated_over_udp_only(dns: Dns) -> None:
    udp = dns.ask("big.ims.test", "A")
    assert udp.header.tc == 1 and not udp.rr
    assert len(dns.ask("big.ims.test", "A", tcp=True).rr) == 40
    assert len(probes.dns_query(ADDRESS, dns.port, "big.ims.test") or []) == 40  # falls back to TCP


def test_several_queries_on_one_tcp_connection(dns: Dns) -> None:
    queries = [DNSRecord.question(name) for name in ("pcscf-1.ims.test", "scscf-1.ims.test")]
    with socket.create_connection((ADDRESS, dns.port), timeout=2) as conn:
        conn.sendall(b"".join(len(q.pack()).to_bytes(2, "big") + q.pack() for q in queries))
        stream = conn.makefile("rb")
        replies = [DNSRecord.parse(stream.read(int.from_bytes(stream.read(2), "big"))) for _ in queries]
    assert [(r.header.id, answers(r)) for r in replies] == [
        (queries[0].header.id, ["127.100.0.10"]),
        (queries[1].header.id, ["127.100.0.11"]),
    ]


def test_garbage_does_not_stop_the_server(dns: Dns) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"\x00", b"\xff" * 12, b"\x12\x34" + b"\x01" * 40):
            sock.sendto(junk, (ADDRESS, dns.port))
    with socket.create_connection((ADDRESS, dns.port), timeout=2) as conn:
        conn.sendall(b"\x00\x05abc")  # a TCP length prefix promising more than is sent, then EOF
    assert answers(dns.ask("pcscf-1.ims.test")) == ["127.100.0.10"]
    assert dns.proc.poll() is None


def test_quiet_per_query(dns: Dns) -> None:
    for _ in range(5):
        dns.ask("pcscf-1.ims.test")
        dns.ask("nobody.ims.test", tcp=True)
    assert len(dns.lines()) == 1 and "serving ims.test" in dns.lines()[0]


def test_sighup_loads_the_new_zone(dns: Dns) -> None:
    zone = json.loads(dns.zone.read_text())
    zone["records"] = [r for r in zone["records"] if r["name"] != "scscf-1.ims.test"]
    zone["records"].append(record("scscf-2.ims.test", "A", "127.100.0.12"))
    dns.zone.write_text(json.dumps(zone))
    dns.hup_and_wait("reloaded")
    assert answers(dns.ask("scscf-2.ims.test")) == ["127.100.0.12"]
    assert dns.ask("scscf-1.ims.test").header.rcode == RCODE.NXDOMAIN


@pytest.mark.parametrize(
    "broken",
    [
        "{not json",
        json.dumps({"domain": DOMAIN, "records": [record("pcscf-1.other.test", "A", "127.100.0.10")]}),
        json.dumps({"domain": DOMAIN, "records": [record("pcscf-1.ims.test", "A", "not-an-address")]}),
        json.dumps({"records": []}),
    ],
    ids=["syntax", "outside", "bad-address", "no-domain"],
)
def test_sighup_with_a_broken_zone_keeps_the_old_one(dns: Dns, broken: str) -> None:
    dns.zone.write_text(broken)
    dns.hup_and_wait("reload failed")
    assert dns.proc.poll() is None
    assert answers(dns.ask("pcscf-1.ims.test")) == ["127.100.0.10"]


def test_port_in_use_exits_2(dns: Dns, tmp_path: Path) -> None:
    second = spawn(tmp_path, dns.port, name="second")
    try:
        assert second.proc.wait(5) == 2
    finally:
        stop(second.proc)
    message = second.log.read_text().strip()
    assert len(message.splitlines()) == 1
    assert f"{ADDRESS} port {dns.port}/udp" in message and "in use" in message
    assert not second.pidfile.exists()
    assert answers(dns.ask("pcscf-1.ims.test")) == ["127.100.0.10"]  # the first one goes on


def test_tcp_port_in_use_exits_2_and_frees_udp(tmp_path: Path) -> None:
    port = free_port(15453)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((ADDRESS, port))
        taken.listen(1)
        server = spawn(tmp_path, port)
        try:
            assert server.proc.wait(5) == 2
        finally:
            stop(server.proc)
    assert f"{ADDRESS} port {port}/tcp" in server.log.read_text()
    assert probes.port_free(ADDRESS, port, "udp")


def test_bad_zone_at_start_exits_1(tmp_path: Path) -> None:
    server = spawn(tmp_path, free_port(), zone="{not json")
    try:
        assert server.proc.wait(5) == 1
    finally:
        stop(server.proc)
    assert "cannot read" in server.log.read_text()


def test_sigterm_stops_cleanly_and_removes_the_pidfile(dns: Dns) -> None:
    assert dns.pidfile.read_text().strip() == str(dns.proc.pid)
    dns.proc.send_signal(signal.SIGTERM)
    assert dns.proc.wait(5) == 0
    assert not dns.pidfile.exists()
    assert dns.lines()[-1].endswith("stopped")
    assert probes.port_free(ADDRESS, dns.port, "udp") and probes.port_free(ADDRESS, dns.port, "tcp")


# ---- what an attacker sends ----


def exchange(port: int, data: bytes, tcp: bool) -> DNSRecord | None:
    """Send raw query bytes, return the parsed reply; None if the server closed the connection."""
    if tcp:
        with socket.create_connection((ADDRESS, port), timeout=2) as conn:
            try:
                conn.sendall(len(data).to_bytes(2, "big") + data)
                stream = conn.makefile("rb")
                head = stream.read(2)
            except ConnectionError:
                return None
            return DNSRecord.parse(stream.read(int.from_bytes(head, "big"))) if head else None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(data, (ADDRESS, port))
        return DNSRecord.parse(sock.recv(65535))


def closed_by_server(conns: list[socket.socket]) -> list[socket.socket]:
    """The connections the server has closed (readable at once, and reading gives end of stream)."""
    readable = select.select(conns, [], [], 0)[0]
    return [c for c in conns if c in readable and c.recv(1, socket.MSG_PEEK) == b""]


@TRANSPORTS
def test_killer_queries_get_an_error_and_the_server_goes_on(dns: Dns, tcp: bool) -> None:
    for name, data in KILLERS.items():
        reply = exchange(dns.port, data, tcp)
        if tcp and len(data) > MAX_QUERY:
            assert reply is None, name  # longer than a query: closed before it is read
            continue
        assert reply is not None, name
        expected = RCODE.NOTIMP if name.startswith("notify") else RCODE.FORMERR
        assert (reply.header.id, reply.header.rcode, reply.rr) == (QUERY_ID, expected, []), name
    assert answers(dns.ask("pcscf-1.ims.test", tcp=tcp)) == ["127.100.0.10"]
    assert dns.proc.poll() is None and len(dns.lines()) == 1  # and no log line per bad query


def test_odd_names_are_answered_without_matching_a_zone_name(dns: Dns) -> None:
    replies = {name: exchange(dns.port, data, False) for name, data in ODD_NAMES.items()}
    assert {name: reply.header.rcode for name, reply in replies.items()} == {
        "non-ascii-label": RCODE.NXDOMAIN,
        "binary-label": RCODE.NXDOMAIN,
        "dot-inside-label": RCODE.REFUSED,
    }  # labels [pcscf-1.ims, test]: not pcscf-1.ims.test
    assert all(not reply.rr for reply in replies.values())


def test_200_held_tcp_connections_stop_neither_udp_nor_a_new_tcp_query(dns: Dns) -> None:
    held = [socket.create_connection((ADDRESS, dns.port), timeout=2) for _ in range(200)]
    try:
        for conn in held[100:]:
            conn.sendall(b"\x00\x20\x12")  # a query begun, never finished
        assert answers(dns.ask("pcscf-1.ims.test")) == ["127.100.0.10"]
        assert answers(dns.ask("pcscf-1.ims.test", tcp=True)) == ["127.100.0.10"]
        # The server kept its limit by closing the connections silent the longest: the first ones.
        evicted = 200 + 1 - TCP_CONNECTIONS
        assert until(lambda: len(closed_by_server(held)) >= evicted)
        assert closed_by_server(held) == held[:evicted]
    finally:
        for conn in held:
            conn.close()
    assert dns.proc.poll() is None


def test_idle_tcp_connection_is_closed_and_a_busy_one_is_not(tmp_path: Path) -> None:
    server = serving(tmp_path, "--tcp-idle", "0.5")
    try:
        with (
            socket.create_connection((ADDRESS, server.port), timeout=2) as idle,
            socket.create_connection((ADDRESS, server.port), timeout=2) as busy,
        ):
            query = DNSRecord.question("pcscf-1.ims.test").pack()
            stream = busy.makefile("rb")
            for _ in range(8):  # 1.6 s of queries, 0.2 s apart
                busy.sendall(len(query).to_bytes(2, "big") + query)
                assert answers(DNSRecord.parse(stream.read(int.from_bytes(stream.read(2), "big")))) == ["127.100.0.10"]
                time.sleep(0.2)
            assert closed_by_server([idle, busy]) == [idle]
    finally:
        stop(server.proc)


@pytest.mark.parametrize("length", [MAX_QUERY + 1, 0xFFFF, 11, 0])
def test_tcp_message_length_no_query_has_closes_at_once(dns: Dns, length: int) -> None:
    with socket.create_connection((ADDRESS, dns.port), timeout=2) as conn:
        conn.sendall(length.to_bytes(2, "big") + b"\x00" * 11)
        assert until(lambda: closed_by_server([conn]) == [conn], timeout=3)  # well before the idle timeout
    assert answers(dns.ask("pcscf-1.ims.test", tcp=True)) == ["127.100.0.10"]


def test_client_that_never_reads_its_answers_holds_nothing_up(dns: Dns) -> None:
    query = DNSRecord.question("big.ims.test").pack()
    flood = (len(query).to_bytes(2, "big") + query) * 70000  # 2 MB of queries, 48 MB of answers
    rss = psutil.Process(dns.proc.pid).memory_info().rss
    with socket.create_connection((ADDRESS, dns.port), timeout=2) as conn:
        conn.setblocking(False)
        sent = 0
        while sent < len(flood):
            try:
                sent += conn.send(flood[sent:])
            except BlockingIOError:
                break  # the kernel's buffers are full
        # The server answers one query at a time and waits for the client to read it.
        assert psutil.Process(dns.proc.pid).memory_info().rss - rss < 16 * 2**20
        assert answers(dns.ask("pcscf-1.ims.test")) == ["127.100.0.10"]
        assert len(dns.ask("big.ims.test", tcp=True).rr) == 40
