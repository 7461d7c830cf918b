"""The HSS unit: Diameter Cx over TCP for Kamailio's IMS modules, run as its own process.

    python -m imsso.hss.server --listen 127.100.0.5 --port 3868 --identity hss.ims.test \\
        --realm ims.test --subscribers /abs/subscribers.json --status-port 3870 [--pidfile F] \\
        [--config unit/hss.json] [--state unit/hss-state.json]

--realm defaults to the file's realm, --identity to the file's identity, else hss.<realm>;
--status-port 0 turns the status endpoint off. Each Diameter connection gets a thread
(TCP_NODELAY); the server only ever answers, it never sends a request. SIGHUP re-reads the
subscribers file and the config without dropping connections, registrations or the SQN counters
of known private identities (a bad file keeps the old data);
SIGTERM/SIGINT stop. Exit status: 0 after a signal, 1 for a bad subscribers file at start, 2 for a
binding or usage error. stderr gets one line per error (undecodable input, a handler failure, a
failed reload, a refused peer; at most LOG_BURST a minute), never one per request.

Trust: a connection is served only after a CER whose Origin-Host and source address are a pair of
"peers" (the instance's I- and S-CSCFs); anything else first is closed unanswered, an unlisted
peer gets DIAMETER_UNKNOWN_PEER (3010) and is closed. Limits (constants below): message size,
connections in all and per address before a CER, time to a CER, silence after it.

State: registrations and SQN counters are written to --state on each change (atomically, before
the answer leaves) and read at start; a corrupt file is set aside and the HSS starts empty.

Subscribers file (JSON, written by the orchestrator):

    {"realm": "ims.test",
     "identity": "hss.ims.test",          # optional: our Origin-Host when --identity is not given
     "scscfs": ["sip:scscf-1.ims.test:5060", "sip:scscf-2.ims.test:5060"],
     "peers": [{"host": "scscf-1.ims.test", "address": "127.100.0.11"}],  # who may connect
     "subscribers": [
       {"impi": "alice@ims.test", "impus": ["sip:alice@ims.test", "tel:+15550001"],
        "password": "secret",            # SIP Digest (Digest-MD5, SIP Digest); null: none
        "k": "<32 hex>", "opc": "<32 hex>",  # Milenage AKA; null: none ("op" instead of "opc" works)
        "amf": "8000",                   # optional, default 8000
        "sqn": 0}]}                      # optional: the last SQN handed out (48 bits)

"scscfs" are the Server-Name values the I-CSCF gets for users not registered yet (a stable choice
per private identity); an S-CSCF names itself in its SARs, and that name is what the HSS then
answers for the user. Public identities must be unique across subscribers.

Status: `GET /status` on --status-port at the --listen address answers JSON: requests per command
and result name, latency (avg and p99 of the last 10000, in ms), subscribers, registered public
identities (per S-CSCF), connections. It is the unit's probe and its metrics.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The unit programs' process handling lives in the DNS server, which must stay one file (it is
# copied as it is onto servers by the openstack driver).
from ..dns.server import STOP_SIGNALS, install_signals, remove_pidfile, write_pidfile
from .cx import Hss, Subscribers, SubscribersError
from .diameter import (
    CODE_CE,
    MAX_LENGTH,
    RESULT_NAMES,
    SUCCESS,
    UNKNOWN_PEER,
    DiameterError,
    Framer,
    FramingError,
    Message,
    decode,
    encode,
)
from .state import StateFile

PROG = "imsso-hss"
RECV_BYTES = 65536
STATE_FILE = "hss-state.json"

# Limits: what a peer, or anything else that connects, may cost us.
MAX_MESSAGE_BYTES = MAX_LENGTH  # a header announcing more closes the connection (64 KiB)
MAX_CONNECTIONS = 64  # an instance has at most a handful of CSCFs; beyond this, closed at once
MAX_PENDING_PER_ADDRESS = 8  # connections without a capabilities exchange yet, per source address
CER_TIMEOUT_S = 5.0  # a connection must complete its CER within this (cdp sends it at once)
PEER_GRACE_S = 3.0  # an unlisted peer's CER waits this long for a reload that lists it: a new
#                     CSCF connects as soon as it starts, just before the orchestrator tells us
PEER_SILENCE_S = 90.0  # 3 x the RFC 3539 watchdog interval (30 s): a peer silent longer is gone
LOG_BURST, LOG_WINDOW_S = 20, 60.0  # per-connection events logged at most this often


def log(message: str) -> None:
    print(f"{PROG}[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Throttled:
    """A log for events anyone can cause (a refused peer, garbage): a burst, then a count."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW_S):
        self.burst, self.window = burst, window
        self._lock = threading.Lock()
        self._start, self._lines, self._dropped = 0.0, 0, 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._start > self.window:
                if self._dropped:
                    log(f"({self._dropped} similar lines not logged in the last {self.window:.0f} s)")
                self._start, self._lines, self._dropped = now, 0, 0
            self._lines += 1
            if self._lines > self.burst:
                self._dropped += 1
                return
        log(message)


