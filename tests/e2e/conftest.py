"""End-to-end fixtures: a real `imsso serve` on the guide's address, real Kamailio units, sipp."""

from __future__ import annotations

import shutil

import pytest

from harness import Server


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _tools_installed():
    missing = [tool for tool in ("kamailio", "sipp") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"end-to-end tests need {', '.join(missing)}: apt-get install kamailio "
            "kamailio-extra-modules kamailio-utils-modules kamailio-sqlite-modules "
            "kamailio-json-modules sip-tester",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The orchestrator on 127.0.0.1:8051 (the guide's address), units in 127.101.0.0/16."""
    srv = Server(tmp_path_factory.mktemp("imsso"), "127.0.0.1:8051", "127.101.0.0/16").start()
    yield srv
    srv.stop()
    srv.kill_units()  # units of instances a failing test left deployed


@pytest.fixture
def fresh_server(tmp_path):
    """An orchestrator of its own, for tests that kill and restart it."""
    srv = Server(tmp_path / "imsso", "127.0.0.1:8052", "127.102.0.0/16")
    yield srv
    srv.stop()
    srv.kill_units()
