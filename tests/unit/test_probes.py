"""Probes against tiny in-test peers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from dnslib import RR, DNSRecord

from imsso.drivers.local import probes

ADDRESS = "127.100.250.3"
Behaviour = Callable[[dict[str, str]], list[str]]  # request headers -> statuses to answer with


def parse_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def response(status: str, headers: dict[str, str], call_id: str | None = None) -> bytes:
    lines = [
        f"SIP/2.0 {status}",
        f"Via: {headers['via']}",
        f"From: {headers['from']}",
        f"To: {headers['to']};tag=peer",
        f"Call-ID: {call_id or headers['call-id']}",
        f"CSeq: {headers['cseq']}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Peer:
    """A UDP peer in a thread: records what it gets, answers with behaviour(headers)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDRESS, 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.behaviour, self.received = behaviour, list[bytes]()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            headers = parse_request(data)[1]
            for status in self.behaviour(headers):  # "other 500 ..." answers with another Call-ID
                call_id = "someone-else" if status.startswith("other ") else None
                self.sock.sendto(response(status.removeprefix("other "), headers, call_id), peer)

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def peer() -> Iterator[Callable[[Behaviour], Peer]]:
    made: list[Peer] = []

    def make(behaviour: Behaviour) -> Peer:
        made.append(Peer(behaviour))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_options_returns_the_final_status_of_our_call(peer: Callable[[Behaviour], Peer]) -> None:
    # A provisional answer and a final answer to another call come first: both must be skipped.
    p = peer(lambda _: ["100 Trying", "other 500 Server Error", "200 OK"])
    assert probes.sip_options(ADDRESS, p.port) == 200


def test_options_reports_a_failure_status(peer: Callable[[Behaviour], Peer]) -> None:
    p = peer(lambda _: ["404 Not Found"])
    assert probes.sip_options(ADDRESS, p.port) == 404


def test_options_request_is_well_formed(peer: Callable[[Behaviour], Peer]) -> None:
    p = peer(lambda _: ["200 OK"])
    assert probes.sip_options(ADDRESS, p.port) == 200
    assert len(p.received) == 1
    first, headers, body = parse_request(p.received[0])
    assert first == f"OPTIONS sip:{ADDRESS}:{p.port} SIP/2.0"
    assert headers["via"].startswith("SIP/2.0/UDP 127.") and ";branch=z9hG4bK" in headers["via"]
    assert ";tag=" in headers["from"] and headers["to"] == f"<sip:{ADDRESS}:{p.port}>"
    assert headers["cseq"] == "1 OPTIONS" and headers["max-forwards"] == "70"
    assert headers["call-id"] and headers["content-length"] == "0" and body == b""
    # A second probe is a new call and a new transaction.
    assert probes.sip_options(ADDRESS, p.port) == 200
    second = parse_request(p.received[1])[1]
    assert second["call-id"] != headers["call-id"] and second["via"] != headers["via"]


@pytest.mark.parametrize(
    "statuses", [[], ["180 Ringing"], ["other 200 OK"]], ids=["silent", "provisional-only", "other-call"]
)
def test_options_times_out_to_none(peer: Callable[[Behaviour], Peer], statuses: list[str]) -> None:
    p = peer(lambda _: statuses)
    started = time.monotonic()
    assert probes.sip_options(ADDRESS, p.port, timeout=0.3) is None
    assert 0.25 < time.monotonic() - started < 1.5
    assert len(p.received) == 1


def test_options_to_nobody_is_none() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ADDRESS, 0))
        port = sock.getsockname()[1]
    assert probes.sip_options(ADDRESS, port, timeout=0.3) is None


def test_dns_query_ignores_a_wrong_id_and_times_out_to_none() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ADDRESS, 0))

        def answer_wrong_then_right(right: bool) -> None:
            data, peer = sock.recvfrom(65535)
            reply = DNSRecord.parse(data).reply()
            reply.add_answer(*RR.fromZone("x.ims.test. 60 A 127.0.0.9"))
            if not right:
                reply.header.id ^= 1
            sock.sendto(reply.pack(), peer)

        for right, expected in ((False, None), (True, ["127.0.0.9"])):
            thread = threading.Thread(target=answer_wrong_then_right, args=(right,))
            thread.start()
            assert probes.dns_query(ADDRESS, sock.getsockname()[1], "x.ims.test", timeout=0.3) == expected
            thread.join(2)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_port_free_sees_a_bound_socket(protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind((ADDRESS, 0))
    if protocol == "tcp":
        sock.listen(1)
    port = sock.getsockname()[1]
    assert probes.port_free(ADDRESS, port, protocol) is False
    sock.close()
    assert probes.port_free(ADDRESS, port, protocol) is True


def test_port_free_udp_refuses_to_share_with_a_reusable_socket() -> None:
    # Two UDP sockets with SO_REUSEADDR may share a port on Linux: the probe must not set it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ADDRESS, 0))
        assert probes.port_free(ADDRESS, sock.getsockname()[1], "udp") is False


def test_port_free_tcp_ignores_time_wait() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        # As servers do (Kamailio too): Linux lets a TIME_WAIT be reused only if its owner allowed it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ADDRESS, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = socket.create_connection((ADDRESS, port))
        conn, _ = listener.accept()
        conn.close()  # the server side closes first: its end of the port goes to TIME_WAIT
        client.recv(1)
        client.close()
    time.sleep(0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:  # the test's own premise
        with pytest.raises(OSError):
            plain.bind((ADDRESS, port))
    assert probes.port_free(ADDRESS, port, "tcp") is True
