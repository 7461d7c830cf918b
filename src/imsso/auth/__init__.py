"""Who is calling: every request carries X-Auth-Token and X-Tenant-Name, checked by a validator.

Local tokens are issued by the orchestrator itself and stored hashed with an expiry; a Keystone
validator answers the same question against Keystone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from pathlib import Path
from typing import Protocol

from ..config import private_dir
from ..model import Forbidden, InvalidInput, Unauthorized, utcnow
from ..store import Store

TENANT_MAX = 255


class Validator(Protocol):
    def validate(self, token: str, tenant: str) -> str:
        """Return the tenant the token acts for, or raise Unauthorized / Forbidden / Unavailable."""


def check_headers(token: str | None, tenant: str | None) -> tuple[str, str]:
    if not token:
        raise Unauthorized(
            "missing X-Auth-Token header: get a token with `imsso token issue "
            "--tenant NAME` (or from Keystone when it is configured)"
        )
    if not tenant:
        raise InvalidInput("missing X-Tenant-Name header: name the tenant the token belongs to")
    if len(tenant) > TENANT_MAX:
        raise InvalidInput(f"X-Tenant-Name is longer than {TENANT_MAX} characters")
    if not tenant.isprintable():
        raise InvalidInput("X-Tenant-Name must be printable characters (no control characters)")
    return token, tenant


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LocalTokens:
    """Tokens made here: random, shown once, kept only as a SHA-256 digest with an expiry."""

    def __init__(self, store: Store, admin_token_file: Path, ttl: int):
        self.store = store
        self.ttl = ttl
        self.admin_token_file = admin_token_file

    def admin_token(self) -> str:
        """The secret that may issue tokens, readable only by whoever owns the data folder."""
        if not self.admin_token_file.exists():
            private_dir(self.admin_token_file.parent)
            tmp = self.admin_token_file.with_suffix(".new")
            tmp.touch(mode=0o600)
            tmp.write_text(secrets.token_urlsafe(32) + "\n")
            tmp.replace(self.admin_token_file)
        return self.admin_token_file.read_text().strip()

    def issue(self, admin_token: str | None, tenant: str, ttl: int | None = None) -> tuple[str, dt.datetime]:
        if not admin_token or not hmac.compare_digest(admin_token.encode(), self.admin_token().encode()):
            raise Unauthorized(
                "issuing tokens needs the admin token of this orchestrator (the file admin.token in its data folder)"
            )
        if not tenant or len(tenant) > TENANT_MAX:
            raise InvalidInput("tenant must be 1 to 255 characters")
        seconds = self.ttl if ttl is None else ttl
        if not 0 < seconds <= 30 * 86400:
            raise InvalidInput("ttl must be between 1 second and 30 days")
        token = secrets.token_urlsafe(32)
        expires = utcnow() + dt.timedelta(seconds=seconds)
        self.store.add_token(str(uuid.uuid4()), _digest(token), tenant, expires)
        return token, expires

    def validate(self, token: str, tenant: str) -> str:
        found = self.store.find_token(_digest(token))
        if found is None:
            raise Unauthorized("invalid token: not issued by this orchestrator")
        owner, expires = found
        if expires <= utcnow():
            raise Unauthorized(f"token expired at {expires.isoformat()}: issue a new one")
        if owner != tenant:
            raise Forbidden(f"the token is not valid for tenant '{tenant}'")
        return owner
