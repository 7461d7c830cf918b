"""The HTTP edge under abuse: body limit, OCCI item limits, work off the event loop, forged lines.

Through FastAPI's TestClient around the fake driver (tests/fakes.py), as in test_api.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fakes import Orchestrator
from imsso.api.app import create_app
from imsso.api.limits import RequestLimits
from imsso.api.occi import parse_request
from imsso.api.occi import routes as occi_routes

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
KIND = f'orchestrator; scheme="{SERVICE}"'
LIMIT = 4096
FORGED = 'X-OCCI-Attribute: occi.mcn.stack.state="CREATE_COMPLETE"'


@pytest.fixture
def orch(tmp_path: Path) -> Orchestrator:
    orchestrator = Orchestrator(tmp_path / "data")
    orchestrator.settings.max_body = LIMIT
    return orchestrator


@pytest.fixture
def client(orch: Orchestrator):
    with TestClient(create_app(orch)) as c:
        yield c


@pytest.fixture
def acme(orch: Orchestrator, client) -> dict[str, str]:
    return {"X-Auth-Token": orch.token("acme"), "X-Tenant-Name": "acme"}


def plain_body(attributes: dict[str, str]) -> str:
    lines = [f"Category: {KIND}"] + [f'X-OCCI-Attribute: {k}="{v}"' for k, v in attributes.items()]
    return "\n".join(lines) + "\n"


# --- the body limit -----------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_in_plain_text_on_occi_paths(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/plain"},
        content=plain_body({"mcn.pad": "x" * LIMIT}),
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/plain")
    assert f"at most {LIMIT} bytes" in r.text and "IMSSO_MAX_BODY" in r.text
    assert r.headers["connection"] == "close"
    assert client.get("/orchestrator/", headers=acme).text == ""  # nothing was created


def test_a_body_over_the_limit_is_413_as_json_on_v1_paths(client, acme):
    r = client.post("/v1/instances", headers=acme, content=json.dumps({"name": "big", "pad": "x" * LIMIT}))
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "too_large" and error["details"] == {"limit": LIMIT}
    assert "IMSSO_MAX_BODY" in error["message"]


def test_a_streamed_body_without_length_is_counted(client, acme):
    def chunks():
        for _ in range(8):
            yield b"X-OCCI-Attribute: mcn.a=" + b"1" * 1000 + b"\n"

    r = client.put("/orchestrator/default", headers={**acme, "Content-Type": "text/plain"}, content=chunks())
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and f"at most {LIMIT} bytes" in r.text


def test_a_streamed_json_body_is_refused_before_fastapi_reads_it_as_400(client, acme):
    r = client.post("/v1/instances", headers=acme, content=iter([b'{"name": "x", "pad": "', b"x" * LIMIT, b'"}']))
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_a_body_at_the_limit_is_read(client, acme):
    body = plain_body({"mcn.endpoint.maas": "160.85.4.50"})
    body += "\n" * (LIMIT - len(body))  # blank lines are no fields
    assert len(body) == LIMIT
    r = client.put("/orchestrator/default", headers={**acme, "Content-Type": "text/plain"}, content=body)
    assert r.status_code == 201, r.text


def test_headers_over_32_kib_are_431_naming_the_way_out(client, acme):
    many = {f"X-Pad-{i}": "x" * 1000 for i in range(70)}
    r = client.put("/orchestrator/default", headers={**acme, **many, "Content-Type": "text/occi", "Category": KIND})
    assert r.status_code == 431
    assert "at most 32768 bytes of headers" in r.text and "text/plain or application/occi+json body" in r.text
    r = client.get("/v1/instances", headers={**acme, **many})
    assert r.status_code == 431 and r.json()["error"]["details"] == {"limit": 32768}


def test_the_limit_stops_reading_as_soon_as_the_count_passes_it():
    """Chunk by chunk at the ASGI level: nothing after the chunk that passed the limit is asked for."""
    received: list[int] = []
    sent: list[dict] = []

    async def receive():
        received.append(len(received))
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless body

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        while True:
            await receive()

    limit = RequestLimits(app, 2500, lambda request, exc: occi_routes._respond(413, "text/plain", [], exc.detail))
    scope = {"type": "http", "method": "PUT", "path": "/orchestrator/x", "headers": [], "query_string": b""}
    asyncio.run(limit(scope, receive, send))
    assert len(received) == 3  # 1000, 2000, 3000 > 2500: refused there
    assert sent[0]["status"] == 413


# --- OCCI item limits ---------------------------------------------------------------------------------


def test_more_than_200_attributes_is_400_naming_the_limit(tmp_path):
    orch = Orchestrator(tmp_path / "big")  # the default limit of 1 MiB: room for 201 attributes
    with TestClient(create_app(orch)) as client:
        acme = {"X-Auth-Token": orch.token("acme"), "X-Tenant-Name": "acme"}
        r = client.put(
            "/orchestrator/default",
            headers={**acme, "Content-Type": "text/plain"},
            content=plain_body({f"mcn.a{i}": "1" for i in range(201)}),
        )
        assert r.status_code == 400
        assert "attribute 'mcn.a200' is one too many - a request carries at most 200" in r.text
        r = client.put(
            "/orchestrator/default",
            headers={**acme, "Content-Type": "text/plain"},
            content=plain_body({f"mcn.a{i}": "1" for i in range(200)}),
        )
        assert r.status_code == 201, r.text


def test_a_value_over_8_kib_is_400_naming_the_attribute():
    with pytest.raises(ValueError, match=r"attribute 'mcn\.big' holds 8193 characters - a value holds at most 8192"):
        parse_request([("X-OCCI-Attribute", 'mcn.big="' + "x" * 8193 + '"')], "text/occi", "")


# --- parsing and the service off the event loop -----------------------------------------------------


def test_parsing_and_the_service_run_in_a_worker_thread(client, acme, orch, monkeypatch):
    """Where each runs: asyncio.get_running_loop() works only on the event loop's own thread."""
    on_loop: dict[str, bool] = {}

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    def watched(name, real):
        def call(*args, **kwargs):
            on_loop[name] = running_loop()
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(occi_routes, "parse_request", watched("parse", occi_routes.parse_request))
    monkeypatch.setattr(orch.service, "create", watched("create", orch.service.create))
    monkeypatch.setattr(orch.service, "authenticate", watched("authenticate", orch.service.authenticate))
    r = client.put("/orchestrator/default", headers={**acme, "Content-Type": "text/occi", "Category": KIND})
    assert r.status_code == 201
    assert on_loop == {"parse": False, "create": False, "authenticate": False}


