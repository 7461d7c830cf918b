"""Fixtures shared by all the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import pg  # tests/pg.py: finds or starts PostgreSQL
from imsso.store import Store
from imsso.vault import Vault

# --- databases ------------------------------------------------------------------------------------
#   postgres_url  (session)  a PostgreSQL server: $IMSSO_TEST_POSTGRES_URL, or a private one
#   store_url     (per test) the URL of a new, empty database; runs once on SQLite, once on
#                            PostgreSQL (marked `postgres`: deselect with -m "not postgres")
#   store         (per test) a migrated Store on store_url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL database the session may use and create databases beside."""
    if os.environ.get(pg.ENV_URL):
        yield os.environ[pg.ENV_URL]
        return
    try:
        server, problem = pg.PrivateServer.start_new(), None
    except pg.PostgresUnavailable as e:
        server, problem = None, str(e)
    if server is None:
        pytest.fail(f"no PostgreSQL for the tests: {problem}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'imsso.db'}"
    else:
        with pg.fresh_database(request.getfixturevalue("postgres_url")) as url:
            yield url


@pytest.fixture
def store(store_url: str, tmp_path) -> Iterator[Store]:
    s = Store(store_url, Vault(tmp_path / "secrets.key"))
    s.migrate()
    yield s
    s.close()
