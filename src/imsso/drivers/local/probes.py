"""Cheap liveness probes for local units: SIP OPTIONS, a DNS query, and whether a port is free."""

from __future__ import annotations

import secrets
import socket
import struct
import time

import httpx
from dnslib import QTYPE, DNSError, DNSRecord

RECV_MAX = 65535


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _options_request(address: str, port: int, local: tuple[str, int], call_id: str) -> bytes:
    here = f"{_host(local[0])}:{local[1]}"
    lines = [
        f"OPTIONS sip:{_host(address)}:{port} SIP/2.0",  # no user part: a keepalive for the server itself
        f"Via: SIP/2.0/UDP {here};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:imsso-probe@{here}>;tag={secrets.token_hex(6)}",
        f"To: <sip:{_host(address)}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "User-Agent: imsso-probe",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _final_status(data: bytes, call_id: str) -> int | None:
    """The status of a final response to our request; None for anything else."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i") and value.strip() == call_id:
            code = int(parts[1])
            return code if code >= 200 else None
    return None


def _wait_status(sock: socket.socket, call_id: str, deadline: float) -> int | None:
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(RECV_MAX)
        except (TimeoutError, ConnectionRefusedError):
            return None  # refused: nothing listens, and no answer will come
        if (code := _final_status(data, call_id)) is not None:
            return code
    return None


def sip_options(address: str, port: int = 5060, timeout: float = 1.0) -> int | None:
    """Status of the final response to one SIP OPTIONS over UDP; None without one in time."""
    deadline = time.monotonic() + timeout
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        # connect: the kernel picks the source address for Via, and drops datagrams from elsewhere.
        try:
            sock.connect((address, port))
            local = sock.getsockname()[:2]
            call_id = f"{secrets.token_hex(10)}@{_host(local[0])}"
            sock.send(_options_request(address, port, local, call_id))
        except OSError:
            return None
        return _wait_status(sock, call_id, deadline)


def _exchange_udp(sock: socket.socket, query: bytes, deadline: float) -> bytes | None:
    sock.send(query)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        data = sock.recv(RECV_MAX)
        if data[:2] == query[:2]:  # same id: ours, not a late answer to someone else
            return data
    return None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed mid-answer")
        data += chunk
    return data


def _exchange_tcp(sock: socket.socket, query: bytes, deadline: float) -> bytes:
    sock.sendall(struct.pack("!H", len(query)) + query)
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    return _recv_exact(sock, struct.unpack("!H", _recv_exact(sock, 2))[0])


def _exchange(address: str, port: int, query: bytes, tcp: bool, deadline: float) -> bytes | None:
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(_family(address), kind) as sock:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.connect((address, port))
        return _exchange_tcp(sock, query, deadline) if tcp else _exchange_udp(sock, query, deadline)


def dns_query(
    address: str, port: int, name: str, rtype: str = "A", timeout: float = 1.0, *, tcp: bool = False
) -> list[str] | None:
    """The answer section as text (empty for NXDOMAIN or no data); None when nothing answers in time.

    A truncated UDP answer is asked again over TCP, as a resolver would.
    """
    deadline = time.monotonic() + timeout
    query = DNSRecord.question(name, rtype.upper()).pack()
    try:
        data = _exchange(address, port, query, tcp, deadline)
        reply = DNSRecord.parse(data) if data is not None else None
        if reply is not None and reply.header.tc and not tcp:
            reply = DNSRecord.parse(_exchange(address, port, query, True, deadline))
    except (OSError, DNSError):  # timeout, refused, reset, garbage
        return None
    if reply is None:
        return None
    return [str(rr.rdata) for rr in reply.rr if rr.rtype != QTYPE.OPT]


def port_free(address: str, port: int, protocol: str) -> bool:
    """Whether a socket could bind address:port/protocol right now."""
    tcp = protocol.lower() == "tcp"
    with socket.socket(_family(address), socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        if tcp:  # ignore connections of a past owner lingering in TIME_WAIT, as a server would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            if tcp:
                sock.listen(1)  # two reusable sockets may share a bind; only one may listen
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers 200 within `timeout` (the HSS's status page)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
