"""KamailioRpc against a small real HTTP server: it sends the unit's key, and a refusal says why."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imsso.drivers.local.kamrpc import KamailioRpc, RpcError

KEY = "k" * 64


class Unit(BaseHTTPRequestHandler):
    """Answers as a unit's event_route[xhttp:request] does."""

    seen: list[str | None] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        auth = self.headers.get("Authorization")
        Unit.seen.append(auth)
        if auth is None:
            self._reply(401, b"JSON-RPC needs the header Authorization: Bearer <the unit's management key>\n")
        elif auth != f"Bearer {KEY}":
            self._reply(403, b"wrong management key in Authorization\n")
        else:
            self._reply(200, json.dumps({"jsonrpc": "2.0", "result": {"uptime": 3}, "id": 1}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def unit():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unit)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Unit.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_key_goes_as_a_bearer_token(unit):
    assert KamailioRpc("127.0.0.1", unit, key=KEY).call("core.uptime") == {"uptime": 3}
    assert Unit.seen == [f"Bearer {KEY}"]


def test_without_a_key_no_authorization_is_sent_and_the_refusal_says_what_is_missing(unit):
    with pytest.raises(RpcError, match="HTTP 401 .*needs the header Authorization: Bearer"):
        KamailioRpc("127.0.0.1", unit).call("core.kill")
    assert Unit.seen == [None]


def test_a_wrong_key_is_refused_with_the_reason(unit):
    with pytest.raises(RpcError, match="HTTP 403 .*wrong management key"):
        KamailioRpc("127.0.0.1", unit, key="guess").call("core.kill")
