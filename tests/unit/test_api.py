"""Both faces (OCCI and JSON) through FastAPI's TestClient, around the fake driver (tests/fakes.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fakes import Orchestrator
from imsso.api.app import create_app
from imsso.engine import Engine
from imsso.vault import ha1_pair
from polling import wait_for

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
SM = "http://schemas.mobile-cloud-networking.eu/occi/sm#"
ORCHESTRATOR_CATEGORY = f'orchestrator; scheme="{SERVICE}"'
DEPLOY_CATEGORY = f'deploy; scheme="{SERVICE}"'


@pytest.fixture
def orch(tmp_path: Path) -> Orchestrator:
    return Orchestrator(tmp_path / "data")


@pytest.fixture
def client(orch: Orchestrator):
    with TestClient(create_app(orch)) as c:
        yield c


@pytest.fixture
def acme(orch: Orchestrator, client) -> dict[str, str]:
    return {"X-Auth-Token": orch.token("acme"), "X-Tenant-Name": "acme"}


@pytest.fixture
def globex(orch: Orchestrator, client) -> dict[str, str]:
    return {"X-Auth-Token": orch.token("globex"), "X-Tenant-Name": "globex"}


# --- helpers ------------------------------------------------------------------------------------------


def occi_attributes(response) -> dict[str, str]:
    """X-OCCI-Attribute name -> value as rendered (strings keep their quotes), from the body lines."""
    return dict(re.findall(r"^X-OCCI-Attribute: ([a-z0-9_.-]+)=(.*)$", response.text, re.M))


def occi_links(response) -> list[str]:
    return re.findall(r"^Link: (.*)$", response.text, re.M)


def init(client, headers, name: str = "default") -> None:
    r = client.put(
        f"/orchestrator/{name}", headers={**headers, "Content-Type": "text/occi", "Category": ORCHESTRATOR_CATEGORY}
    )
    assert r.status_code == 201, r.text


def deploy(client, headers, name: str = "default"):
    return client.post(
        f"/orchestrator/{name}?action=deploy",
        headers={**headers, "Content-Type": "text/occi", "Category": DEPLOY_CATEGORY},
    )


def wait_state(client, headers, state: str, path: str = "/orchestrator/default") -> dict[str, str]:
    def reached():
        attrs = occi_attributes(client.get(path, headers=headers))
        return attrs if attrs.get("mcn.service.state") == f'"{state}"' else None

    return wait_for(reached, what=f"{path} in state {state}")


def wait_operation(client, headers, location: str) -> dict:
    def finished():
        body = client.get(location, headers=headers).json()
        return body if body["state"] in ("succeeded", "failed") else None

    return wait_for(finished, what=f"{location} finished")


# --- the user guide's four requests ------------------------------------------------------------------


def test_the_guides_four_requests(client, acme, orch: Orchestrator):
    # init
    r = client.put(
        "/orchestrator/default", headers={**acme, "Content-Type": "text/occi", "Category": ORCHESTRATOR_CATEGORY}
    )
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "http://testserver/orchestrator/default"
    attrs = occi_attributes(r)
    assert attrs["mcn.service.state"] == '"initialised"'
    assert attrs["occi.mcn.stack.state"] == '"INIT_COMPLETE"'

    # deploy
    r = deploy(client, acme)
    assert r.status_code == 200, r.text
    attrs = wait_state(client, acme, "deployed")
    assert attrs["occi.mcn.stack.state"] == '"CREATE_COMPLETE"'

    # update with the monitoring endpoint
    r = client.post(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/occi", "X-OCCI-Attribute": 'mcn.endpoint.maas="160.85.4.50"'},
    )
    assert r.status_code == 200, r.text
    attrs = wait_for(
        lambda: (
            (a := occi_attributes(client.get("/orchestrator/default", headers=acme))).get("mcn.endpoint.maas")
            and a.get("imsso.operation") is None
            and a
        ),
        what="mcn.endpoint.maas shown",
    )
    assert attrs["mcn.endpoint.maas"] == '"160.85.4.50"'
    assert attrs["mcn.service.state"] == '"deployed"'

    # delete: held in the driver until the answer is in, so the answer cannot race the dispose
    entered, release = orch.driver.hold("dispose")
    r = client.delete("/orchestrator/default", headers=acme)
    assert r.status_code == 200, r.text
    release.set()
    wait_for(lambda: client.get("/orchestrator/default", headers=acme).status_code == 404, what="GET 404 after DELETE")
    r = client.get("/orchestrator/default", headers=acme)
    assert "default" in r.text


def test_delete_answers_200_even_when_the_dispose_is_quick(tmp_path: Path):
    class InlineEngine(Engine):  # the worker wins the race every time
        def submit(self, op):
            self.run(op.id)

    orch = Orchestrator(tmp_path, engine_factory=InlineEngine)
    with TestClient(create_app(orch)) as client:
        headers = {"X-Auth-Token": orch.token("acme"), "X-Tenant-Name": "acme"}
        init(client, headers)
        assert client.delete("/orchestrator/default", headers=headers).status_code == 200


# --- GET renderings ------------------------------------------------------------------------------------


def test_get_renders_states_endpoints_sizes_and_action_links(client, acme, orch: Orchestrator):
    init(client, acme)
    r = client.get("/orchestrator/default", headers=acme)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert re.search(rf'^Category: orchestrator; scheme="{re.escape(SERVICE)}"; class="kind"', r.text, re.M)
    attrs = occi_attributes(r)
    assert attrs["occi.mcn.stack.state"] == '"INIT_COMPLETE"'  # not CREATE_COMPLETE before a deploy
    assert attrs["mcn.service.state"] == '"initialised"'
    assert attrs["imsso.size.scscf"] == "1"
    assert not any(name.startswith("mcn.endpoint.") for name in attrs)
    assert occi_links(r) == [f'</orchestrator/default?action=deploy>; rel="{SERVICE}deploy"']

    assert deploy(client, acme).status_code == 200
    attrs = wait_state(client, acme, "deployed")
    r = client.get("/orchestrator/default", headers=acme)
    units = orch.store.units(orch.store.find_instance("acme", "default").id)
    assert len(units) == 3
    for unit in units:
        assert attrs[f"mcn.endpoint.{unit.name}.local.private"] == f'"{unit.address}"'
    assert attrs["occi.mcn.stack.id"] == attrs["occi.core.id"]
    assert occi_links(r) == [f'</orchestrator/default?action=provision>; rel="{SERVICE}provision"']


def test_text_occi_puts_everything_in_headers(client, acme):
    init(client, acme)
    r = client.get("/orchestrator/default", headers={**acme, "Accept": "text/occi"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/occi")
    assert r.text == "OK"
    assert 'mcn.service.state="initialised"' in r.headers["x-occi-attribute"]
    assert 'occi.mcn.stack.state="INIT_COMPLETE"' in r.headers["x-occi-attribute"]
    assert r.headers["category"].startswith("orchestrator;")
    assert r.headers["link"] == f'</orchestrator/default?action=deploy>; rel="{SERVICE}deploy"'


def test_occi_json_rendering(client, acme):
    init(client, acme)
    r = client.get("/orchestrator/default", headers={**acme, "Accept": "application/occi+json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/occi+json")
    doc = r.json()
    assert doc["kind"] == SERVICE + "orchestrator"
    assert doc["attributes"]["mcn.service.state"] == "initialised"
    assert doc["attributes"]["occi.mcn.stack.state"] == "INIT_COMPLETE"
    assert doc["attributes"]["imsso.size.scscf"] == 1
    assert doc["actions"] == [SERVICE + "deploy"]
    assert doc["id"] == doc["attributes"]["occi.core.id"]


# --- OCCI errors -------------------------------------------------------------------------------------------


def test_an_accept_we_cannot_render_is_406(client, acme):
    init(client, acme)
    r = client.get("/orchestrator/default", headers={**acme, "Accept": "image/png"})
    assert r.status_code == 406
    assert "image/png" in r.text and "text/plain" in r.text


def test_a_body_we_cannot_read_is_415(client, acme):
    r = client.put(
        "/orchestrator/default", headers={**acme, "Content-Type": "application/xml"}, content="<orchestrator/>"
    )
    assert r.status_code == 415
    assert "application/xml" in r.text
    assert client.get("/orchestrator/default", headers=acme).status_code == 404  # nothing created


def test_a_malformed_attribute_is_400_naming_the_bad_part(client, acme):
    init(client, acme)
    r = client.post(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/occi", "X-OCCI-Attribute": "mcn.endpoint.maas=160.85.4.50"},
    )
    assert r.status_code == 400
    assert "X-OCCI-Attribute" in r.text
    assert "'mcn.endpoint.maas=160.85.4.50'" in r.text
    assert "quoted string" in r.text


def test_an_output_attribute_is_400_naming_it(client, acme):
    init(client, acme)
    r = client.post(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/occi", "X-OCCI-Attribute": 'occi.mcn.stack.state="CREATE_COMPLETE"'},
    )
    assert r.status_code == 400
    assert "occi.mcn.stack.state" in r.text


def test_an_unknown_category_is_400(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={
            **acme,
            "Content-Type": "text/occi",
            "Category": 'compute; scheme="http://schemas.ogf.org/occi/infrastructure#"',
        },
    )
    assert r.status_code == 400
    assert "unknown category http://schemas.ogf.org/occi/infrastructure#compute" in r.text
    assert "orchestrator" in r.text


def test_an_unknown_action_is_400(client, acme):
    init(client, acme)
    r = client.post("/orchestrator/default?action=reboot", headers={**acme, "Content-Type": "text/occi"})
    assert r.status_code == 400
    assert "unknown action 'reboot'" in r.text
    assert "deploy" in r.text and "provision" in r.text


def test_an_action_that_does_not_apply_now_is_400_with_the_reason(client, acme):
    init(client, acme)
    r = client.post(
        "/orchestrator/default?action=provision",
        headers={**acme, "Content-Type": "text/occi", "Category": f'provision; scheme="{SERVICE}"'},
    )
    assert r.status_code == 400
    assert "provision does not apply" in r.text
    assert "deploy it first" in r.text


def test_a_wrong_method_is_405(client, acme):
    init(client, acme)
    r = client.patch("/orchestrator/default", headers=acme)
    assert r.status_code == 405
    assert "PATCH is not allowed on /orchestrator/default" in r.text
    assert client.patch("/ims/", headers=acme).status_code == 405


def test_a_405_names_every_allowed_method(client, acme):
    init(client, acme)
    r = client.patch("/orchestrator/default", headers=acme)
    assert r.status_code == 405
    assert set(m.strip() for m in r.headers["allow"].split(",")) == {"GET", "PUT", "POST", "DELETE"}


def test_an_unknown_resource_is_404(client, acme):
    assert client.get("/orchestrator/nothing-here", headers=acme).status_code == 404
    assert client.post("/orchestrator/nothing-here?action=deploy", headers=acme).status_code == 404


# --- authentication ------------------------------------------------------------------------------------------


def test_auth_statuses(client, acme, globex, orch: Orchestrator):
    init(client, acme)
    path = "/orchestrator/default"
    r = client.get(path, headers={"X-Tenant-Name": "acme"})
    assert r.status_code == 401 and "X-Auth-Token" in r.text
    r = client.get(path, headers={"X-Auth-Token": "not-a-token", "X-Tenant-Name": "acme"})
    assert r.status_code == 401 and "invalid token" in r.text
    r = client.get(path, headers={"X-Auth-Token": acme["X-Auth-Token"]})
    assert r.status_code == 400 and "X-Tenant-Name" in r.text
    r = client.get(path, headers={"X-Auth-Token": acme["X-Auth-Token"], "X-Tenant-Name": "globex"})
    assert r.status_code == 403
    # another tenant's instance does not exist for them, by name or by id
    assert client.get(path, headers=globex).status_code == 404
    instance_id = orch.store.find_instance("acme", "default").id
    assert client.get(f"/ims/{instance_id}", headers=globex).status_code == 404
    assert deploy(client, globex).status_code == 404
    assert client.delete(path, headers=globex).status_code == 404
    assert client.get(path, headers=acme).status_code == 200


def test_every_occi_path_needs_a_token(client):
    for method, path in (
        ("GET", "/-/"),
        ("GET", "/orchestrator/"),
        ("PUT", "/orchestrator/default"),
        ("GET", "/ims/"),
        ("POST", "/ims/"),
    ):
        assert client.request(method, path).status_code == 401, path


# --- one operation at a time ----------------------------------------------------------------------------------


def test_a_concurrent_operation_is_409_naming_the_running_one(client, acme, orch: Orchestrator):
    entered, release = orch.driver.hold("wait_ready")
    init(client, acme)
    assert deploy(client, acme).status_code == 200
    assert entered.wait(5)
    running = orch.store.find_instance("acme", "default").current_operation_id
    assert running
    attrs = occi_attributes(client.get("/orchestrator/default", headers=acme))
    assert attrs["imsso.operation"] == f'"{running}"'
    assert attrs["occi.mcn.stack.state"] == '"CREATE_IN_PROGRESS"'
    assert occi_links(client.get("/orchestrator/default", headers=acme)) == []  # no action applies now

    r = deploy(client, acme)
    assert r.status_code == 409
    assert running in r.text and "deploy" in r.text
    # (DELETE is accepted at any time: tests/unit/test_dispose_api.py)
    r = client.post("/v1/instances/default/actions/provision", headers=acme)
    assert r.status_code == 409
    assert r.json()["error"]["details"]["operation"] == running
    release.set()
    wait_state(client, acme, "deployed")


# --- query interface and the service manager's collection -----------------------------------------------------


@pytest.mark.parametrize("path", ["/-/", "/.well-known/org/ogf/occi/-/"])
def test_query_interface(client, acme, path):
    r = client.get(path, headers=acme)
    assert r.status_code == 200
    categories = re.findall(r"^Category: (.*)$", r.text, re.M)
    kind = next(c for c in categories if c.startswith("orchestrator;"))
    assert f'scheme="{SERVICE}"' in kind and 'class="kind"' in kind
    assert 'location="/orchestrator/"' in kind
    assert f"{SERVICE}deploy" in kind and f"{SERVICE}provision" in kind
    assert "occi.mcn.stack.state" in kind
    for action in ("deploy", "provision"):
        assert any(c.startswith(f'{action}; scheme="{SERVICE}"; class="action"') for c in categories)
    ims = next(c for c in categories if c.startswith("ims;"))
    assert f'scheme="{SM}"' in ims and 'location="/ims/"' in ims

    doc = client.get(path, headers={**acme, "Accept": "application/occi+json"}).json()
    assert {(k["term"], k["scheme"]) for k in doc["kinds"]} >= {("orchestrator", SERVICE), ("ims", SM)}
    assert {a["term"] for a in doc["actions"]} == {"deploy", "provision"}


def test_ims_collection_creates_deploys_and_provisions(client, acme, orch: Orchestrator):
    r = client.post("/ims/", headers={**acme, "Content-Type": "text/occi", "Category": f'ims; scheme="{SM}"'})
    assert r.status_code == 201, r.text
    match = re.fullmatch(r"http://testserver/ims/([0-9a-f-]{36})", r.headers["Location"])
    assert match, r.headers["Location"]
    instance_id = match.group(1)

    r = client.get("/ims/", headers={**acme, "Accept": "text/uri-list"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/uri-list")
    assert r.text == f"http://testserver/ims/{instance_id}\r\n"

    attrs = wait_state(client, acme, "active", path=f"/ims/{instance_id}")
    assert attrs["occi.core.id"] == f'"{instance_id}"'
    assert [s.user for s in orch.store.subscribers(instance_id)] == ["alice", "bob"]
    r = client.get(f"/ims/{instance_id}", headers=acme)
    assert re.search(rf'^Category: ims; scheme="{re.escape(SM)}"', r.text, re.M)
    assert occi_links(r) == [f'</ims/{instance_id}?action=provision>; rel="{SERVICE}provision"']
    # the default listing is text/plain X-OCCI-Location lines
    r = client.get("/ims/", headers=acme)
    assert r.text == f"X-OCCI-Location: http://testserver/ims/{instance_id}\n"


def test_orchestrator_collection_lists_the_tenants_instances(client, acme, globex):
    init(client, acme)
    init(client, acme, "second")
    r = client.get("/orchestrator/", headers={**acme, "Accept": "text/uri-list"})
    assert r.text.split("\r\n")[:-1] == [
        "http://testserver/orchestrator/default",
        "http://testserver/orchestrator/second",
    ]
    assert client.get("/orchestrator/", headers={**globex, "Accept": "text/uri-list"}).text == ""


# --- the JSON face ------------------------------------------------------------------------------------------------


def test_json_create_runs_deploy_then_provision(client, acme):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "sizes": {"scscf": 2}})
    assert r.status_code == 202, r.text
    body = r.json()
    op_id = body["operation"]["id"]
    assert r.headers["Location"] == f"/v1/operations/{op_id}"
    assert body["operation"]["kind"] == "deploy"
    assert body["instance"]["name"] == "core" and body["instance"]["sizes"]["scscf"] == 2

    op = wait_operation(client, acme, f"/v1/operations/{op_id}")
    assert op["state"] == "succeeded", op["error"]
    assert op["kind"] == "deploy" and op["steps"] and op["error"] is None
    follow = wait_operation(client, acme, f"/v1/operations/{op['params']['followed_by']}")
    assert follow["kind"] == "provision" and follow["state"] == "succeeded", follow["error"]

    instance = client.get("/v1/instances/core", headers=acme).json()
    assert instance["state"] == "active" and instance["stack_state"] == "CREATE_COMPLETE"
    assert sorted(u["name"] for u in instance["units"]) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2"]
    assert all(u["state"] == "running" for u in instance["units"])
    assert client.get(f"/v1/instances/{instance['id']}", headers=acme).json()["name"] == "core"
    assert [i["name"] for i in client.get("/v1/instances", headers=acme).json()] == ["core"]


def test_json_operation_of_another_tenant_is_404(client, acme, globex):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "actions": ["deploy"]})
    location = r.headers["Location"]
    r = client.get(location, headers=globex)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    wait_operation(client, acme, location)


def test_json_errors_have_code_message_and_details(client, acme):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "actions": []})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v1/instances/{r.json()['instance']['id']}"
    r = client.patch("/v1/instances/core", headers=acme, json={"sizes": {"scscf": 9}})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": "invalid",
            "message": "size of scscf must be between 1 and 5 in profile sip-core, not 9",
            "details": {"role": "scscf", "min": 1, "max": 5, "given": 9},
        }
    }
    r = client.get("/v1/instances", headers={"X-Tenant-Name": "acme"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.get("/v1/instances/nothing", headers=acme)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post("/v1/instances/core/actions/provision", headers=acme)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_applicable"
    assert "deploy it first" in r.json()["error"]["message"]
    r = client.post("/v1/instances", headers=acme, json={"name": 3})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"


def test_json_patch_scales(client, acme, orch: Orchestrator):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "actions": ["deploy"]})
    wait_operation(client, acme, r.headers["Location"])
    r = client.patch("/v1/instances/core", headers=acme, json={"sizes": {"scscf": 2}})
    assert r.status_code == 202
    assert r.json()["kind"] == "scale"
    op = wait_operation(client, acme, r.headers["Location"])
    assert op["state"] == "succeeded", op["error"]
    units = client.get("/v1/instances/core", headers=acme).json()["units"]
    assert sorted(u["name"] for u in units) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2"]


def test_json_subscribers(client, acme, orch: Orchestrator):
    r = client.post(
        "/v1/instances",
        headers=acme,
        json={"name": "core", "actions": ["deploy"], "attributes": {"imsso.test_subscribers": False}},
    )
    wait_operation(client, acme, r.headers["Location"])
    instance_id = orch.store.find_instance("acme", "core").id
    base = "/v1/instances/core/subscribers"

    r = client.post(base, headers=acme, json={"user": "carol", "password": "carol-secret-1"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"{base}/carol"
    carol = {
        "user": "carol",
        "domain": "ims.test",
        "aor": "sip:carol@ims.test",
        "impi": "carol@ims.test",
        "impu": "sip:carol@ims.test",
        "auth": ["digest"],
        "digest": True,
        "aka": False,
    }
    assert r.json() == carol
    assert orch.driver.subscribers[instance_id] == ["carol"]  # pushed to the units at once

    assert client.get(base, headers=acme).json() == [carol]
    assert client.get(f"{base}/carol", headers=acme).json() == carol  # no password once set

    r = client.put(f"{base}/carol", headers=acme, json={"password": "carol-secret-2"})
    assert r.status_code == 200 and r.json() == carol
    ha1 = next(s.ha1 for s in orch.store.subscribers(instance_id) if s.user == "carol")
    assert ha1 == ha1_pair("carol", "ims.test", "carol-secret-2")[0]  # what the units got
    r = client.put(f"{base}/dave", headers=acme, json={"password": "dave-secret-1"})
    assert r.status_code == 201
    assert orch.driver.subscribers[instance_id] == ["carol", "dave"]

    r = client.post(base, headers=acme, json={"user": "eve", "k": "00" * 16, "opc": "11" * 16})
    assert (
        r.status_code == 400 and "profile sip-core authenticates with SIP Digest only" in r.json()["error"]["message"]
    )
    r = client.post(base, headers=acme, json={"user": "eve", "password": "short"})
    assert r.status_code == 400 and "8 to 64 characters" in r.json()["error"]["message"]
    r = client.post(base, headers=acme, json={"user": "eve", "password": "long-enough", "domain": "other.test"})
    assert r.status_code == 400 and "ims.test" in r.json()["error"]["message"]

    assert client.delete(f"{base}/carol", headers=acme).status_code == 204
    assert client.get(f"{base}/carol", headers=acme).status_code == 404
    assert client.delete(f"{base}/carol", headers=acme).status_code == 404
    assert orch.driver.subscribers[instance_id] == ["dave"]
    assert [s["user"] for s in client.get(base, headers=acme).json()] == ["dave"]


def test_no_secret_comes_back_from_any_path(client, acme, orch: Orchestrator):
    """An ims subscriber with a password, K and OPc: every answer about it, the instance, its
    events and operations, in JSON and OCCI, holds none of them."""
    r = client.post(
        "/v1/instances",
        headers=acme,
        json={"name": "core", "profile": "ims", "actions": ["deploy"], "attributes": {"imsso.test_subscribers": False}},
    )
    op = wait_operation(client, acme, r.headers["Location"])
    base = "/v1/instances/core/subscribers"
    k, opc, password = "465b5ce8b199b49faa5f0a2ee238a6bc", "cd63cb71954a9f4e48a5994e37a02baf", "zelda-secret-1"
    added = client.post(base, headers=acme, json={"user": "zelda", "password": password, "k": k, "opc": opc})
    assert added.status_code == 201, added.text
    replaced = client.put(f"{base}/zelda", headers=acme, json={"password": password, "k": k, "opc": opc.upper()})
    answers = [added, replaced] + [
        client.get(path, headers=acme)
        for path in (
            base,
            f"{base}/zelda",
            "/v1/instances/core",
            "/v1/instances/core/events",
            "/v1/instances",
            f"/v1/operations/{op['id']}",
            "/orchestrator/default",
            "/ims/",
        )
    ]
    for answer in answers:
        text = answer.text.lower()
        assert answer.status_code < 500 and not any(x in text for x in (k, opc, password)), answer.text
    shown = client.get(f"{base}/zelda", headers=acme).json()
    assert (shown["digest"], shown["aka"], shown["amf"]) == (True, True, "8000")
    assert "password" not in shown and "k" not in shown and "opc" not in shown
    # ...while the units still get them (ims: the HSS needs the password and the keys themselves)
    zelda = next(s for s in orch.store.subscribers(orch.store.find_instance("acme", "core").id))
    assert (zelda.password, zelda.k, zelda.opc) == (password, k, opc)
    assert password not in repr(zelda) and k not in repr(zelda)


def test_json_events_in_order_with_since(client, acme):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "actions": ["deploy"]})
    wait_operation(client, acme, r.headers["Location"])
    events = client.get("/v1/instances/core/events", headers=acme).json()
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    messages = [e["message"] for e in events]
    assert messages[0].startswith("initialised")
    assert messages.index("deploy requested") < messages.index("deploy started") < messages.index("deploy succeeded")
    since = events[2]["id"]
    later = client.get(f"/v1/instances/core/events?since={since}", headers=acme).json()
    assert later == events[3:]
    assert client.get(f"/v1/instances/core/events?since={ids[-1]}", headers=acme).json() == []


def test_openapi_lists_the_json_paths(client):
    doc = client.get("/v1/openapi.json").json()
    for path in (
        "/v1/profiles",
        "/v1/instances",
        "/v1/instances/{ref}",
        "/v1/instances/{ref}/actions/{action}",
        "/v1/instances/{ref}/events",
        "/v1/instances/{ref}/subscribers",
        "/v1/instances/{ref}/subscribers/{user}",
        "/v1/operations/{op_id}",
    ):
        assert path in doc["paths"], path
    assert set(doc["paths"]["/v1/instances/{ref}"]) >= {"get", "patch", "delete"}
    assert not any(p.startswith("/orchestrator") for p in doc["paths"])


def test_json_profiles(client, acme):
    profiles = client.get("/v1/profiles", headers=acme).json()
    sip_core = next(p for p in profiles if p["name"] == "sip-core")
    assert sip_core["roles"]["scscf"] == {"min": 1, "default": 1, "max": 5}


def test_tokens_through_the_api(client, orch: Orchestrator):
    r = client.post("/v1/tokens", json={"tenant": "acme"}, headers={"X-Auth-Token": "wrong"})
    assert r.status_code == 401
    r = client.post(
        "/v1/tokens", json={"tenant": "acme", "ttl": 60}, headers={"X-Auth-Token": orch.local_tokens.admin_token()}
    )
    assert r.status_code == 201
    token = r.json()["token"]
    assert client.get("/v1/instances", headers={"X-Auth-Token": token, "X-Tenant-Name": "acme"}).json() == []


def test_a_refused_create_leaves_no_instance(client, acme):
    r = client.post("/v1/instances", headers=acme, json={"name": "core", "actions": ["provision"]})
    assert r.status_code == 400
    assert client.get("/v1/instances/core", headers=acme).status_code == 404


def test_text_plain_body_requests(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/plain"},
        content=f"Category: {ORCHESTRATOR_CATEGORY}\nX-OCCI-Attribute: imsso.size.scscf=2\n",
    )
    assert r.status_code == 201, r.text
    assert occi_attributes(r)["imsso.size.scscf"] == "2"
    r = client.put(
        "/orchestrator/other",
        headers={**acme, "Content-Type": "text/plain"},
        content="X-OCCI-Attribute: imsso.size.scscf=7\n",
    )
    assert r.status_code == 400 and "between 1 and 5" in r.text
    r = client.put(
        "/orchestrator/third", headers={**acme, "Content-Type": "text/plain"}, content="Categry: orchestrator\n"
    )
    assert r.status_code == 400 and "line 1" in r.text


# --- /metrics and the docs behind settings ------------------------------------------------------------


@pytest.mark.parametrize(
    "listen, metrics, served",
    [
        ("127.0.0.1:8051", "auto", True),
        ("0.0.0.0:8051", "auto", False),
        ("10.1.2.3:8051", "auto", False),
        ("0.0.0.0:8051", "on", True),
        ("127.0.0.1:8051", "off", False),
    ],
)
def test_metrics_are_served_on_loopback_or_when_asked(tmp_path: Path, listen, metrics, served):
    from imsso.telemetry import Telemetry

    orch = Orchestrator(tmp_path / "data")
    orch.settings.listen, orch.settings.metrics = listen, metrics
    orch.telemetry = Telemetry(orch.store)
    with TestClient(create_app(orch)) as client:
        r = client.get("/metrics")
        assert r.status_code == (200 if served else 404)
        assert ("imsso_" in r.text) == served


@pytest.mark.parametrize("docs", [True, False])
def test_the_swagger_ui_is_a_setting_and_the_contract_stays_public(tmp_path: Path, docs):
    orch = Orchestrator(tmp_path / "data")
    orch.settings.docs = docs
    with TestClient(create_app(orch)) as client:
        assert client.get("/v1/docs").status_code == (200 if docs else 404)
        doc = client.get("/v1/openapi.json")
        assert doc.status_code == 200 and "/v1/instances" in doc.json()["paths"]


def test_the_document_declares_the_errors_and_rules_the_server_applies(client):
    doc = client.get("/v1/openapi.json").json()
    create = doc["paths"]["/v1/instances"]["post"]
    assert {"400", "401", "403", "404", "409", "413", "503"} <= set(create["responses"])
    assert "422" not in create["responses"]  # invalid input is 400, with the error body
    error = create["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error == "#/components/schemas/ErrorBody"
    body = doc["components"]["schemas"]["InstanceCreate"]
    assert body["properties"]["name"]["pattern"].startswith("^[a-z0-9]")
    assert body["properties"]["actions"]["enum"] == [[], ["deploy"], ["deploy", "provision"]]
    action = next(
        p for p in doc["paths"]["/v1/instances/{ref}/actions/{action}"]["post"]["parameters"] if p["name"] == "action"
    )
    assert action["schema"]["enum"] == ["deploy", "provision"]
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-Auth-Token"


def test_a_body_field_the_document_does_not_name_is_400(client, acme):
    r = client.post("/v1/instances", headers=acme, json={"name": "x", "actions": [], "sizez": {"scscf": 2}})
    assert r.status_code == 400 and "sizez" in r.json()["error"]["message"]
    r = client.post("/v1/instances/x/actions/redeploy", headers=acme)
    assert r.status_code == 400 and "deploy" in r.json()["error"]["message"]
