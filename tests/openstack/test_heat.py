"""The orchestrator on a real Keystone and a real Heat: the guide's commands with a Keystone token,
stacks really created, updated and deleted, scaling, failures with Heat's reason, and tokens."""

from __future__ import annotations

import re
import subprocess
import sys

import cloud
import httpx
from keystone_serve import keystone_server

from guide import DELETE, DEPLOY, GET, INIT, PROVISION, UPDATE, attributes, curl
from polling import wait_for


def stack_of(heat, stack_id: str):
    stack = heat.orchestration.find_stack(stack_id, ignore_missing=True)
    return None if stack is None or stack.status == "DELETE_COMPLETE" else stack


def resources(heat, stack_id: str) -> dict[str, str]:
    return {r.name: r.status for r in heat.orchestration.resources(stack_id)}


def settled(kid: str, tenant: str, state: str) -> dict[str, str]:
    """The instance's attributes once mcn.service.state is `state` (fails on "failed")."""

    def check():
        attrs = attributes(curl(GET, kid, tenant)[1])
        assert attrs.get("mcn.service.state") != '"failed"', attrs
        return attrs if attrs.get("mcn.service.state") == f'"{state}"' else None

    return wait_for(check, 120, f"mcn.service.state {state}", interval=0.2)


def test_guide_commands_with_a_keystone_token_drive_a_real_stack(server, heat):
    kid, tenant = cloud.token("alice"), cloud.env()["users"]["alice"]["project"]
    status, body = curl(INIT, kid, tenant)
    assert status == 201, body

    assert curl(DEPLOY, kid, tenant)[0] == 200
    attrs = settled(kid, tenant, "deployed")
    stack_id = attrs["occi.mcn.stack.id"].strip('"')
    stack = stack_of(heat, stack_id)
    assert stack is not None and stack.status == "CREATE_COMPLETE"
    assert attrs["occi.mcn.stack.state"] == '"CREATE_COMPLETE"'
    assert attrs["imsso.driver"] == '"openstack"'
    assert attrs["mcn.endpoint.pcscf-1.private.private"].startswith('"10.0.0.')
    servers = {n for n, s in resources(heat, stack_id).items() if s == "CREATE_COMPLETE"}
    assert {"pcscf-1", "scscf-1", "dns-1", "pcscf-1-port", "scscf-1-ready-handle"} <= servers

    assert curl(PROVISION, kid, tenant)[0] == 200
    settled(kid, tenant, "active")

    assert curl(UPDATE, kid, tenant)[0] == 200
    attrs = wait_for(lambda: (a := settled(kid, tenant, "active")).get("mcn.endpoint.maas") and a, 120, "the update")
    assert attrs["mcn.endpoint.maas"] == '"160.85.4.50"'
    assert stack_of(heat, stack_id).status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")

    assert curl(DELETE, kid, tenant)[0] == 200
    wait_for(lambda: curl(GET, kid, tenant)[0] == 404, 120, "the instance gone")
    assert stack_of(heat, stack_id) is None


def test_scaling_updates_the_stack_and_its_outputs(alice, heat):
    instance = alice.create("scaled", actions=["deploy"])
    stack_id = instance["stack_id"]
    for size, names in ((3, {"scscf-1", "scscf-2", "scscf-3"}), (2, {"scscf-1", "scscf-2"})):
        response = alice.patch("/v1/instances/scaled", json={"sizes": {"scscf": size}})
        assert response.status_code == 202, response.text
        op = alice.wait_operation(response.json()["id"])
        assert op["state"] == "succeeded", op
        assert "stack update" in [s["name"] for s in op["steps"]]
        stack = stack_of(heat, stack_id)
        assert stack.status == "UPDATE_COMPLETE"
        in_heat = {n for n in resources(heat, stack_id) if re.fullmatch(r"scscf-\d+", n)}
        assert in_heat == names
        outputs = {o["output_key"] for o in heat.orchestration.get_stack(stack_id).outputs}
        assert {f"mcn.endpoint.{n}.private.private" for n in names} <= outputs
        shown = alice.get("/v1/instances/scaled").json()
        assert {k.split(".")[2] for k in shown["endpoints"] if ".scscf-" in k} == names
        assert shown["stack_state"] == "UPDATE_COMPLETE"
    op = alice.wait_operation(alice.delete("/v1/instances/scaled").json()["id"])
    assert op["state"] == "succeeded", op
    assert stack_of(heat, stack_id) is None


