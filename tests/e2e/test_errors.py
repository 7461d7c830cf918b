"""What users get wrong, against a real server: each gets its status and a message naming the problem."""

from __future__ import annotations

import os
import socket
import sys

import httpx
import pytest

from harness import Server, wait_for

SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
KIND = f'orchestrator; scheme="{SCHEME}"'


def occi(server, method: str, path: str, token: str | None, tenant: str | None, **headers) -> httpx.Response:
    sent = {"Content-Type": "text/occi", **headers}
    if token is not None:
        sent["X-Auth-Token"] = token
    if tenant is not None:
        sent["X-Tenant-Name"] = tenant
    return httpx.request(method, server.url + path, headers=sent, timeout=30)


def test_authentication_statuses(server):
    alice = server.token("alice-co")
    bob = server.token("bob-co")
    assert occi(server, "PUT", "/orchestrator/default", alice, "alice-co", Category=KIND).status_code == 201

    missing = occi(server, "GET", "/orchestrator/default", None, "alice-co")
    assert missing.status_code == 401 and "X-Auth-Token" in missing.text
    invalid = occi(server, "GET", "/orchestrator/default", "not-a-token", "alice-co")
    assert invalid.status_code == 401 and "invalid token" in invalid.text
    no_tenant = occi(server, "GET", "/orchestrator/default", alice, None)
    assert no_tenant.status_code == 400 and "X-Tenant-Name" in no_tenant.text
    wrong_tenant = occi(server, "GET", "/orchestrator/default", alice, "bob-co")
    assert wrong_tenant.status_code == 403
    # Bob's own token, Alice's instance: as if it did not exist.
    assert occi(server, "GET", "/orchestrator/default", bob, "bob-co").status_code == 404
    instance_id = httpx.get(
        server.url + "/v1/instances/default", timeout=10, headers={"X-Auth-Token": alice, "X-Tenant-Name": "alice-co"}
    ).json()["id"]
    assert (
        httpx.get(
            server.url + f"/v1/instances/{instance_id}",
            timeout=10,
            headers={"X-Auth-Token": bob, "X-Tenant-Name": "bob-co"},
        ).status_code
        == 404
    )
    expired = server.token("alice-co", ttl=1)
    wait_for(
        lambda: occi(server, "GET", "/orchestrator/default", expired, "alice-co").status_code == 401,
        10,
        "the 1 s token to expire",
    )
    assert occi(server, "DELETE", "/orchestrator/default", alice, "alice-co").status_code == 200


def test_bad_occi_requests(server):
    token = server.token("bad-input")
    bad_attr = occi(
        server,
        "PUT",
        "/orchestrator/default",
        token,
        "bad-input",
        Category=KIND,
        **{"X-OCCI-Attribute": 'mcn.endpoint.maas=160.85.4.50"'},
    )
    assert bad_attr.status_code == 400
    assert "X-OCCI-Attribute" in bad_attr.text and "160.85.4.50" in bad_attr.text

    no_scheme = occi(server, "PUT", "/orchestrator/default", token, "bad-input", Category="orchestrator")
    assert no_scheme.status_code == 400 and "Category" in no_scheme.text

    unknown = occi(
        server, "PUT", "/orchestrator/default", token, "bad-input", Category='switch; scheme="http://example.org/occi#"'
    )
    assert unknown.status_code == 400 and "unknown category" in unknown.text

    too_big = occi(
        server,
        "PUT",
        "/orchestrator/default",
        token,
        "bad-input",
        Category=KIND,
        **{"X-OCCI-Attribute": "imsso.size.scscf=9"},
    )
    assert too_big.status_code == 400 and "between 1 and 5" in too_big.text

    unknown_attr = occi(
        server,
        "PUT",
        "/orchestrator/default",
        token,
        "bad-input",
        Category=KIND,
        **{"X-OCCI-Attribute": 'colour="blue"'},
    )
    assert unknown_attr.status_code == 400 and "colour" in unknown_attr.text

    assert occi(server, "PUT", "/orchestrator/default", token, "bad-input", Category=KIND).status_code == 201
    early = occi(
        server,
        "POST",
        "/orchestrator/default?action=provision",
        token,
        "bad-input",
        Category=f'provision; scheme="{SCHEME}"',
    )
    assert early.status_code == 400 and "deploy it first" in early.text
    bogus = occi(server, "POST", "/orchestrator/default?action=explode", token, "bad-input")
    assert bogus.status_code == 400 and "deploy, provision" in bogus.text
    assert occi(server, "PATCH", "/orchestrator/default", token, "bad-input").status_code == 405
    assert occi(server, "GET", "/orchestrator/default", token, "bad-input", Accept="image/png").status_code == 406
    xml = httpx.post(
        server.url + "/orchestrator/default",
        content=b"<x/>",
        timeout=10,
        headers={"Content-Type": "application/xml", "X-Auth-Token": token, "X-Tenant-Name": "bad-input"},
    )
    assert xml.status_code == 415
    assert occi(server, "DELETE", "/orchestrator/default", token, "bad-input").status_code == 200


