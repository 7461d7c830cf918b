"""Fixtures against a real Keystone and Heat (scripts/openstack/start.sh brings them up).

Without them these tests are skipped with the reason, unless IMSSO_REQUIRE_OPENSTACK=1 (as in CI),
where their absence is a failure.
"""

from __future__ import annotations

import os

import cloud
import pytest
from keystone_serve import keystone_server

from harness import Api


def pytest_collection_modifyitems(items):
    for item in items:
        if "/openstack/" in str(item.fspath):
            item.add_marker(pytest.mark.openstack)


@pytest.fixture(scope="session", autouse=True)
def _cloud_up():
    if not cloud.available():
        reason = (
            "Keystone and Heat are not running: bash scripts/openstack/install.sh && bash scripts/openstack/start.sh"
        )
        if os.environ.get("IMSSO_REQUIRE_OPENSTACK") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = cloud.env()["keystone_url"].removesuffix("/v3") + "/v2.0"
    # On the guide's address: its curl commands name 127.0.0.1:8051.
    srv = keystone_server(tmp_path_factory.mktemp("imsso"), "127.0.0.1:8051", url).start()
    yield srv
    srv.stop()
    # Stacks a failing test left behind, so they do not pile up in the test cloud.
    heat = cloud.connection("alice")
    for stack in heat.orchestration.stacks():
        if stack.name.startswith("imsso-"):
            heat.orchestration.delete_stack(stack)


@pytest.fixture
def alice(server) -> Api:
    return Api(server.url, cloud.token("alice"), cloud.env()["users"]["alice"]["project"])


@pytest.fixture
def heat():
    """Alice's Heat, read directly, to see what the orchestrator really did."""
    return cloud.connection("alice")
