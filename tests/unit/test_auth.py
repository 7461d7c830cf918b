"""Local tokens and the request headers (imsso.auth), on a SQLite file."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import uuid
from pathlib import Path

import pytest

import imsso.auth as auth
from imsso.auth import LocalTokens, check_headers
from imsso.model import Forbidden, InvalidInput, Unauthorized, utcnow
from imsso.store import Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'imsso.db'}")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def tokens(store: Store, tmp_path: Path) -> LocalTokens:
    return LocalTokens(store, tmp_path / "data" / "admin.token", ttl=3600)


# --- issuing ------------------------------------------------------------------------------------------


def test_the_admin_token_is_made_once_and_kept_private(tokens: LocalTokens):
    first = tokens.admin_token()
    assert len(first) >= 32
    assert tokens.admin_token() == first
    assert LocalTokens(tokens.store, tokens.admin_token_file, 60).admin_token() == first
    assert stat.S_IMODE(os.stat(tokens.admin_token_file).st_mode) == 0o600


def test_issue_needs_the_admin_token(tokens: LocalTokens):
    admin = tokens.admin_token()
    for wrong in (None, "", "not-the-admin-token", admin + "x", admin[:-1]):
        with pytest.raises(Unauthorized) as err:
            tokens.issue(wrong, "acme")
        assert "admin token" in err.value.message
    token, expires = tokens.issue(admin, "acme")
    assert token and token != admin
    assert tokens.validate(token, "acme") == "acme"
    remaining = (expires - utcnow()).total_seconds()
    assert 3590 < remaining <= 3600  # the orchestrator's ttl


def test_issue_refuses_bad_tenants_and_ttls(tokens: LocalTokens):
    admin = tokens.admin_token()
    for tenant in ("", "t" * 256):
        with pytest.raises(InvalidInput):
            tokens.issue(admin, tenant)
    for ttl in (-1, 30 * 86400 + 1):
        with pytest.raises(InvalidInput) as err:
            tokens.issue(admin, "acme", ttl=ttl)
        assert "ttl" in err.value.message


def test_each_token_is_new(tokens: LocalTokens):
    admin = tokens.admin_token()
    issued = {tokens.issue(admin, "acme")[0] for _ in range(5)}
    assert len(issued) == 5


# --- validating ---------------------------------------------------------------------------------------


def test_an_unknown_token_is_unauthorized(tokens: LocalTokens):
    tokens.issue(tokens.admin_token(), "acme")
    with pytest.raises(Unauthorized) as err:
        tokens.validate("made-up-token", "acme")
    assert "invalid token" in err.value.message


def test_the_admin_token_is_not_a_tenant_token(tokens: LocalTokens):
    with pytest.raises(Unauthorized):
        tokens.validate(tokens.admin_token(), "acme")


def test_a_token_of_another_tenant_is_forbidden(tokens: LocalTokens):
    token, _ = tokens.issue(tokens.admin_token(), "acme")
    with pytest.raises(Forbidden) as err:
        tokens.validate(token, "globex")
    assert "globex" in err.value.message


def test_an_expired_token_is_unauthorized(tokens: LocalTokens, monkeypatch):
    token, expires = tokens.issue(tokens.admin_token(), "acme", ttl=1)
    assert tokens.validate(token, "acme") == "acme"
    later = expires + dt.timedelta(seconds=1)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    with pytest.raises(Unauthorized) as err:
        tokens.validate(token, "acme")
    assert "expired" in err.value.message
    assert "issue a new one" in err.value.message


def test_a_token_stored_expired_is_refused(tokens: LocalTokens, store: Store):
    # a token written by another orchestrator process, stored the way tokens are kept: hashed
    token = "token-of-yesterday"
    store.add_token(
        str(uuid.uuid4()), hashlib.sha256(token.encode()).hexdigest(), "acme", utcnow() - dt.timedelta(hours=1)
    )
    with pytest.raises(Unauthorized) as err:
        tokens.validate(token, "acme")
    assert "expired" in err.value.message
    fresh = "token-of-tomorrow"
    store.add_token(
        str(uuid.uuid4()), hashlib.sha256(fresh.encode()).hexdigest(), "acme", utcnow() + dt.timedelta(hours=1)
    )
    assert tokens.validate(fresh, "acme") == "acme"


def test_tokens_are_stored_hashed(tokens: LocalTokens, store: Store, tmp_path: Path):
    token, _ = tokens.issue(tokens.admin_token(), "acme")
    digest = hashlib.sha256(token.encode()).hexdigest()
    store.close()  # everything written to the database files
    database = b"".join(p.read_bytes() for p in tmp_path.glob("imsso.db*"))
    assert digest.encode() in database  # we look at the right place...
    assert token.encode() not in database  # ...and the token itself is not there


def test_a_token_survives_a_restart(tokens: LocalTokens, store: Store, tmp_path: Path):
    token, _ = tokens.issue(tokens.admin_token(), "acme")
    store.close()
    again = Store(store.url)
    try:
        assert LocalTokens(again, tokens.admin_token_file, 60).validate(token, "acme") == "acme"
    finally:
        again.close()


# --- headers ------------------------------------------------------------------------------------------


def test_check_headers():
    assert check_headers("tok", "acme") == ("tok", "acme")
    with pytest.raises(Unauthorized) as err:
        check_headers(None, "acme")
    assert "X-Auth-Token" in err.value.message
    with pytest.raises(Unauthorized):
        check_headers("", "acme")
    with pytest.raises(InvalidInput) as err:
        check_headers("tok", None)
    assert "X-Tenant-Name" in err.value.message
    with pytest.raises(InvalidInput):
        check_headers("tok", "")
    with pytest.raises(InvalidInput):
        check_headers("tok", "t" * 256)


def test_missing_token_is_reported_before_missing_tenant():
    with pytest.raises(Unauthorized):
        check_headers(None, None)
