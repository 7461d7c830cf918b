"""A small authoritative DNS server for one IMS instance's domain, run as its own process.

    python -m imsso.dns.server --zone /abs/zone.json --listen 127.100.0.2 --port 53 [--pidfile F]

UDP and TCP are served by one loop without threads; a query that fails to parse or to answer gets
FORMERR, SERVFAIL or nothing, never an exception that stops the loop. SIGHUP re-reads the zone file
(a bad file keeps the old zone), SIGTERM/SIGINT stop.
Exit status: 0 after a signal, 1 for a bad zone file at start, 2 for a binding or usage error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import AAAA, EDNS0, NAPTR, NS, QTYPE, RCODE, RR, SOA, SRV, A, DNSHeader, DNSLabel, DNSRecord

PROG = "imsso-dns"
TTL_DEFAULT = 60
NEGATIVE_TTL = 60  # short: the orchestrator adds names at any time
UDP_PLAIN_MAX = 512
UDP_EDNS_MAX = 1232  # the usual EDNS buffer size that avoids IP fragmentation
TCP_MAX = 65535  # a TCP message's length is a 16-bit prefix
TCP_IDLE = 10.0  # seconds a connection may stay silent (RFC 7766 asks servers to close idle ones)
TCP_CONNECTIONS = 128  # above this, a new connection closes the one silent the longest
MAX_QUERY = 4096  # a query is one name and an OPT record: longer is not a query
LOG_EVERY = 10.0  # seconds between two lines about failed answers, so a flood cannot fill the disk
OPCODE_QUERY = 0
CLASS_IN, CLASS_ANY = 1, 255
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
RRSet = list[tuple[int, Any]]  # (ttl, rdata)


class ZoneError(Exception):
    """The zone file cannot be used."""


@dataclass(frozen=True)
class Zone:
    domain: str  # lower case, no trailing dot
    rrsets: dict[tuple[str, int], RRSet]
    names: frozenset[str]  # every name that exists, empty non-terminals included
    serial: int
    count: int  # records from the file, for the log line


def log(message: str) -> None:
    print(f"{PROG}[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


_throttle = {"next": 0.0, "quiet": 0}


def log_throttled(message: str) -> None:
    """At most one line per LOG_EVERY seconds, counting the lines left out."""
    now = time.monotonic()
    if now < _throttle["next"]:
        _throttle["quiet"] += 1
        return
    quiet, _throttle["quiet"], _throttle["next"] = _throttle["quiet"], 0, now + LOG_EVERY
    log(message + (f" ({quiet} more like it not logged)" if quiet else ""))


# ---- zone file ----


def norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _int(rec: dict[str, Any], key: str, default: int, top: int = 65535) -> int:
    value = rec.get(key, default)
    if type(value) is not int or not 0 <= value <= top:  # bool is an int: refuse it too
        raise ZoneError(f"'{key}' must be an integer from 0 to {top}, not {value!r}")
    return value


def _str(rec: dict[str, Any], key: str, default: str | None = None) -> str:
    value = rec.get(key, default)
    if not isinstance(value, str):
        raise ZoneError(f"'{key}' must be a string, not {value!r}")
    return value


def _rdata(rec: dict[str, Any]) -> tuple[int, Any]:
    kind = _str(rec, "type").upper()
    if kind == "A":
        return QTYPE.A, A(str(ipaddress.IPv4Address(_str(rec, "value"))))
    if kind == "AAAA":
        return QTYPE.AAAA, AAAA(str(ipaddress.IPv6Address(_str(rec, "value"))))
    if kind == "NS":
        return QTYPE.NS, NS(norm(_str(rec, "value")) + ".")
    if kind == "SRV":
        return QTYPE.SRV, SRV(
            _int(rec, "priority", 0), _int(rec, "weight", 0), _int(rec, "port", 0), norm(_str(rec, "value")) + "."
        )
    if kind == "NAPTR":
        replacement = norm(_str(rec, "replacement", rec.get("value") or "."))
        return QTYPE.NAPTR, NAPTR(
            _int(rec, "order", 0),
            _int(rec, "preference", 0),
            _str(rec, "flags", "").encode(),
            _str(rec, "service", "").encode(),
            _str(rec, "regexp", "").encode(),
            replacement + ".",
        )
    raise ZoneError(f"unsupported type {kind!r} (A, AAAA, NS, SRV, NAPTR)")


def _add(rrsets: dict[tuple[str, int], RRSet], name: str, qtype: int, ttl: int, rdata: Any) -> None:
    rrsets.setdefault((name, qtype), []).append((ttl, rdata))


def _apex(rrsets: dict[tuple[str, int], RRSet], domain: str, glue: str | None, serial: int) -> None:
    """Synthesize SOA, and NS ns.<domain> (with the listen address as glue) unless the file has them."""
    ns = f"ns.{domain}"
    soa = SOA(ns + ".", f"hostmaster.{domain}.", (serial, 3600, 600, 86400, NEGATIVE_TTL))
    _add(rrsets, domain, QTYPE.SOA, TTL_DEFAULT, soa)
    if (domain, QTYPE.NS) not in rrsets:
        _add(rrsets, domain, QTYPE.NS, TTL_DEFAULT, NS(ns + "."))
        if glue and not any(name == ns for name, _ in rrsets):
            is_v6 = ipaddress.ip_address(glue).version == 6
            _add(rrsets, ns, QTYPE.AAAA if is_v6 else QTYPE.A, TTL_DEFAULT, AAAA(glue) if is_v6 else A(glue))


def _names(rrsets: dict[tuple[str, int], RRSet], domain: str) -> frozenset[str]:
    """Owner names and their ancestors up to the apex: an empty non-terminal exists (NODATA, not NXDOMAIN)."""
    found = {domain}
    for name, _ in rrsets:
        while name != domain and name not in found:
            found.add(name)
            name = name.split(".", 1)[1]
    return frozenset(found)


def parse_zone(data: Any, glue: str | None = None, serial: int = 0) -> Zone:
    if not isinstance(data, dict) or not isinstance(data.get("domain"), str) or not norm(data["domain"]):
        raise ZoneError("the zone must be an object with a non-empty string 'domain'")
    domain, records = norm(data["domain"]), data.get("records", [])
    if not isinstance(records, list):
        raise ZoneError("'records' must be a list")
    rrsets: dict[tuple[str, int], RRSet] = {}
    for index, rec in enumerate(records):
        try:
            if not isinstance(rec, dict):
                raise ZoneError("a record must be an object")
            name = norm(_str(rec, "name"))
            if not in_domain(name, domain):
                raise ZoneError(f"name {name!r} is outside the domain {domain!r}")
            qtype, rdata = _rdata(rec)
            _add(rrsets, name, qtype, _int(rec, "ttl", TTL_DEFAULT, 2**31 - 1), rdata)
        except (ZoneError, ValueError) as exc:
            raise ZoneError(f"record {index} ({rec!r}): {exc}") from None
    _apex(rrsets, domain, glue, serial)
    return Zone(domain, rrsets, _names(rrsets, domain), serial, len(records))


def load_zone(path: Path, glue: str | None = None, previous: Zone | None = None) -> Zone:
    # The serial moves forward on every load so that a change is visible in the SOA.
    serial = max(int(time.time()), previous.serial + 1 if previous else 0) & 0xFFFFFFFF
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZoneError(f"cannot read {path}: {exc}") from None
    return parse_zone(data, glue, serial)


# ---- answers ----


def _reply(request: DNSRecord, rcode: int, aa: bool) -> DNSRecord:
    header = DNSHeader(
        id=request.header.id, qr=1, opcode=request.header.opcode, aa=int(aa), rd=request.header.rd, ra=0, rcode=rcode
    )
    return DNSRecord(header, questions=list(request.questions))


def _soa_authority(zone: Zone, reply: DNSRecord) -> None:
    _, soa = zone.rrsets[(zone.domain, QTYPE.SOA)][0]
    reply.add_auth(RR(zone.domain + ".", QTYPE.SOA, rdata=soa, ttl=NEGATIVE_TTL))


def _additional(zone: Zone, reply: DNSRecord) -> None:
    """Addresses of SRV and NS targets in the zone, to spare the client a round trip."""
    targets = {
        norm(str(rr.rdata.target if rr.rtype == QTYPE.SRV else rr.rdata.label))
        for rr in reply.rr
        if rr.rtype in (QTYPE.SRV, QTYPE.NS)
    }
    for target in sorted(targets):
        for qtype in (QTYPE.A, QTYPE.AAAA):
            for ttl, rdata in zone.rrsets.get((target, qtype), []):
                reply.add_ar(RR(target + ".", qtype, rdata=rdata, ttl=ttl))


def qname_text(qname: DNSLabel) -> str:
    """A wire name as zone text, lower case. A byte no zone name holds (a dot inside a label, a
    backslash, a space, a non-ASCII byte) is escaped, so that such a name never matches one."""
    return ".".join(
        "".join(chr(c) if 33 <= c < 127 and c not in (46, 92) else f"\\{c:03d}" for c in label) for label in qname.label
    ).lower()


def resolve(zone: Zone, request: DNSRecord) -> DNSRecord:
    if request.header.opcode != OPCODE_QUERY:
        return _reply(request, RCODE.NOTIMP, False)
    if len(request.questions) != 1:
        return _reply(request, RCODE.FORMERR, False)
    q = request.q
    name = qname_text(q.qname)
    if q.qclass not in (CLASS_IN, CLASS_ANY) or not in_domain(name, zone.domain):
        return _reply(request, RCODE.REFUSED, False)
    if q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return _reply(request, RCODE.REFUSED, True)
    if name not in zone.names:
        reply = _reply(request, RCODE.NXDOMAIN, True)
        _soa_authority(zone, reply)
        return reply
    reply = _reply(request, RCODE.NOERROR, True)
    wanted = [t for (n, t) in zone.rrsets if n == name] if q.qtype == QTYPE.ANY else [q.qtype]
    for qtype in wanted:
        for ttl, rdata in zone.rrsets.get((name, qtype), []):
            reply.add_answer(RR(q.qname, qtype, rdata=rdata, ttl=ttl))  # the query's spelling
    if not reply.rr:
        _soa_authority(zone, reply)
    _additional(zone, reply)
    return reply


def _edns_size(request: DNSRecord) -> int | None:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return int(rr.rclass)
    return None


def _bare(data: bytes, rcode: int) -> bytes | None:
    """A header-only reply built from the query's first bytes, for a query we will not parse further."""
    if len(data) < 12 or data[2] & 0x80:
        return None  # no header to answer, or a response: answering could loop
    flags = 0x8000 | (data[2] & 0x79) << 8 | rcode  # QR, the query's opcode and RD
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _packable(name: DNSLabel) -> bool:
    """RFC 1035 limits: dnslib parses longer labels and names than it can pack."""
    return all(0 < len(label) <= 63 for label in name.label) and sum(len(label) + 1 for label in name.label) < 255


