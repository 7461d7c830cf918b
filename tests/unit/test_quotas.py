"""Per-tenant quotas (IMSSO_QUOTA_INSTANCES, IMSSO_QUOTA_UNITS) and the address pool's end, as a
tenant sees them through both faces: 403 naming the quota, the use and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fakes import Orchestrator
from imsso.api.app import create_app
from imsso.config import Settings
from imsso.model import InvalidInput
from imsso.store import MAX_BLOCKS

ORCHESTRATOR_CATEGORY = 'orchestrator; scheme="http://schemas.mobile-cloud-networking.eu/occi/service#"'


@pytest.fixture
def orch(tmp_path: Path) -> Orchestrator:
    orch = Orchestrator(tmp_path / "data")
    orch.settings.quota_instances, orch.settings.quota_units = 2, 4
    return orch


@pytest.fixture
def client(orch: Orchestrator):
    with TestClient(create_app(orch)) as c:
        yield c


def _headers(orch: Orchestrator, tenant: str) -> dict[str, str]:
    return {"X-Auth-Token": orch.token(tenant), "X-Tenant-Name": tenant}


def _create(client, headers, name: str, sizes: dict | None = None):
    return client.post("/v1/instances", headers=headers, json={"name": name, "actions": [], "sizes": sizes or {}})


def test_the_instance_quota_refuses_one_more_with_the_setting_named(client, orch):
    orch.settings.quota_units = 0
    acme = _headers(orch, "acme")
    assert _create(client, acme, "one").status_code == 201
    assert _create(client, acme, "two").status_code == 201
    r = _create(client, acme, "three")
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "forbidden"
    assert "2 of 2 instances" in error["message"] and "IMSSO_QUOTA_INSTANCES" in error["message"]
    assert error["details"] == {"quota": "instances", "used": 2, "limit": 2, "setting": "IMSSO_QUOTA_INSTANCES"}
    assert [i["name"] for i in client.get("/v1/instances", headers=acme).json()] == ["one", "two"]
    # another tenant has its own quota
    assert _create(client, _headers(orch, "globex"), "three").status_code == 201


def test_disposed_instances_do_not_count(client, orch):
    orch.settings.quota_units = 0
    acme = _headers(orch, "acme")
    _create(client, acme, "one")
    _create(client, acme, "two")
    op = client.delete("/v1/instances/one", headers=acme).json()
    assert orch.wait(op["id"]).state.value == "succeeded"
    assert _create(client, acme, "three").status_code == 201


def test_the_unit_quota_counts_sizes_over_the_tenants_instances(client, orch):
    acme = _headers(orch, "acme")
    assert _create(client, acme, "one").status_code == 201  # sip-core: dns, pcscf, scscf = 3 units
    r = _create(client, acme, "two")
    assert r.status_code == 403
    error = r.json()["error"]
    assert "would have 6 units, 3 in use elsewhere and 3 here, of 4 (IMSSO_QUOTA_UNITS)" in error["message"]
    assert error["details"] == {"quota": "units", "used": 3, "requested": 3, "limit": 4, "setting": "IMSSO_QUOTA_UNITS"}


def test_scaling_up_past_the_unit_quota_is_refused_and_within_it_accepted(client, orch):
    acme = _headers(orch, "acme")
    _create(client, acme, "one")
    r = client.patch("/v1/instances/one", headers=acme, json={"sizes": {"scscf": 3}})
    assert r.status_code == 403 and "IMSSO_QUOTA_UNITS" in r.json()["error"]["message"]
    assert client.get("/v1/instances/one", headers=acme).json()["sizes"]["scscf"] == 1
    r = client.patch("/v1/instances/one", headers=acme, json={"sizes": {"scscf": 2}})
    assert r.status_code == 202, r.text


def test_occi_shows_the_same_refusal(client, orch):
    acme = _headers(orch, "acme")
    for name in ("one", "two"):
        r = client.put(
            f"/orchestrator/{name}", headers={**acme, "Content-Type": "text/occi", "Category": ORCHESTRATOR_CATEGORY}
        )
        assert r.status_code == (201 if name == "one" else 403), r.text
    assert "IMSSO_QUOTA_UNITS" in r.text and "of 4" in r.text


def test_zero_means_no_quota(client, orch):
    orch.settings.quota_instances = orch.settings.quota_units = 0
    acme = _headers(orch, "acme")
    for n in range(4):
        assert _create(client, acme, f"i{n}").status_code == 201


def test_an_exhausted_address_pool_is_a_clear_409_not_a_500(client, orch):
    orch.settings.quota_instances = orch.settings.quota_units = 0
    tenants = [_headers(orch, f"t{n}") for n in range(MAX_BLOCKS // 16)]
    for n in range(MAX_BLOCKS):
        assert _create(client, tenants[n % len(tenants)], f"i{n}").status_code == 201
    r = _create(client, tenants[0], "last")
    assert r.status_code == 409
    assert f"all {MAX_BLOCKS} address blocks are in use" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"IMSSO_QUOTA_INSTANCES": "ten"}, "IMSSO_QUOTA_INSTANCES must be a whole number"),
        ({"IMSSO_QUOTA_UNITS": "-1"}, "IMSSO_QUOTA_UNITS must be 0 or more"),
        ({"IMSSO_METRICS": "maybe"}, "IMSSO_METRICS 'maybe' must be one of auto, on, off"),
        ({"IMSSO_DOCS": "perhaps"}, "IMSSO_DOCS must be on or off"),
    ],
)
def test_bad_settings_are_refused_by_name(env, problem, tmp_path):
    with pytest.raises(InvalidInput) as err:
        Settings.from_env({"IMSSO_DATA_DIR": str(tmp_path), **env}).resolved()
    assert problem in err.value.message
