"""A small authoritative DNS server for one IMS instance's domain, run as its own process.

    python -m imsso.dns.server --zone /abs/zone.json --listen 127.100.0.2 --port 53 [--pidfile F]

UDP is served inline by the main loop (no thread per datagram); each TCP connection gets a
thread. SIGHUP re-reads the zone file (a bad file keeps the old zone), SIGTERM/SIGINT stop.
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import AAAA, EDNS0, NAPTR, NS, QTYPE, RCODE, RR, SOA, SRV, A, DNSHeader, DNSRecord

PROG = "imsso-dns"
TTL_DEFAULT = 60
NEGATIVE_TTL = 60  # short: the orchestrator adds names at any time
UDP_PLAIN_MAX = 512
UDP_EDNS_MAX = 1232  # the usual EDNS buffer size that avoids IP fragmentation
TCP_IDLE = 10.0
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
        return QTYPE.SRV, SRV(_int(rec, "priority", 0), _int(rec, "weight", 0), _int(rec, "port", 0),
                              norm(_str(rec, "value")) + ".")
    if kind == "NAPTR":
        replacement = norm(_str(rec, "replacement", rec.get("value") or "."))
        return QTYPE.NAPTR, NAPTR(_int(rec, "order", 0), _int(rec, "preference", 0),
                                  _str(rec, "flags", "").encode(), _str(rec, "service", "").encode(),
                                  _str(rec, "regexp", "").encode(), replacement + ".")
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
    header = DNSHeader(id=request.header.id, qr=1, opcode=request.header.opcode, aa=int(aa),
                       rd=request.header.rd, ra=0, rcode=rcode)
    return DNSRecord(header, questions=list(request.questions))


def _soa_authority(zone: Zone, reply: DNSRecord) -> None:
    _, soa = zone.rrsets[(zone.domain, QTYPE.SOA)][0]
    reply.add_auth(RR(zone.domain + ".", QTYPE.SOA, rdata=soa, ttl=NEGATIVE_TTL))


def _additional(zone: Zone, reply: DNSRecord) -> None:
    """Addresses of SRV and NS targets in the zone, to spare the client a round trip."""
    targets = {norm(str(rr.rdata.target if rr.rtype == QTYPE.SRV else rr.rdata.label))
               for rr in reply.rr if rr.rtype in (QTYPE.SRV, QTYPE.NS)}
    for target in sorted(targets):
        for qtype in (QTYPE.A, QTYPE.AAAA):
            for ttl, rdata in zone.rrsets.get((target, qtype), []):
                reply.add_ar(RR(target + ".", qtype, rdata=rdata, ttl=ttl))


def resolve(zone: Zone, request: DNSRecord) -> DNSRecord:
    if request.header.opcode != OPCODE_QUERY:
        return _reply(request, RCODE.NOTIMP, False)
    if len(request.questions) != 1:
        return _reply(request, RCODE.FORMERR, False)
    q = request.q
    name = norm(str(q.qname))
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


def answer(zone: Zone, data: bytes, udp: bool) -> bytes | None:
    """The wire reply to one wire query; None for garbage that does not deserve one."""
    try:
        request = DNSRecord.parse(data)
    except Exception:  # dnslib raises more than DNSError on garbage; a packet must never stop us
        if len(data) < 12 or data[2] & 0x80:
            return None  # no header to answer, or a response: answering could loop
        header = DNSHeader(id=struct.unpack("!H", data[:2])[0], qr=1, rcode=RCODE.FORMERR)
        return bytes(DNSRecord(header).pack())
    if request.header.qr:
        return None  # a response sent to us: answering could loop
    try:
        reply = resolve(zone, request)
    except Exception as exc:  # a bug here must cost one answer, not the server
        log(f"SERVFAIL for {request.q.qname}: {exc!r}")
        reply = _reply(request, RCODE.SERVFAIL, False)
    edns = _edns_size(request)
    limit = min(max(edns or UDP_PLAIN_MAX, UDP_PLAIN_MAX), UDP_EDNS_MAX)
    if udp and len(_with_edns(reply, edns).pack()) > limit:  # TC: the client retries over TCP
        reply = _reply(request, reply.header.rcode, bool(reply.header.aa))
        reply.header.tc = 1
    return bytes(_with_edns(reply, edns).pack())


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


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Server:
    def __init__(self, zone_path: Path, address: str, zone: Zone) -> None:
        self.zone_path, self.address, self.zone = zone_path, address, zone

    def reload(self) -> None:
        try:
            zone = load_zone(self.zone_path, self.address, self.zone)
        except ZoneError as exc:
            log(f"reload failed, keeping the zone loaded before: {exc}")
            return
        self.zone = zone  # one reference swap: TCP threads see the old or the new zone, whole
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

    def serve_tcp(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(TCP_IDLE)
            try:
                while (head := _recv_exact(conn, 2)) is not None:
                    data = _recv_exact(conn, struct.unpack("!H", head)[0])
                    wire = None if data is None else answer(self.zone, data, udp=False)
                    if wire is None:
                        return
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
            except OSError:
                return  # idle timeout or reset

    def accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=self.serve_tcp, args=(conn,), daemon=True).start()

    def run(self, udp: socket.socket, tcp: socket.socket, wakeup: int) -> None:
        """Serve until a stop signal; signal numbers arrive as bytes on the wakeup pipe."""
        with selectors.DefaultSelector() as sel:
            sel.register(udp, selectors.EVENT_READ, self.serve_udp)
            sel.register(tcp, selectors.EVENT_READ, self.accept)
            sel.register(wakeup, selectors.EVENT_READ, None)
            while True:
                for key, _ in sel.select():
                    if key.data is not None:
                        key.data(key.fileobj)
                    elif self._signals(wakeup):
                        return

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
            print(f"{PROG}: cannot bind {address} port {port}/{proto}: {exc.strerror or exc}",
                  file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    return opened[0], opened[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m imsso.dns.server",
                                     description="authoritative DNS for one IMS domain")
    parser.add_argument("--zone", type=Path, required=True, help="zone file (JSON)")
    parser.add_argument("--listen", required=True, help="address to serve on, UDP and TCP")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--pidfile", type=Path, help="file to hold our pid while we serve")
    args = parser.parse_args(argv)
    try:
        ipaddress.ip_address(args.listen)
    except ValueError:
        parser.error(f"--listen must be an IP address, not {args.listen!r}")
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
    log(f"serving {zone.domain}: {zone.count} records from {args.zone} on {args.listen} "
        f"port {args.port} udp+tcp, serial {zone.serial}")
    try:
        Server(args.zone, args.listen, zone).run(udp, tcp, wakeup)
    finally:
        udp.close()
        tcp.close()
        if args.pidfile:
            remove_pidfile(args.pidfile)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
