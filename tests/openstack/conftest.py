"""Fixtures against a real Keystone and Heat (scripts/openstack/start.sh brings them up).

Without them these tests are skipped with the reason, unless IMSSO_REQUIRE_OPENSTACK=1 (as in CI),
where their absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cloud
from e2e.harness import Api, Server

ENVIRONMENTS = Path(__file__).parent / "environments"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/openstack/" in str(item.fspath):
            item.add_marker(pytest.mark.openstack)


@pytest.fixture(scope="session", autouse=True)
def _cloud_up():
    if not cloud.available():
        reason = ("Keystone and Heat are not running: bash scripts/openstack/install.sh && "
                  "bash scripts/openstack/start.sh")
        if os.environ.get("IMSSO_REQUIRE_OPENSTACK") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def keystone_server(data_dir: Path, listen: str, keystone_url: str) -> Server:
    """`imsso serve` validating tokens with Keystone (the guide's v2.0 URL) and deploying on Heat."""
    return Server(data_dir, listen, "127.106.0.0/16", env={
        "DESIGN_URI": keystone_url,
        "IMSSO_DRIVER": "openstack",
        "IMSSO_OS_REGION": cloud.env()["region"],
        "IMSSO_HEAT_ENVIRONMENT": str(ENVIRONMENTS / "no-compute.yaml"),
        "IMSSO_HEAT_ENVIRONMENT_DIR": str(ENVIRONMENTS),
        "IMSSO_KEYSTONE_CACHE": "5",
    })


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = cloud.env()["keystone_url"].removesuffix("/v3") + "/v2.0"
    srv = keystone_server(tmp_path_factory.mktemp("imsso"), "127.0.0.1:8056", url).start()
    yield srv
    srv.stop()


@pytest.fixture
def alice(server) -> Api:
    return Api(server.url, cloud.token("alice"), cloud.env()["users"]["alice"]["project"])


@pytest.fixture
def heat():
    """Alice's Heat, read directly, to see what the orchestrator really did."""
    return cloud.connection("alice")