def answer(zone: Zone, data: bytes, udp: bool) -> bytes | None:
    """The wire reply to one wire query; None for what does not deserve one. Never raises: any
    failure costs that one query a FORMERR or SERVFAIL, never the server."""
    try:
        return _answer(zone, data, udp)
    except Exception as exc:  # a bug in the code below, or in dnslib
        log_throttled(f"SERVFAIL: {exc!r}"[:300])
        return _bare(data, RCODE.SERVFAIL)


def _answer(zone: Zone, data: bytes, udp: bool) -> bytes | None:
    if len(data) < 12 or data[2] & 0x80:
        return None
    if (data[2] >> 3) & 0xF != OPCODE_QUERY:
        return _bare(data, RCODE.NOTIMP)
    # One question, no answer or authority, at most the OPT record: what a query is. Anything else
    # is refused before dnslib parses it, whose cost grows with the records and pointers a message holds.
    qd, an, ns, ar = struct.unpack("!4H", data[4:12])
    if len(data) > MAX_QUERY or (qd, an, ns) != (1, 0, 0) or ar > 1:
        return _bare(data, RCODE.FORMERR)
    try:
        request = DNSRecord.parse(data)
    except Exception:  # dnslib raises more than DNSError on garbage
        return _bare(data, RCODE.FORMERR)
    if not _packable(request.q.qname):
        return _bare(data, RCODE.FORMERR)
    edns = _edns_size(request)
    try:
        reply = resolve(zone, request)
    except Exception as exc:  # a bug here must cost one answer, not the server
        log_throttled(f"SERVFAIL for {request.q.qname}: {exc!r}"[:300])
        reply = _reply(request, RCODE.SERVFAIL, False)
    limit = min(max(edns or UDP_PLAIN_MAX, UDP_PLAIN_MAX), UDP_EDNS_MAX) if udp else TCP_MAX
    wire = _with_edns(reply, edns).pack()
    if len(wire) > limit:  # TC: over UDP the client retries over TCP
        reply = _reply(request, reply.header.rcode, bool(reply.header.aa))
        reply.header.tc = 1
        wire = _with_edns(reply, edns).pack()  # header, question and OPT: under 512 bytes
    return bytes(wire)


