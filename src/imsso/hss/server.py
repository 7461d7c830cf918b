"""The HSS unit: Diameter Cx over TCP for Kamailio's IMS modules, run as its own process.

    python -m imsso.hss.server --listen 127.100.0.5 --port 3868 --identity hss.ims.test \\
        --realm ims.test --subscribers /abs/subscribers.json --status-port 3870 [--pidfile F]

--realm defaults to the file's realm, --identity to the file's identity, else hss.<realm>;
--status-port 0 turns the status endpoint off. Each Diameter connection gets a thread
(TCP_NODELAY); the server only ever answers, it never sends a request. SIGHUP re-reads the subscribers file without dropping connections,
registrations or the SQN counters of known private identities (a bad file keeps the old data);
SIGTERM/SIGINT stop. Exit status: 0 after a signal, 1 for a bad subscribers file at start, 2 for a
binding or usage error. stderr gets one line per error (undecodable input, a handler failure, a
failed reload), never one per request.

Subscribers file (JSON, written by the orchestrator):

    {"realm": "ims.test",
     "identity": "hss.ims.test",          # optional: our Origin-Host when --identity is not given
     "scscfs": ["sip:scscf-1.ims.test:5060", "sip:scscf-2.ims.test:5060"],
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
from .diameter import DiameterError, Framer, FramingError, decode, encode

PROG = "imsso-hss"
RECV_BYTES = 65536


def log(message: str) -> None:
    print(f"{PROG}[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, hss: Hss, subscribers_path: Path, listen: str, port: int,
                 config_path: Path | None = None):
        self.hss = hss
        self.path = subscribers_path
        self.config_path = config_path
        self.listen = listen
        self.port = port
        self.started = time.time()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.accepted = 0
        self.garbage = 0  # connections closed because their bytes could not be framed

    # ---- Diameter connections ----

    def serve(self, conn: socket.socket, peer: str) -> None:
        with self._lock:
            self._conns.add(conn)
            self.accepted += 1
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._loop(conn, peer)
        except OSError:
            pass  # reset, or closed by stop()
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _loop(self, conn: socket.socket, peer: str) -> None:
        framer = Framer()
        while chunk := conn.recv(RECV_BYTES):
            try:
                frames = framer.feed(chunk)
            except FramingError as err:
                answer = self.hss.handle_error(err)
                if answer is not None:
                    conn.sendall(encode(answer))
                self.garbage += 1
                log(f"{peer}: {err} (DIAMETER result {err.result_code}); closing the connection")
                return
            wires, close = self._answers(frames, peer)
            if wires:
                conn.sendall(b"".join(wires))  # one write for all the answers of one read
            if close:
                return

    def _answers(self, frames: list[bytes], peer: str) -> tuple[list[bytes], bool]:
        wires, close = [], False
        for frame in frames:
            started = time.perf_counter()
            try:
                answer = self.hss.handle(decode(frame), started)
            except DiameterError as err:
                log(f"{peer}: undecodable message: {err} (DIAMETER result {err.result_code})")
                answer = self.hss.handle_error(err, started)
            except Exception as exc:  # noqa: BLE001 - belt and braces: handle() answers its own failures
                log(f"{peer}: {type(exc).__name__}: {exc}")
                continue
            if answer is not None:
                wires.append(encode(answer))
                close = close or self.hss.closes_connection(answer)
        return wires, close

    def accept(self, sock: socket.socket) -> None:
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        peer = f"{addr[0]}:{addr[1]}"
        threading.Thread(target=self.serve, args=(conn, peer), daemon=True, name=f"cx-{peer}").start()

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
        log("reloaded " + ", ".join(f"{k} {v}" for k, v in summary.items()) + f" from {self.path}")

    def status(self) -> dict[str, Any]:
        out = self.hss.status()
        with self._lock:
            live = len(self._conns)
        out.update({"pid": os.getpid(), "listen": self.listen, "port": self.port,
                    "uptime_s": round(time.time() - self.started, 1), "connections": live,
                    "connections_total": self.accepted, "connections_closed_for_garbage": self.garbage})
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

def status_server(server: Server, address: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
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
        raise SystemExit(_usage_exit(f"cannot bind {address} port {port}/tcp: {exc.strerror or exc}"))
    return sock


def _usage_exit(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m imsso.hss.server",
                                     description="HSS for one IMS domain: Diameter Cx over TCP")
    parser.add_argument("--listen", required=True, help="address to serve on")
    parser.add_argument("--port", type=int, default=3868, help="Diameter port (TCP)")
    parser.add_argument("--identity", help="our Origin-Host (default: the file's, else hss.<realm>)")
    parser.add_argument("--realm", help="our Origin-Realm (default: the subscribers file's realm)")
    parser.add_argument("--subscribers", type=Path, required=True, help="subscribers file (JSON)")
    parser.add_argument("--config", type=Path, help="realm, identity and scscfs (JSON) over the "
                        "subscribers file's own")
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
    hss = Hss(subs, identity, realm, host_ips=[args.listen], log=log)
    listener = open_listener(args.listen, args.port)
    server = Server(hss, args.subscribers, args.listen, args.port, args.config)
    httpd = None
    try:
        if args.status_port:
            httpd = status_server(server, args.listen, args.status_port)
    except OSError as exc:
        listener.close()
        return _usage_exit(f"cannot bind {args.listen} port {args.status_port}/tcp (status): "
                           f"{exc.strerror or exc}")
    if args.pidfile:
        write_pidfile(args.pidfile)
    log(f"serving {identity} (realm {realm}): {len(subs.subscribers)} subscribers, "
        f"{len(subs.scscfs)} S-CSCFs, Diameter on {args.listen} port {args.port}"
        + (f", status on port {args.status_port}" if httpd else ""))
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
