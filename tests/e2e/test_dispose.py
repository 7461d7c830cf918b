"""DELETE at any time, on real units: during a deploy it is accepted, the deploy stops at its next
step, the dispose removes everything it had started. JSON, the OCCI guide's DELETE, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from guide import DELETE, DEPLOY, GET, INIT, curl
from harness import wait_for


def _deploying(api, name: str) -> dict:
    """Create `name` (deploy then provision) and return its deploy once a first unit started."""
    created = api.post("/v1/instances", json={"name": name, "profile": "sip-core", "sizes": {"scscf": 2}})
    assert created.status_code == 202, created.text
    op_id = created.json()["operation"]["id"]

    def started():
        op = api.get(f"/v1/operations/{op_id}").json()
        return op if any(s["name"].startswith("start ") and s["state"] == "done" for s in op["steps"]) else None

    return wait_for(started, 60, f"a first unit of {name} to start", interval=0.005)


def _chain(api, op_id: str) -> list[dict]:
    ops = [api.get(f"/v1/operations/{op_id}").json()]
    while ops[-1]["params"].get("followed_by"):
        ops.append(api.get(f"/v1/operations/{ops[-1]['params']['followed_by']}").json())
    return ops


def _processes_of(server, instance_id: str) -> list:
    return [p for p in server.unit_processes() if any(instance_id in part for part in p.cmdline())]


def test_delete_while_a_deploy_runs_cancels_it_and_leaves_nothing(server):
    api = server.api("anytime")
    deploy = _deploying(api, "anytime")
    instance_id = deploy["instance_id"]
    assert _processes_of(server, instance_id), "the deploy has started units"

    deleted = api.delete("/v1/instances/anytime")
    assert deleted.status_code == 202, deleted.text
    dispose = deleted.json()
    assert dispose["kind"] == "dispose" and deleted.headers["Location"] == f"/v1/operations/{dispose['id']}"
    again = api.delete(f"/v1/instances/{instance_id}")
    assert again.status_code == 202 and again.json()["id"] == dispose["id"], again.text
    refused = api.patch("/v1/instances/anytime", json={"sizes": {"scscf": 1}})
    assert refused.status_code == 409 and dispose["id"] in refused.text, refused.text

    done = api.wait_operation(dispose["id"])
    assert done["state"] == "succeeded", done
    cancelled = api.get(f"/v1/operations/{deploy['id']}").json()
    assert cancelled["state"] == "failed", cancelled
    assert cancelled["error"]["step"] == "cancelled"
    assert cancelled["error"]["message"] == f"cancelled by dispose {dispose['id']}"
    assert "followed_by" not in cancelled["params"], "the provision chained after it was dropped"
    assert api.get("/v1/instances/anytime").status_code == 404
    assert _processes_of(server, instance_id) == []
    assert not (server.data_dir / "instances" / instance_id).exists()


def test_the_guides_delete_during_its_deploy_is_accepted(server):
    kid, tenant = server.token("guide-delete"), "guide-delete"
    assert curl(INIT, kid, tenant)[0] == 201
    assert curl(DEPLOY, kid, tenant)[0] == 200
    api = server.api(tenant, kid)
    deploy_id = api.get("/v1/instances/default").json()["current_operation"]
    assert deploy_id, "the deploy runs"

    status, body = curl(DELETE, kid, tenant)
    assert status == 200, body
    wait_for(lambda: curl(GET, kid, tenant)[0] == 404, 60, "the instance to be gone")
    deploy = api.get(f"/v1/operations/{deploy_id}").json()
    assert deploy["state"] in ("failed", "succeeded"), deploy  # ended: cancelled, or done just before
    assert _processes_of(server, deploy["instance_id"]) == []
    assert not (server.data_dir / "instances" / deploy["instance_id"]).exists()


def test_imsso_dispose_during_a_deploy(server):
    api = server.api("cli-dispose")
    created = api.post("/v1/instances", json={"name": "cli-dispose", "profile": "sip-core", "sizes": {"scscf": 5}})
    assert created.status_code == 202, created.text
    deploy = created.json()["operation"]
    env = {**os.environ, "IMSSO_URL": server.url, "IMSSO_TOKEN": api.token, "IMSSO_TENANT": "cli-dispose"}
    done = subprocess.run(
        [sys.executable, "-m", "imsso", "dispose", "cli-dispose"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dispose succeeded" in done.stdout
    chain = _chain(api, deploy["id"])  # the deploy, and the provision if the deploy ended first
    assert chain[-1]["error"] and chain[-1]["error"]["step"] == "cancelled", chain[-1]
    assert all(op["state"] == "succeeded" for op in chain[:-1]), chain
    assert api.get("/v1/instances/cli-dispose").status_code == 404
    assert _processes_of(server, deploy["instance_id"]) == []