def test_a_stuck_service_call_does_not_stall_another_tenant(client, acme, orch, monkeypatch):
    globex = {"X-Auth-Token": orch.token("globex"), "X-Tenant-Name": "globex"}
    entered, release = threading.Event(), threading.Event()
    real_create = orch.service.create

    def stuck_create(*args, **kwargs):
        entered.set()
        release.wait(30)  # a deadlock guard only: the test releases it as soon as globex is answered
        return real_create(*args, **kwargs)

    monkeypatch.setattr(orch.service, "create", stuck_create)
    results: list[int] = []
    slow = threading.Thread(
        target=lambda: results.append(
            client.put(
                "/orchestrator/default", headers={**acme, "Content-Type": "text/occi", "Category": KIND}
            ).status_code
        )
    )
    slow.start()
    assert entered.wait(10)
    try:
        assert client.get("/orchestrator/", headers=globex).status_code == 200  # answered while acme waits
        assert not release.is_set()
    finally:
        release.set()
        slow.join(30)
    assert results == [201]


# --- names and values cannot forge a line of a rendering ------------------------------------------------


def test_a_name_with_a_newline_is_400_naming_it(client, acme):
    evil = 'mcn.x"\nX-OCCI-Attribute: occi.mcn.stack.state="CREATE_COMPLETE'
    body = json.dumps({"kind": SERVICE + "orchestrator", "attributes": {evil: "1"}})
    r = client.put("/orchestrator/default", headers={**acme, "Content-Type": "application/occi+json"}, content=body)
    assert r.status_code == 400
    assert "invalid attribute name 'mcn.x\"\\x0aX-OCCI-Attribute" in r.text
    assert "\nX-OCCI-Attribute" not in r.text  # the message itself stays one line
    r = client.post("/v1/instances", headers=acme, json={"name": "evil", "attributes": {evil: "1"}})
    assert r.status_code == 400 and evil in r.json()["error"]["message"]


def test_a_value_with_crlf_is_400_on_both_faces(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={
            **acme,
            "Content-Type": "text/occi",
            "Category": KIND,
            "X-OCCI-Attribute": 'mcn.endpoint.maas="1.2.3.4\\r\\n' + FORGED.replace('"', '\\"') + '"',
        },
    )
    assert r.status_code == 400
    assert "attribute 'mcn.endpoint.maas'" in r.text and "control character '\\r'" in r.text
    r = client.post(
        "/v1/instances",
        headers=acme,
        json={"name": "crlf", "attributes": {"mcn.endpoint.maas": "1.2.3.4\r\n" + FORGED}},
    )
    assert r.status_code == 400


def rendered_attributes(client, headers) -> dict[str, str]:
    return dict(
        re.findall(r"^X-OCCI-Attribute: ([^=]+)=(.*)$", client.get("/orchestrator/default", headers=headers).text, re.M)
    )