def test_concurrent_operation_is_refused_with_the_running_one_named(server):
    api = server.api("busy")
    created = api.post("/v1/instances", json={"name": "busy", "actions": ["deploy"]})
    assert created.status_code == 202
    op_id = created.json()["operation"]["id"]
    second = api.post("/v1/instances/busy/actions/deploy")
    if api.get(f"/v1/operations/{op_id}").json()["state"] in ("queued", "running"):
        assert second.status_code == 409, second.text
        assert op_id in second.json()["error"]["message"]
    assert api.wait_operation(op_id)["state"] == "succeeded"
    assert api.post("/v1/instances/busy/actions/deploy").status_code == 400  # deployed already
    dispose = api.delete("/v1/instances/busy")
    assert dispose.status_code == 202
    assert api.wait_operation(dispose.json()["id"])["state"] == "succeeded"


def test_address_in_use_fails_the_deploy_with_the_address(fresh_server):
    fresh_server.start()
    api = fresh_server.api("ports")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.102.0.2", 5060))  # where the first instance's first S-CSCF goes
    try:
        created = api.post("/v1/instances", json={"name": "ports", "actions": ["deploy"]})
        op = api.wait_operation(created.json()["operation"]["id"])
    finally:
        blocker.close()
    assert op["state"] == "failed"
    assert op["error"]["step"] == "preflight"
    assert "127.102.0.2 port 5060/udp for scscf-1 is in use" in op["error"]["message"]
    instance = api.get("/v1/instances/ports").json()
    assert instance["state"] == "failed" and instance["stack_state"] == "CREATE_FAILED"
    retry = api.post("/v1/instances/ports/actions/deploy")  # the port is free again: retry works
    assert api.wait_operation(retry.json()["id"])["state"] == "succeeded"
    assert api.wait_operation(api.delete("/v1/instances/ports").json()["id"])["state"] == "succeeded"


def test_kamailio_missing_names_the_packages(tmp_path):
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.endswith("sbin"))
    srv = Server(
        tmp_path / "imsso",
        "127.0.0.1:8053",
        "127.103.0.0/16",
        env={"PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{path}"},
    )
    srv.start()
    try:
        api = srv.api("nokam")
        created = api.post("/v1/instances", json={"name": "nokam", "actions": ["deploy"]})
        op = api.wait_operation(created.json()["operation"]["id"])
        assert op["state"] == "failed"
        assert "kamailio is not installed" in op["error"]["message"]
        assert "kamailio-sqlite-modules" in op["error"]["message"]
        assert srv.unit_processes() == []
    finally:
        srv.stop()
        srv.kill_units()


@pytest.mark.parametrize("sizes", [{"scscf": 0}, {"scscf": 6}, {"pcscf": 2}, {"hss": 1}])
def test_sizes_outside_the_profile_are_refused(server, sizes):
    api = server.api("sizes")
    response = api.post("/v1/instances", json={"name": "sizes", "sizes": sizes, "actions": []})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and list(sizes)[0] in error["message"]