class Closed(Exception):
    """The connection must end (the reason is logged where it is raised)."""


class Connection:
    """One Diameter connection: nothing is served before a successful capabilities exchange
    (RFC 6733 5.6: a new connection waits for a CER; 5.3: an unknown peer gets 3010 and goes)."""

    def __init__(self, server: Server, sock: socket.socket, address: str, port: int):
        self.server, self.sock, self.address = server, sock, address
        self.name = f"{address}:{port}"
        self.open = False  # a CER succeeded
        self.host: str | None = None
        self.deadline = time.monotonic() + CER_TIMEOUT_S

    def run(self) -> None:
        framer = Framer(MAX_MESSAGE_BYTES)
        while True:
            chunk = self._receive()
            try:
                frames = framer.feed(chunk)
            except FramingError as err:
                self._unframable(err)
                return
            wires, close = self._answers(frames)
            if wires:
                self.sock.sendall(b"".join(wires))  # one write for all the answers of one read
            if close:
                return

    def _receive(self) -> bytes:
        if self.open:
            self.sock.settimeout(PEER_SILENCE_S)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self._refuse(f"no capabilities exchange within {CER_TIMEOUT_S:.0f} s")
            self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(RECV_BYTES)
        except TimeoutError:
            raise self._refuse(
                "silent for longer than the watchdog allows"
                if self.open
                else f"no capabilities exchange within {CER_TIMEOUT_S:.0f} s"
            ) from None
        if not chunk:
            raise Closed()
        return chunk

    def _refuse(self, why: str) -> Closed:
        self.server.refused += 1
        self.server.events(f"{self.name}{f' ({self.host})' if self.host else ''}: {why}; closing")
        return Closed()

    def _unframable(self, err: FramingError) -> None:
        self.server.garbage += 1
        answer = self.server.hss.handle_error(err) if self.open else None
        if answer is not None:
            self.sock.sendall(encode(answer))
        self.server.events(f"{self.name}: {err} (DIAMETER result {err.result_code}); closing the connection")

    def _answers(self, frames: list[bytes]) -> tuple[list[bytes], bool]:
        wires: list[bytes] = []
        for frame in frames:
            answer = self._answer(frame)
            if answer is not None:
                wires.append(encode(answer))
                if self.server.hss.closes_connection(answer):
                    return wires, True
        return wires, False

    def _answer(self, frame: bytes) -> Message | None:
        started = time.perf_counter()
        hss = self.server.hss
        try:
            msg = decode(frame)
        except DiameterError as err:
            if not self.open:
                raise self._refuse(f"undecodable message before the capabilities exchange: {err}") from None
            self.server.events(f"{self.name}: undecodable message: {err} (DIAMETER result {err.result_code})")
            return hss.handle_error(err, started)
        if msg.code == CODE_CE and msg.is_request:
            return self._capabilities(msg, started)
        if not self.open:
            raise self._refuse(f"{msg.name} before the capabilities exchange")
        try:
            return hss.handle(msg, started, self.address)
        except Exception as exc:  # noqa: BLE001 - belt and braces: handle() answers its own failures
            self.server.events(f"{self.name}: {type(exc).__name__}: {exc}")
            return None

    def _capabilities(self, cer: Message, started: float) -> Message | None:
        host = cer.get("Origin-Host")
        if host is not None and not self.server.hss.allows_peer(host, self.address):
            waited = self.server.wait_for_peer(host, self.address, PEER_GRACE_S)
            if waited is not None:
                self.server.events(f"{self.name}: {host} listed by a reload after {waited:.1f} s")
        answer = self.server.hss.handle(cer, started, self.address)
        self.open = answer is not None and answer.get("Result-Code") == SUCCESS
        self.host = host
        if not self.open:
            result = answer.get("Result-Code") if answer is not None else None
            self.server.refused += 1
            why = ": not a peer of this HSS at this address" if result == UNKNOWN_PEER else ""
            self.server.events(
                f"{self.name}: CER from {host!r} refused "
                f"({RESULT_NAMES.get(result, result) if isinstance(result, int) else result}){why}; closing"
            )
        return answer


