"""Tokens validated by Keystone v3, for orchestrators in front of an OpenStack cloud.

A token may validate itself in Keystone (policy `token_subject`), so no service account is needed.
Answers are cached for a short while; Keystone unreachable is `Unavailable`, never a pass.
"""

from __future__ import annotations

import hashlib
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from keystoneauth1 import session as ks_session
from keystoneauth1.exceptions import ConnectFailure, ConnectTimeout, DiscoveryFailure, SSLError

from ..model import Forbidden, Unauthorized, Unavailable

CACHE_MAX = 10000  # tokens remembered at once; beyond that, validations are not cached


def v3_url(url: str) -> str:
    """The v3 API of the Keystone at `url`, which may name v2.0 (as the original's DESIGN_URI did)."""
    parts = urlsplit(url.rstrip("/"))
    path = parts.path
    for suffix in ("/v2.0", "/v3"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urlunsplit((parts.scheme, parts.netloc, path + "/v3", "", ""))


class KeystoneValidator:
    def __init__(self, url: str, cache_seconds: float = 30.0, timeout: float = 5.0, refusal_seconds: float = 5.0):
        self.url = v3_url(url)
        self.cache_seconds = cache_seconds
        self.refusal_seconds = refusal_seconds  # a flood of bad tokens is not a flood to Keystone
        self.session = ks_session.Session(timeout=timeout)
        # Both caches are read and written by the API's threads (FastAPI runs the dependency in its
        # threadpool): every access holds the lock; Keystone is asked outside it.
        self._cache: dict[str, tuple[float, dict]] = {}
        self._refused: dict[str, float] = {}  # sha256 of a refused token -> until when it stays refused
        self._lock = threading.Lock()

    def validate(self, token: str, tenant: str) -> str:
        """The project's id: names repeat across Keystone domains, ids do not."""
        body = self._token(token)
        project = body.get("project") or {}
        if tenant not in (project.get("name"), project.get("id")):
            raise Forbidden(f"the token is scoped to project '{project.get('name')}', not '{tenant}'")
        return project["id"]

    def catalog(self, token: str) -> list[dict]:
        """The token's service catalog, for drivers that find their endpoints there."""
        return self._token(token).get("catalog", [])

    def _token(self, token: str) -> dict:
        now = time.monotonic()
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            hit = self._cache.get(token)
            if hit and hit[0] > now:
                return hit[1]
            if self._refused.get(digest, 0.0) > now:
                raise Unauthorized("invalid or expired token (Keystone refused it moments ago)")
        try:
            body = self._fetch(token)
        except Unauthorized:
            if self.refusal_seconds > 0:
                with self._lock:
                    _remember(self._refused, digest, now + self.refusal_seconds, now, lambda until: until)
            raise
        with self._lock:
            _remember(self._cache, token, (now + self.cache_seconds, body), now, lambda entry: entry[0])
        return body

    def _fetch(self, token: str) -> dict:
        try:
            response = self.session.get(
                f"{self.url}/auth/tokens",
                authenticated=False,
                raise_exc=False,
                headers={"X-Auth-Token": token, "X-Subject-Token": token},
            )
        except (ConnectFailure, ConnectTimeout, DiscoveryFailure, SSLError) as exc:
            raise Unavailable(f"Keystone at {self.url} is unreachable: {exc}") from exc
        if response.status_code in (401, 404):
            raise Unauthorized("invalid or expired token (Keystone refused it)")
        if response.status_code != 200:
            raise Unavailable(f"Keystone at {self.url} answered {response.status_code} to a token check")
        return response.json()["token"]


def _remember(cache: dict, key: str, value, now: float, until) -> None:
    """Keep `value` unless the cache is full of entries still valid (CACHE_MAX bounds memory)."""
    if len(cache) >= CACHE_MAX:  # drop what has expired before growing further
        for stale in [k for k, v in cache.items() if until(v) <= now]:
            del cache[stale]
    if len(cache) < CACHE_MAX:
        cache[key] = value