def _with_edns(reply: DNSRecord, edns: int | None) -> DNSRecord:
    """Answer EDNS with EDNS (RFC 6891), once."""
    if edns is not None and not any(rr.rtype == QTYPE.OPT for rr in reply.ar):
        reply.add_ar(EDNS0(udp_len=UDP_EDNS_MAX))
    return reply


# ---- sockets ----


def bind(family: int, kind: int, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # TIME_WAIT leftovers must not block a restart; for UDP it would let two servers share the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Closed(Exception):
    """The TCP client is done, or broke the framing: close its connection."""


class Stream:
    """One TCP client: bytes not yet answered, the reply not yet sent, and when it last moved."""

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock, self.inbox, self.outbox, self.last = sock, bytearray(), b"", now
        self.events = selectors.EVENT_READ

    def message(self) -> bytes | None:
        """The next whole query, None while it is incomplete."""
        if len(self.inbox) < 2:
            return None
        size = int.from_bytes(self.inbox[:2], "big")
        if not 12 <= size <= MAX_QUERY:
            raise Closed(f"message length {size}")  # not a query: do not wait for 64 KB of it
        if len(self.inbox) < 2 + size:
            return None
        data = bytes(self.inbox[2 : 2 + size])
        del self.inbox[: 2 + size]
        return data

    def receive(self) -> None:
        # Never more than one query's worth: memory per connection stays bounded.
        data = self.sock.recv(2 + MAX_QUERY - len(self.inbox))
        if not data:
            raise Closed("end of stream")
        self.inbox += data
        self.last = time.monotonic()

    def send(self) -> None:
        try:
            sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            return
        self.outbox = self.outbox[sent:]
        self.last = time.monotonic()


class Server:
    """UDP and TCP served by one loop, without threads: a client can hold a connection, never the loop.
    TCP is bounded: TCP_CONNECTIONS at once (a new one closes the one silent the longest), TCP_IDLE
    seconds of silence, MAX_QUERY bytes a message, one reply waiting per connection."""

    def __init__(self, zone_path: Path, address: str, zone: Zone, tcp_idle: float = TCP_IDLE) -> None:
        self.zone_path, self.address, self.zone, self.tcp_idle = zone_path, address, zone, tcp_idle
        self.streams: dict[socket.socket, Stream] = {}
        self.sel: selectors.BaseSelector | None = None
        self.next_sweep = 0.0

    def reload(self) -> None:
        try:
            zone = load_zone(self.zone_path, self.address, self.zone)
        except ZoneError as exc:
            log(f"reload failed, keeping the zone loaded before: {exc}")
            return
        self.zone = zone
        log(f"reloaded {zone.domain}: {zone.count} records from {self.zone_path}, serial {zone.serial}")

    def serve_udp(self, sock: socket.socket) -> None:
        for _ in range(64):  # drain a burst, then let the other sockets have a turn
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. an ICMP error from an earlier reply: nothing to do
            wire = answer(self.zone, data, udp=True)
            if wire is not None:
                try:
                    sock.sendto(wire, peer)
                except OSError:
                    pass  # the client went away: its problem

    def accept(self, sock: socket.socket) -> None:
        assert self.sel is not None
        for _ in range(64):
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if len(self.streams) >= TCP_CONNECTIONS:
                self.close(min(self.streams.values(), key=lambda stream: stream.last))
            conn.setblocking(False)
            self.streams[conn] = Stream(conn, time.monotonic())
            self.sel.register(conn, selectors.EVENT_READ, self.serve_tcp)

    def serve_tcp(self, conn: socket.socket) -> None:
        stream = self.streams.get(conn)
        if stream is None:
            return  # closed earlier in this round
        try:
            if stream.outbox:
                stream.send()
            else:
                stream.receive()
            self._answer_stream(stream)
        except (Closed, OSError):
            self.close(stream)
            return
        events = selectors.EVENT_WRITE if stream.outbox else selectors.EVENT_READ
        if events != stream.events:  # read the next query only once the last reply is out
            assert self.sel is not None
            self.sel.modify(conn, events, self.serve_tcp)
            stream.events = events

    def _answer_stream(self, stream: Stream) -> None:
        while not stream.outbox and (data := stream.message()) is not None:
            wire = answer(self.zone, data, udp=False)
            if wire is None:
                raise Closed("not a query")
            stream.outbox = struct.pack("!H", len(wire)) + wire
            stream.send()

    def close(self, stream: Stream) -> None:
        if self.streams.pop(stream.sock, None) is not None and self.sel is not None:
            self.sel.unregister(stream.sock)
        stream.sock.close()

    def sweep(self) -> None:
        """Close the connections silent for tcp_idle seconds, looking at most ten times a second."""
        now = time.monotonic()
        if now >= self.next_sweep:
            self.next_sweep = now + min(0.1, self.tcp_idle)
            for stream in [s for s in self.streams.values() if now - s.last > self.tcp_idle]:
                self.close(stream)

    def run(self, udp: socket.socket, tcp: socket.socket, wakeup: int) -> None:
        """Serve until a stop signal; signal numbers arrive as bytes on the wakeup pipe."""
        with selectors.DefaultSelector() as sel:
            self.sel = sel
            sel.register(udp, selectors.EVENT_READ, self.serve_udp)
            sel.register(tcp, selectors.EVENT_READ, self.accept)
            sel.register(wakeup, selectors.EVENT_READ, None)
            try:
                while True:
                    for key, _ in sel.select(timeout=0.1 if self.streams else None):
                        if key.data is None:
                            if self._signals(wakeup):
                                return
                        else:
                            self._step(key.data, key.fileobj)
                    self.sweep()
            finally:
                for stream in list(self.streams.values()):
                    self.close(stream)
                self.sel = None

    @staticmethod
    def _step(handler: Any, fileobj: Any) -> None:
        try:
            handler(fileobj)
        except Exception as exc:  # a bug must cost one client, never the loop every client shares
            log_throttled(f"error serving a client: {exc!r}"[:300])

    def _signals(self, wakeup: int) -> bool:
        try:
            received = os.read(wakeup, 64)
        except BlockingIOError:
            return False
        if any(signum in STOP_SIGNALS for signum in received):
            return True
        if signal.SIGHUP in received:
            self.reload()
        return False


# ---- process ----


def install_signals() -> int:
    """Route SIGHUP/SIGTERM/SIGINT to a pipe read by the main loop, so they never interrupt an answer."""
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    for signum in (signal.SIGHUP, *STOP_SIGNALS):
        signal.signal(signum, lambda *_: None)
    return rfd


def write_pidfile(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)  # readers never see a half-written file


def remove_pidfile(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def open_sockets(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    opened: list[socket.socket] = []
    for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        try:
            opened.append(bind(family, kind, address, port))
        except OSError as exc:
            for sock in opened:
                sock.close()
            print(
                f"{PROG}: cannot bind {address} port {port}/{proto}: {exc.strerror or exc}", file=sys.stderr, flush=True
            )
            raise SystemExit(2) from None
    return opened[0], opened[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m imsso.dns.server", description="authoritative DNS for one IMS domain"
    )
    parser.add_argument("--zone", type=Path, required=True, help="zone file (JSON)")
    parser.add_argument("--listen", required=True, help="address to serve on, UDP and TCP")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--pidfile", type=Path, help="file to hold our pid while we serve")
    parser.add_argument(
        "--tcp-idle",
        type=float,
        default=TCP_IDLE,
        metavar="SECONDS",
        help=f"close a TCP connection silent this long (default {TCP_IDLE:g})",
    )
    args = parser.parse_args(argv)
    try:
        ipaddress.ip_address(args.listen)
    except ValueError:
        parser.error(f"--listen must be an IP address, not {args.listen!r}")
    if not 0 < args.tcp_idle <= 3600:
        parser.error(f"--tcp-idle must be more than 0 and at most 3600 seconds, not {args.tcp_idle:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    wakeup = install_signals()  # first: an early SIGHUP must not kill us
    args = parse_args(argv)
    try:
        zone = load_zone(args.zone, args.listen)
    except ZoneError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 1
    udp, tcp = open_sockets(args.listen, args.port)
    if args.pidfile:
        write_pidfile(args.pidfile)
    log(
        f"serving {zone.domain}: {zone.count} records from {args.zone} on {args.listen} "
        f"port {args.port} udp+tcp, serial {zone.serial}"
    )
    try:
        Server(args.zone, args.listen, zone, args.tcp_idle).run(udp, tcp, wakeup)
    finally:
        udp.close()
        tcp.close()
        if args.pidfile:
            remove_pidfile(args.pidfile)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