class Server:
    def __init__(self, hss: Hss, subscribers_path: Path, listen: str, port: int, config_path: Path | None = None):
        self.hss = hss
        self.path = subscribers_path
        self.config_path = config_path
        self.listen = listen
        self.port = port
        self.started = time.time()
        self.events = Throttled()
        self._lock = threading.Lock()
        self._reloaded = threading.Condition()
        self._conns: dict[socket.socket, Connection] = {}
        self.accepted = 0
        self.garbage = 0  # connections closed because their bytes could not be framed
        self.refused = 0  # connections closed for their peer, silence or order of messages
        self.turned_away = 0  # connections closed at once: too many

    # ---- Diameter connections ----

    def serve(self, conn: Connection) -> None:
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.run()
        except (Closed, OSError):
            pass  # ended by the peer, by us, or by stop()
        except Exception as exc:  # noqa: BLE001 - one connection's bug must not end the others
            self.events(f"{conn.name}: {type(exc).__name__}: {exc}; closing the connection")
        finally:
            with self._lock:
                self._conns.pop(conn.sock, None)
            conn.sock.close()

    def wait_for_peer(self, host: str | None, address: str, seconds: float) -> float | None:
        """Until a reload lists (host, address): the seconds it took, or None after `seconds`."""
        start = time.monotonic()
        with self._reloaded:
            while not self.hss.allows_peer(host, address):
                left = start + seconds - time.monotonic()
                if left <= 0:
                    return None
                self._reloaded.wait(left)
        return time.monotonic() - start

    def _admit(self, address: str) -> bool:
        """Room for one more connection from `address` (called with the lock held)."""
        if len(self._conns) >= MAX_CONNECTIONS:
            return False
        pending = sum(1 for c in self._conns.values() if not c.open and c.address == address)
        return pending < MAX_PENDING_PER_ADDRESS

    def accept(self, sock: socket.socket) -> None:
        try:
            raw, addr = sock.accept()
        except OSError:
            return
        conn = Connection(self, raw, str(addr[0]), int(addr[1]))
        with self._lock:
            admitted = self._admit(conn.address)
            if admitted:
                self._conns[raw] = conn
                self.accepted += 1
            else:
                self.turned_away += 1
        if not admitted:
            self.events(
                f"{conn.name}: too many connections ({MAX_CONNECTIONS} in all, "
                f"{MAX_PENDING_PER_ADDRESS} per address before a CER); closed at once"
            )
            raw.close()
            return
        threading.Thread(target=self.serve, args=(conn,), daemon=True, name=f"cx-{conn.name}").start()

    def close_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
            except OSError:
                pass

    # ---- reload and status ----

    def reload(self) -> None:
        try:
            subs = Subscribers.load(self.path, self.config_path)
        except SubscribersError as exc:
            log(f"reload refused, keeping the old data: {exc}")
            return
        summary = self.hss.reload(subs)
        with self._reloaded:
            self._reloaded.notify_all()  # CERs waiting for their peer to be listed
        log("reloaded " + ", ".join(f"{k} {v}" for k, v in summary.items()) + f" from {self.path}")

    def status(self) -> dict[str, Any]:
        out = self.hss.status()
        with self._lock:
            live = len(self._conns)
        out.update(
            {
                "pid": os.getpid(),
                "listen": self.listen,
                "port": self.port,
                "uptime_s": round(time.time() - self.started, 1),
                "connections": live,
                "connections_total": self.accepted,
                "connections_closed_for_garbage": self.garbage,
                "connections_refused": self.refused,
                "connections_turned_away": self.turned_away,
            }
        )
        return out

    # ---- main loop ----

    def run(self, listener: socket.socket, wakeup: int) -> None:
        """Serve until a stop signal; signal numbers arrive as bytes on the wakeup pipe."""
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ, self.accept)
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


