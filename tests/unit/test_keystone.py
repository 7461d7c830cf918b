"""The Keystone validator against a stand-in for Keystone's token API on loopback (the boundary).

The real Keystone is exercised by the OpenStack tests; here: URL handling, project matching,
caching, and that an unreachable Keystone is never a pass.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imsso.auth.keystone import KeystoneValidator, v3_url
from imsso.model import Forbidden, Unauthorized, Unavailable

TOKENS = {"good": {"project": {"id": "p-1", "name": "acme"}, "catalog": [{"type": "orchestration"}]}}


class _Keystone(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        _Keystone.calls.append(self.path)
        token = self.headers.get("X-Subject-Token")
        if self.path != "/identity/v3/auth/tokens" or self.headers.get("X-Auth-Token") != token:
            self.send_response(400)
            self.end_headers()
            return
        body = TOKENS.get(token)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"token": body} if body else {"error": {"code": 404}}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def keystone():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keystone)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Keystone.calls = []
    yield f"http://127.0.0.1:{server.server_address[1]}/identity/v2.0"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("given, wanted", [
    ("http://k:35357/v2.0", "http://k:35357/v3"),
    ("http://k:5000/v3/", "http://k:5000/v3"),
    ("http://k/identity", "http://k/identity/v3"),
])
def test_the_v3_api_of_the_same_server(given, wanted):
    assert v3_url(given) == wanted


def test_a_valid_token_of_the_project_passes_and_is_cached(keystone):
    validator = KeystoneValidator(keystone, cache_seconds=60)
    # By name as in X-Tenant-Name, or by id: either way the tenant is the project's id.
    assert validator.validate("good", "acme") == "p-1"
    assert validator.validate("good", "p-1") == "p-1"
    assert len(_Keystone.calls) == 1, "the second check came from the cache"
    assert validator.catalog("good") == [{"type": "orchestration"}]


def test_the_cache_expires(keystone):
    validator = KeystoneValidator(keystone, cache_seconds=0)
    validator.validate("good", "acme")
    validator.validate("good", "acme")
    assert len(_Keystone.calls) == 2


def test_an_unknown_token_is_unauthorized(keystone):
    with pytest.raises(Unauthorized):
        KeystoneValidator(keystone).validate("forged", "acme")


def test_a_token_of_another_project_is_forbidden(keystone):
    with pytest.raises(Forbidden) as err:
        KeystoneValidator(keystone).validate("good", "globex")
    assert "acme" in err.value.message


def test_keystone_unreachable_is_unavailable_never_a_pass():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable) as err:
        KeystoneValidator(f"http://127.0.0.1:{port}/v2.0", timeout=2).validate("good", "acme")
    assert "unreachable" in err.value.message
