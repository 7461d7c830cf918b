"""Kamailio's JSON-RPC over HTTP (jsonrpcs + xhttp) and its Prometheus metrics (xhttp_prom).

A unit answers JSON-RPC only with its management key (`Authorization: Bearer <key>`, see
imsso.unitkeys); /metrics is open (counters only). The local driver keeps each unit's key in
the unit's 0700 folder (management.key), where `local_key` finds it for tools run as the
orchestrator's user (tests, benchmarks, an operator's script).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import psutil

from ...programs.kamailio import PROGRAM as KAMAILIO

KEY_FILE = "management.key"

# Kamailio's HTTP workers are few: never hold one with a kept-alive connection.
CLOSE = {"Connection": "close"}


class RpcError(Exception):
    """A Kamailio RPC failed: refused, timed out, HTTP error, or a JSON-RPC error answer."""


class KamailioRpc:
    _ids = itertools.count(1)

    def __init__(self, address: str, port: int = 5080, timeout: float = 2.0, key: str | None = None) -> None:
        host = f"[{address}]" if ":" in address else address
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self.headers = {**CLOSE, **({"Authorization": f"Bearer {key}"} if key else {})}

    def call(self, method: str, *params: Any) -> Any:
        """The `result` of one JSON-RPC 2.0 call."""
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(self._ids)}
        response = self._send("POST", "/RPC", method, json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]  # Kamailio may send this with an HTTP error status too
            raise RpcError(f"{self.base} {method}: error {error.get('code')}: {error.get('message')}")
        if response.is_error:
            raise RpcError(
                f"{self.base} {method}: HTTP {response.status_code} {response.reason_phrase}"
                f": {response.text.strip()[:200]}"
            )
        if not isinstance(answer, dict) or "result" not in answer:
            raise RpcError(f"{self.base} {method}: not a JSON-RPC answer: {response.text[:200]!r}")
        return answer["result"]

    def metrics(self) -> str:
        """The Prometheus text exposition at /metrics."""
        response = self._send("GET", "/metrics", "metrics")
        if response.is_error:
            raise RpcError(f"{self.base} metrics: HTTP {response.status_code} {response.reason_phrase}")
        return response.text

    def _send(self, verb: str, path: str, what: str, json: Any = None) -> httpx.Response:
        try:
            # trust_env off: a proxy from the environment must not catch loopback calls
            return httpx.request(
                verb, self.base + path, json=json, headers=self.headers, timeout=self.timeout, trust_env=False
            )
        except httpx.HTTPError as exc:
            raise RpcError(f"{self.base} {what}: {type(exc).__name__}: {str(exc) or 'no detail'}") from exc


def local_key(address: str, port: int = 5080) -> str | None:
    """The management key of the local-driver Kamailio that listens on `address`, or None.

    Found through the running process's config (`-f <unit folder>/kamailio.cfg`): the key file
    lies next to it, readable only by the orchestrator's user."""
    listen = f"listen=tcp:{address}:{port}\n"
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if proc.info["name"] != KAMAILIO.binary or "-f" not in argv[:-1]:
            continue
        config = Path(argv[argv.index("-f") + 1])
        try:
            if listen in config.read_text():
                return (config.parent / KEY_FILE).read_text().strip()
        except OSError:
            continue
    return None