# ---- status endpoint ----

STATUS_TIMEOUT_S = 5.0  # a status client that sends nothing for this long is dropped
STATUS_THREADS = 8  # concurrent status requests; more are closed at once


def status_server(server: Server, address: str, port: int) -> ThreadingHTTPServer:
    slots = threading.BoundedSemaphore(STATUS_THREADS)

    class Handler(BaseHTTPRequestHandler):
        timeout = STATUS_TIMEOUT_S

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/status":
                self._send(404, {"error": "not found: try /status"})
                return
            self._send(200, server.status())

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, sort_keys=True).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the probe asks every few seconds: no line per request

    class Http(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        daemon_threads = True

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    httpd = Http((address, port), Handler)
    # a short poll: SIGTERM waits for it in shutdown()
    threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True, name="status").start()
    return httpd


# ---- process ----


def open_listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SystemExit(_usage_exit(f"cannot bind {address} port {port}/tcp: {exc.strerror or exc}")) from exc
    return sock


def _usage_exit(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m imsso.hss.server", description="HSS for one IMS domain: Diameter Cx over TCP"
    )
    parser.add_argument("--listen", required=True, help="address to serve on")
    parser.add_argument("--port", type=int, default=3868, help="Diameter port (TCP)")
    parser.add_argument("--identity", help="our Origin-Host (default: the file's, else hss.<realm>)")
    parser.add_argument("--realm", help="our Origin-Realm (default: the subscribers file's realm)")
    parser.add_argument("--subscribers", type=Path, required=True, help="subscribers file (JSON)")
    parser.add_argument(
        "--config", type=Path, help="realm, identity, scscfs and peers (JSON) over the subscribers file's own"
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="durable registrations and SQN counters (JSON; "
        "default: hss-state.json beside --config, else beside --subscribers)",
    )
    parser.add_argument("--status-port", type=int, default=3870, help="HTTP status port, 0: none")
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
        subs = Subscribers.load(args.subscribers, args.config)
    except SubscribersError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 1
    realm = args.realm or subs.realm
    identity = args.identity or subs.identity or f"hss.{realm}"
    state = StateFile(args.state or (args.config or args.subscribers).parent / STATE_FILE, log)
    hss = Hss(subs, identity, realm, host_ips=[args.listen], log=log, state=state)
    listener = open_listener(args.listen, args.port)
    server = Server(hss, args.subscribers, args.listen, args.port, args.config)
    httpd = None
    try:
        if args.status_port:
            httpd = status_server(server, args.listen, args.status_port)
    except OSError as exc:
        listener.close()
        return _usage_exit(f"cannot bind {args.listen} port {args.status_port}/tcp (status): {exc.strerror or exc}")
    if args.pidfile:
        write_pidfile(args.pidfile)
    if not subs.peers:
        log("no peers listed ('peers' in the config): every capabilities exchange will be refused")
    log(
        f"serving {identity} (realm {realm}): {len(subs.subscribers)} subscribers, "
        f"{len(subs.scscfs)} S-CSCFs, {len(subs.peers)} peers, state in {state.path}, "
        f"Diameter on {args.listen} port {args.port}" + (f", status on port {args.status_port}" if httpd else "")
    )
    try:
        server.run(listener, wakeup)
    finally:
        listener.close()
        server.close_all()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if args.pidfile:
            remove_pidfile(args.pidfile)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
