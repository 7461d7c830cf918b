"""DELETE at any time through the faces (OCCI and JSON), around the fake driver: accepted while an
operation runs, the same dispose for a second DELETE, 409 naming the dispose for anything else."""

from __future__ import annotations

from test_api import acme, client, deploy, init, occi_attributes, orch  # noqa: F401 (fixtures)

from fakes import Orchestrator
from polling import wait_for


def test_occi_and_json_delete_while_a_deploy_runs(client, acme, orch: Orchestrator):  # noqa: F811
    entered, release = orch.driver.hold("wait_ready")
    init(client, acme)
    assert deploy(client, acme).status_code == 200
    assert entered.wait(5)
    running = orch.store.find_instance("acme", "default").current_operation_id

    r = client.delete("/orchestrator/default", headers=acme)
    assert r.status_code == 200, r.text
    assert occi_attributes(r)["mcn.service.state"] == '"deploying"'  # the deploy stops at its next step
    dispose = orch.store.queued_dispose(orch.store.find_instance("acme", "default").id)
    assert dispose.params["cancels"] == running

    again = client.delete("/v1/instances/default", headers=acme)
    assert again.status_code == 202 and again.json()["id"] == dispose.id
    assert again.headers["Location"] == f"/v1/operations/{dispose.id}"
    assert client.delete("/ims/" + dispose.instance_id, headers=acme).status_code == 200
    refused = client.post("/v1/instances/default/actions/provision", headers=acme)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"] == {"operation": dispose.id, "kind": "dispose"}
    assert (
        dispose.id
        in client.post(
            "/orchestrator/default?action=provision",
            headers={
                **acme,
                "Content-Type": "text/occi",
                "Category": 'provision; scheme="http://schemas.mobile-cloud-networking.eu/occi/service#"',
            },
        ).text
    )

    release.set()
    wait_for(
        lambda: client.get("/orchestrator/default", headers=acme).status_code == 404, what="the instance to be gone"
    )
    cancelled = client.get(f"/v1/operations/{running}", headers=acme).json()
    assert cancelled["state"] == "failed" and cancelled["error"]["step"] == "cancelled"
    assert client.delete("/orchestrator/default", headers=acme).status_code == 404  # nothing left