def test_a_stored_value_and_name_that_break_the_grammar_render_escaped(client, acme, orch):
    """As an older row or another writer might hold them: every rendering escapes, none gains a line."""
    r = client.put(
        "/orchestrator/default",
        headers={
            **acme,
            "Content-Type": "text/occi",
            "Category": KIND,
            "X-OCCI-Attribute": 'mcn.endpoint.maas="say \\"hi\\"\tthen go"',
        },
    )
    assert r.status_code == 201, r.text
    before = rendered_attributes(client, acme)
    instance = orch.store.find_instance("acme", "default")
    evil_value = 'x"\r\n' + FORGED + "\u2028" + FORGED
    evil_name = 'mcn.y"\n' + FORGED
    instance.attributes.update({"mcn.evil": evil_value, evil_name: "1"})
    orch.store.save_instance(instance)

    text = client.get("/orchestrator/default", headers=acme).text
    assert [line for line in text.splitlines() if line.startswith("X-OCCI-Attribute: occi.mcn.stack.state")] == [
        f"X-OCCI-Attribute: occi.mcn.stack.state={before['occi.mcn.stack.state']}"
    ]
    lines = text.split("\n")
    assert lines[-1] == "" and text.splitlines() == lines[:-1]  # no line break but LF, even for splitlines
    assert all(line.startswith(("Category: ", "Link: ", "X-OCCI-Attribute: ")) for line in lines[:-1])
    assert sum(line.startswith("X-OCCI-Attribute: ") for line in lines) == len(before) + 2
    attrs = rendered_attributes(client, acme)
    assert attrs["mcn.endpoint.maas"] == '"say \\"hi\\"\tthen go"'
    assert (
        attrs["mcn.evil"] == '"x\\"\\r\\n' + FORGED.replace('"', '\\"') + "\\u2028" + FORGED.replace('"', '\\"') + '"'
    )
    assert attrs["mcn.y%22%0AX-OCCI-Attribute%3A%20occi.mcn.stack.state%3D%22CREATE_COMPLETE%22"] == '"1"'

    occi = client.get("/orchestrator/default", headers={**acme, "Accept": "text/occi"})
    assert occi.status_code == 200
    header = occi.headers["x-occi-attribute"]
    assert "\n" not in header and "\r" not in header
    assert f'mcn.evil="x\\"\\r\\n{FORGED.replace(chr(34), chr(92) + chr(34))}' in header
    assert len(re.findall(r"(?:^|, )occi\.mcn\.stack\.state=", header)) == 1  # an attribute, not text in one

    doc = client.get("/orchestrator/default", headers={**acme, "Accept": "application/occi+json"}).json()
    assert doc["attributes"]["mcn.evil"] == evil_value and doc["attributes"][evil_name] == "1"
    assert doc["attributes"]["occi.mcn.stack.state"] == before["occi.mcn.stack.state"].strip('"')


def test_an_unpaired_surrogate_is_refused_and_one_stored_still_renders(client, acme, orch):
    body = json.dumps({"kind": SERVICE + "orchestrator", "attributes": {"mcn.a": "x\ud800"}})
    r = client.put("/orchestrator/default", headers={**acme, "Content-Type": "application/occi+json"}, content=body)
    assert r.status_code == 400 and "attribute 'mcn.a' holds the unpaired surrogate '\\ud800'" in r.text
    assert (
        client.put("/orchestrator/default", headers={**acme, "Content-Type": "text/occi", "Category": KIND}).status_code
        == 201
    )
    instance = orch.store.find_instance("acme", "default")
    instance.attributes["mcn.a"] = "x\ud800"  # as another writer might have stored it
    orch.store.save_instance(instance)
    for accept in ("text/plain", "text/occi", "application/occi+json"):
        r = client.get("/orchestrator/default", headers={**acme, "Accept": accept})
        assert r.status_code == 200 and "ud800" in r.text + str(r.headers), accept


def test_non_ascii_values_render_in_text_occi_headers_as_escapes(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/plain"},
        content=plain_body({"mcn.city": "Zürich €"}).encode(),
    )
    assert r.status_code == 201, r.text
    occi = client.get("/orchestrator/default", headers={**acme, "Accept": "text/occi"})
    assert occi.status_code == 200 and 'mcn.city="Z\\u00fcrich \\u20ac"' in occi.headers["x-occi-attribute"]
    assert 'mcn.city="Zürich €"' in client.get("/orchestrator/default", headers=acme).text
    parsed = parse_request(list(occi.headers.items()), "text/occi", "")
    assert parsed.attributes["mcn.city"] == "Zürich €"


def test_a_body_that_is_not_utf8_is_400_naming_the_byte(client, acme):
    r = client.put(
        "/orchestrator/default",
        headers={**acme, "Content-Type": "text/plain"},
        content=f"Category: {KIND}\n".encode() + b'X-OCCI-Attribute: mcn.a="\xff"\n',
    )
    assert r.status_code == 400 and "is not UTF-8" in r.text and "0xff" in r.text
