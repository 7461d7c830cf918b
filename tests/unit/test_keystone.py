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

import imsso.auth.keystone as keystone_module
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


@pytest.mark.parametrize(
    "given, wanted",
    [
        ("http://k:35357/v2.0", "http://k:35357/v3"),
        ("http://k:5000/v3/", "http://k:5000/v3"),
        ("http://k/identity", "http://k/identity/v3"),
    ],
)
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


def test_a_refused_token_is_refused_again_without_asking_keystone(keystone):
    validator = KeystoneValidator(keystone, refusal_seconds=60)
    for _ in range(50):  # a flood of the same bad token
        with pytest.raises(Unauthorized):
            validator.validate("forged", "acme")
    assert len(_Keystone.calls) == 1
    assert validator.validate("good", "acme") == "p-1"  # a good token is not held back by it
    assert len(_Keystone.calls) == 2


def test_the_refusal_is_remembered_only_briefly(keystone):
    validator = KeystoneValidator(keystone, refusal_seconds=0)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            validator.validate("forged", "acme")
    assert len(_Keystone.calls) == 3


def test_refusals_are_bounded_in_memory(keystone, monkeypatch):
    monkeypatch.setattr(keystone_module, "CACHE_MAX", 5)
    validator = KeystoneValidator(keystone, refusal_seconds=60)
    for n in range(20):
        with pytest.raises(Unauthorized):
            validator.validate(f"forged-{n}", "acme")
    assert len(validator._refused) == 5
    assert not any("forged" in key for key in validator._refused)  # digests, not the tokens


def test_many_threads_validate_at_once(keystone):
    validator = KeystoneValidator(keystone, refusal_seconds=60)
    results: list[str] = []

    def check(token: str) -> None:
        try:
            results.append(validator.validate(token, "acme"))
        except Unauthorized:
            results.append("refused")

    threads = [threading.Thread(target=check, args=("good" if n % 2 else f"bad-{n % 4}",)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) == ["p-1", "refused"] and results.count("p-1") == 20
    again = len(_Keystone.calls)
    validator.validate("good", "acme")
    with pytest.raises(Unauthorized):
        validator.validate("bad-0", "acme")
    assert len(_Keystone.calls) == again  # both answers cached by now