def test_a_failing_resource_fails_the_operation_with_heats_reason_and_can_be_fixed(alice, heat):
    # Servers that never signal their wait condition: Heat fails it after the boot timeout.
    response = alice.post(
        "/v1/instances",
        json={
            "name": "doomed",
            "actions": ["deploy"],
            "driver": "openstack",
            "attributes": {"imsso.os.environment": "servers-never-signal", "imsso.os.boot_timeout": "2"},
        },
    )
    assert response.status_code == 202, response.text
    op = alice.wait_operation(response.json()["operation"]["id"])
    assert op["state"] == "failed"
    assert op["error"]["step"] == "stack create"
    assert "CREATE_FAILED" in op["error"]["message"] and "WaitCondition" in op["error"]["message"]
    failed = alice.get("/v1/instances/doomed").json()
    assert failed["state"] == "failed" and failed["stack_state"] == "CREATE_FAILED"
    assert stack_of(heat, failed["stack_id"]).status == "CREATE_FAILED"

    # The fix: the environment where servers are not waited for; the update retries the stack.
    response = alice.patch("/v1/instances/doomed", json={"attributes": {"imsso.os.environment": "no-compute"}})
    assert response.status_code == 202, response.text
    op = alice.wait_operation(response.json()["id"])
    assert op["state"] == "succeeded", op
    assert stack_of(heat, failed["stack_id"]).status == "UPDATE_COMPLETE"

    op = alice.wait_operation(alice.delete("/v1/instances/doomed").json()["id"])
    assert op["state"] == "succeeded", op
    assert stack_of(heat, failed["stack_id"]) is None


def test_a_half_created_stack_can_be_disposed_of(alice, heat):
    response = alice.post(
        "/v1/instances",
        json={
            "name": "halfway",
            "actions": ["deploy"],
            "driver": "openstack",
            "attributes": {"imsso.os.environment": "servers-never-signal", "imsso.os.boot_timeout": "1"},
        },
    )
    op = alice.wait_operation(response.json()["operation"]["id"])
    assert op["state"] == "failed"
    stack_id = alice.get("/v1/instances/halfway").json()["stack_id"]
    done = resources(heat, stack_id)
    assert "CREATE_FAILED" in done.values() and "CREATE_COMPLETE" in done.values()  # half made
    op = alice.wait_operation(alice.delete("/v1/instances/halfway").json()["id"])
    assert op["state"] == "succeeded", op
    assert stack_of(heat, stack_id) is None
    instance_id = alice.get("/v1/instances").json()  # gone from the list too
    assert not [i for i in instance_id if i["name"] == "halfway"]
    # Heat drops the row a moment after DELETE_COMPLETE: the stack may still be listed as deleted.
    assert not [s for s in heat.orchestration.stacks() if s.id == stack_id and s.status != "DELETE_COMPLETE"]


def test_plan_shows_what_an_update_would_do_without_doing_it(server, alice, heat):
    instance = alice.create("planned", actions=["deploy"])
    env = {**server.env, "IMSSO_URL": server.url, "IMSSO_TOKEN": alice.token, "IMSSO_TENANT": alice.tenant}
    done = subprocess.run(
        [sys.executable, "-m", "imsso", "plan", "planned", "--size", "scscf=2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "UPDATE" in done.stdout or "CREATE_COMPLETE" in done.stdout
    assert "added" in done.stdout and "scscf-2" in done.stdout
    assert "+  scscf-2:" in done.stdout  # the template's diff
    assert [r.name for r in heat.orchestration.resources(instance["stack_id"]) if r.name == "scscf-2"] == []
    plan = alice.post("/v1/instances/planned/plan", json={"attributes": {"imsso.os.flavor": "m1.large"}})
    assert plan.status_code == 200, plan.text
    assert plan.json()["template"]["parameters"]["flavor"]["default"] == "m1.large"
    assert "+    default: m1.large" in plan.json()["diff"]
    alice.wait_operation(alice.delete("/v1/instances/planned").json()["id"])


def test_tokens_are_checked_by_keystone(server, tmp_path):
    tenant = cloud.env()["users"]["alice"]["project"]

    def get(token: str, tenant_name: str = tenant) -> httpx.Response:
        return httpx.get(server.url + "/v1/instances", headers={"X-Auth-Token": token, "X-Tenant-Name": tenant_name})

    assert get(cloud.token("alice")).status_code == 200
    invalid = get("gAAAAABnot-a-token")
    assert invalid.status_code == 401 and "Keystone refused it" in invalid.json()["error"]["message"]
    assert get(cloud.expired_token("alice")).status_code == 401
    other = get(cloud.token("bob"))
    assert other.status_code == 403
    assert "scoped to project 'tenant-b', not 'tenant-a'" in other.json()["error"]["message"]

    down = keystone_server(tmp_path / "down", "127.0.0.1:8057", "http://127.0.0.1:9/v2.0").start()
    try:
        response = httpx.get(
            down.url + "/v1/instances", headers={"X-Auth-Token": cloud.token("alice"), "X-Tenant-Name": tenant}
        )
        assert response.status_code == 503
        assert "Keystone at http://127.0.0.1:9/v3 is unreachable" in response.json()["error"]["message"]
    finally:
        down.stop()
