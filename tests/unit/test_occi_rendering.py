"""Rendering OCCI responses and negotiating their media type."""

from __future__ import annotations

import json

import pytest

from imsso.api.occi.model import (
    COLLECTION_MEDIA_TYPES,
    ENTITY_MEDIA_TYPES,
    AttributeValue,
    Category,
    Entity,
    Link,
    NotAcceptable,
)
from imsso.api.occi.parsing import parse_request
from imsso.api.occi.rendering import (
    negotiate,
    render_attribute_value,
    render_collection,
    render_entities,
    render_entity,
    render_error,
    render_query,
)

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
DEPLOY = Category("deploy", SERVICE, "action", title="Deploy the IMS")
DISPOSE = Category("delete", SERVICE, "action")
ORCHESTRATOR = Category(
    "orchestrator",
    SERVICE,
    "kind",
    title="IMS service orchestrator",
    rel="http://schemas.ogf.org/occi/core#resource",
    location="/orchestrator/",
    attributes=("mcn.endpoint.maas{required}", "occi.core.id{immutable}", "mcn.region"),
    actions=(DEPLOY.id, DISPOSE.id),
)
SMALL = Category("small", "http://example.com/tpl#", "mixin", rel="http://example.com/tpl#base", location="/small/")
ATTRIBUTES: dict[str, AttributeValue] = {
    "mcn.endpoint.maas": "160.85.4.50",
    "mcn.text": 'say "hi", then \\ leave;\tnext, after a tab',
    "mcn.count": 3,
    "mcn.ratio": 0.25,
    "mcn.ready": True,
    "mcn.failed": False,
    "mcn.empty": "",
}
ENTITY = Entity(
    kind=ORCHESTRATOR,
    location="/orchestrator/default",
    attributes=ATTRIBUTES,
    actions=(("/orchestrator/default?action=deploy", DEPLOY),),
    mixins=(SMALL,),
    links=(
        Link("/net/1", "http://x.org/infra#network", "/link/nic/1", "http://x.org/infra#nic", {"occi.nic.mtu": 1500}),
    ),
)


# --- negotiate ----------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "", "   ", "*/*", "*/*;q=0.8", "nonsense"])
def test_negotiate_defaults_to_text_plain(accept: str | None) -> None:
    assert negotiate(accept, ENTITY_MEDIA_TYPES) == "text/plain"


def test_negotiate_wildcard_prefers_text_plain_whatever_the_offer_order() -> None:
    assert negotiate("*/*", ["application/occi+json", "text/occi", "text/plain"]) == "text/plain"
    assert negotiate("text/*", ["text/occi", "text/plain"]) == "text/plain"


def test_negotiate_default_when_text_plain_is_not_offered() -> None:
    assert negotiate(None, ["application/occi+json"]) == "application/occi+json"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("text/occi", "text/occi"),
        ("application/occi+json", "application/occi+json"),
        ("text/plain;q=0.5, application/occi+json", "application/occi+json"),
        ("text/occi;q=0.9, text/plain;q=0.4", "text/occi"),
        ("application/occi+json;q=0.1, */*;q=0.5", "text/plain"),
        ("text/*, application/occi+json;q=0.5", "text/plain"),
        ("TEXT/OCCI", "text/occi"),
        ("text/html, application/xhtml+xml, */*;q=0.8", "text/plain"),
        ("application/*;q=0.9, text/plain;q=0.1", "application/occi+json"),
        ("text/plain;q=0, */*", "text/occi"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("text/occi;q=bogus, application/occi+json", "application/occi+json"),
    ],
)
def test_negotiate_with_q_values_and_wildcards(accept: str, chosen: str) -> None:
    assert negotiate(accept, ENTITY_MEDIA_TYPES) == chosen


@pytest.mark.parametrize("accept", ["text/html", "application/xml;q=1, text/plain;q=0", "image/*"])
def test_negotiate_raises_not_acceptable_listing_offers(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept, ENTITY_MEDIA_TYPES)
    message = str(caught.value)
    for offered in ENTITY_MEDIA_TYPES:
        assert offered in message


def test_negotiate_uri_list_for_collections() -> None:
    assert negotiate("text/uri-list", COLLECTION_MEDIA_TYPES) == "text/uri-list"
    with pytest.raises(NotAcceptable):
        negotiate("text/uri-list", ENTITY_MEDIA_TYPES)


# --- attribute values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("160.85.4.50", '"160.85.4.50"'),
        ('a "b" \\c', r'"a \"b\" \\c"'),
        ("two\nlines", r'"two\nlines"'),
        (3, "3"),
        (-2, "-2"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        (float("nan"), '"nan"'),
    ],
)
def test_attribute_values_render_quoted_or_bare(value: AttributeValue, text: str) -> None:
    assert render_attribute_value(value) == text


# --- text/plain and text/occi entity ----------------------------------------------


def test_text_plain_entity_body() -> None:
    headers, body = render_entity(ENTITY, "text/plain")
    assert headers == []
    lines = body.splitlines()
    assert lines[0] == (f'Category: orchestrator; scheme="{SERVICE}"; class="kind"; title="IMS service orchestrator"')
    assert lines[1] == 'Category: small; scheme="http://example.com/tpl#"; class="mixin"'
    assert f'Link: </orchestrator/default?action=deploy>; rel="{SERVICE}deploy"' in lines
    assert 'X-OCCI-Attribute: mcn.endpoint.maas="160.85.4.50"' in lines
    assert "X-OCCI-Attribute: mcn.count=3" in lines
    assert "X-OCCI-Attribute: mcn.ratio=0.25" in lines
    assert "X-OCCI-Attribute: mcn.ready=true" in lines
    assert body.endswith("\n")
    # Only the actions applicable now are linked, not every action of the kind.
    assert f"{SERVICE}delete" not in body


def test_text_occi_entity_goes_in_headers_with_ok_body() -> None:
    headers, body = render_entity(ENTITY, "text/occi")
    assert body == "OK"
    names = [name for name, _ in headers]
    assert names == ["Category", "Link", "X-OCCI-Attribute"]  # one comma-joined header per name


def test_text_plain_round_trip_through_the_parser() -> None:
    _, body = render_entity(ENTITY, "text/plain")
    request = parse_request([], "text/plain", body)
    assert dict(request.attributes) == ATTRIBUTES
    assert [(c.term, c.scheme, c.cls) for c in request.categories] == [
        ("orchestrator", SERVICE, "kind"),
        ("small", "http://example.com/tpl#", "mixin"),
    ]
    nic, action = request.links
    assert (nic.target, nic.rel, nic.self_location, nic.category) == (
        "/net/1",
        "http://x.org/infra#network",
        "/link/nic/1",
        "http://x.org/infra#nic",
    )
    assert dict(nic.attributes) == {"occi.nic.mtu": 1500}
    assert (action.target, action.rel) == ("/orchestrator/default?action=deploy", DEPLOY.id)


def test_text_occi_round_trip_through_the_parser() -> None:
    headers, _ = render_entity(ENTITY, "text/occi")
    request = parse_request(headers, "text/occi", "OK")
    assert dict(request.attributes) == ATTRIBUTES
    assert [c.term for c in request.categories] == ["orchestrator", "small"]
    assert len(request.links) == 2


def test_round_trip_keeps_value_types() -> None:
    _, body = render_entity(ENTITY, "text/plain")
    parsed = parse_request([], "text/plain", body).attributes
    for name, value in ATTRIBUTES.items():
        assert type(parsed[name]) is type(value), name


# --- application/occi+json entity (GFD.226) -----------------------------------------


def test_json_entity_shape() -> None:
    headers, body = render_entity(ENTITY, "application/occi+json")
    assert headers == []
    doc = json.loads(body)
    assert list(doc) == ["kind", "mixins", "attributes", "actions", "id", "links"]
    assert doc["kind"] == SERVICE + "orchestrator"
    assert doc["mixins"] == ["http://example.com/tpl#small"]
    assert doc["attributes"] == ATTRIBUTES  # flat dotted names, native JSON types
    assert doc["actions"] == [SERVICE + "deploy"]
    assert doc["id"] == "/orchestrator/default"
    assert doc["links"] == [
        {
            "kind": "http://x.org/infra#nic",
            "attributes": {"occi.nic.mtu": 1500},
            "id": "/link/nic/1",
            "source": {"location": "/orchestrator/default", "kind": SERVICE + "orchestrator"},
            "target": {"location": "/net/1", "kind": "http://x.org/infra#network"},
        }
    ]


def test_json_entity_prefers_core_id_and_omits_empty_members() -> None:
    bare = Entity(kind=ORCHESTRATOR, location="/orchestrator/x", attributes={"occi.core.id": "x-1"})
    doc = json.loads(render_entity(bare, "application/occi+json")[1])
    assert doc == {"kind": SERVICE + "orchestrator", "attributes": {"occi.core.id": "x-1"}, "id": "x-1"}


def test_json_entity_round_trip_through_the_parser() -> None:
    _, body = render_entity(ENTITY, "application/occi+json")
    doc = json.loads(body)
    del doc["actions"], doc["id"]  # server-owned members a client would not send back
    request = parse_request([], "application/occi+json", json.dumps(doc))
    assert dict(request.attributes) == ATTRIBUTES
    assert request.categories[0].id == ORCHESTRATOR.id


def test_entity_in_unsupported_type_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        render_entity(ENTITY, "text/uri-list")


# --- collections -------------------------------------------------------------------


LOCATIONS = ["/orchestrator/a", "/orchestrator/b"]


def test_uri_list_collection_is_absolute_crlf() -> None:
    headers, body = render_collection(LOCATIONS, "text/uri-list", "http://so.example.com:8080/")
    assert headers == []
    assert body == "http://so.example.com:8080/orchestrator/a\r\nhttp://so.example.com:8080/orchestrator/b\r\n"


def test_text_plain_collection() -> None:
    _, body = render_collection(LOCATIONS, "text/plain", "http://so")
    assert body == "X-OCCI-Location: http://so/orchestrator/a\nX-OCCI-Location: http://so/orchestrator/b\n"


def test_text_occi_collection_parses_back() -> None:
    headers, body = render_collection([*LOCATIONS, "http://elsewhere/x"], "text/occi", "http://so")
    assert body == "OK"
    request = parse_request(headers, "text/occi", body)
    assert request.locations == ("http://so/orchestrator/a", "http://so/orchestrator/b", "http://elsewhere/x")


def test_empty_collection() -> None:
    assert render_collection([], "text/plain", "http://so") == ([], "")
    assert render_collection([], "text/uri-list", "http://so") == ([], "")


def test_collection_of_locations_cannot_be_json() -> None:
    with pytest.raises(NotAcceptable):
        render_collection(LOCATIONS, "application/occi+json", "http://so")


def test_entities_render_as_json_resources_or_locations() -> None:
    doc = json.loads(render_entities([ENTITY], "application/occi+json", "http://so")[1])
    assert list(doc) == ["resources"]
    assert doc["resources"][0]["kind"] == ORCHESTRATOR.id
    assert render_entities([ENTITY], "text/uri-list", "http://so") == ([], "http://so/orchestrator/default\r\n")


# --- query interface -------------------------------------------------------------------


def test_text_query_renders_every_category_in_full() -> None:
    _, body = render_query([ORCHESTRATOR, SMALL, DEPLOY], "text/plain")
    kind_line, mixin_line, action_line = body.splitlines()
    assert kind_line == (
        f'Category: orchestrator; scheme="{SERVICE}"; class="kind"; title="IMS service orchestrator";'
        ' rel="http://schemas.ogf.org/occi/core#resource"; location="/orchestrator/";'
        ' attributes="mcn.endpoint.maas{required} occi.core.id{immutable} mcn.region";'
        f' actions="{SERVICE}deploy {SERVICE}delete"'
    )
    assert mixin_line == (
        'Category: small; scheme="http://example.com/tpl#"; class="mixin";'
        ' rel="http://example.com/tpl#base"; location="/small/"'
    )
    assert action_line == f'Category: deploy; scheme="{SERVICE}"; class="action"; title="Deploy the IMS"'


def test_text_occi_query_parses_back_to_the_same_categories() -> None:
    headers, body = render_query([ORCHESTRATOR, SMALL, DEPLOY], "text/occi")
    assert body == "OK"
    assert parse_request(headers, "text/occi", body).categories == (ORCHESTRATOR, SMALL, DEPLOY)


def test_json_query_shape() -> None:
    doc = json.loads(render_query([ORCHESTRATOR, SMALL, DEPLOY], "application/occi+json")[1])
    assert list(doc) == ["kinds", "mixins", "actions"]
    (kind,) = doc["kinds"]
    assert kind == {
        "term": "orchestrator",
        "scheme": SERVICE,
        "title": "IMS service orchestrator",
        "attributes": {
            "mcn.endpoint.maas": {"mutable": True, "required": True},
            "occi.core.id": {"mutable": False, "required": False},
            "mcn.region": {"mutable": True, "required": False},
        },
        "actions": [SERVICE + "deploy", SERVICE + "delete"],
        "parent": "http://schemas.ogf.org/occi/core#resource",
        "location": "/orchestrator/",
    }
    assert doc["mixins"] == [
        {
            "term": "small",
            "scheme": "http://example.com/tpl#",
            "depends": ["http://example.com/tpl#base"],
            "location": "/small/",
        }
    ]
    assert doc["actions"] == [{"term": "deploy", "scheme": SERVICE, "title": "Deploy the IMS"}]


# --- errors ------------------------------------------------------------------------------


def test_errors_render_in_each_type() -> None:
    message = "X-OCCI-Attribute: cannot parse 'a=b'"
    assert render_error(message, "text/plain") == ([], message + "\n")
    assert render_error(message, "text/occi") == ([], message + "\n")
    assert json.loads(render_error(message, "application/occi+json")[1]) == {"error": message}
    assert render_error("two\nlines", "text/uri-list") == ([], "# two\r\n# lines\r\n")
    assert render_error(message, "image/png") == ([], message + "\n")


# --- escaping: nothing a value or a name holds can end a line or forge an attribute ------------------

FORGED = 'X-OCCI-Attribute: occi.mcn.stack.state="CREATE_COMPLETE"'
HOSTILE = Entity(
    kind=ORCHESTRATOR,
    location="/orchestrator/x",
    attributes={
        "occi.mcn.stack.state": "INIT_COMPLETE",
        "mcn.value": 'a"\r\n' + FORGED + "\x0b\x85\u2028\u2029\x00\ud800",
        'mcn.name"\n' + FORGED: "1",
        "mcn.city": "Zürich €",
    },
)


def test_text_plain_escapes_every_line_break_and_encodes_bad_names() -> None:
    _, body = render_entity(HOSTILE, "text/plain")
    lines = body.splitlines()  # splitlines breaks at \x0b, \x85, \u2028 ... too
    assert len(lines) == 1 + len(HOSTILE.attributes)
    assert [line for line in lines if line.startswith("X-OCCI-Attribute: occi.mcn.stack.state=")] == [
        'X-OCCI-Attribute: occi.mcn.stack.state="INIT_COMPLETE"'
    ]
    assert (
        'X-OCCI-Attribute: mcn.value="a\\"\\r\\nX-OCCI-Attribute: occi.mcn.stack.state=\\"CREATE_COMPLETE\\"'
        '\\u000b\\u0085\\u2028\\u2029\\u0000\\ud800"'
    ) in lines
    assert (
        'X-OCCI-Attribute: mcn.name%22%0AX-OCCI-Attribute%3A%20occi.mcn.stack.state%3D%22CREATE_COMPLETE%22="1"'
        in lines
    )
    assert 'X-OCCI-Attribute: mcn.city="Zürich €"' in lines
    body.encode("utf-8")  # a response body can carry it


def test_text_occi_headers_are_ascii_and_read_back() -> None:
    headers, _ = render_entity(HOSTILE, "text/occi")
    for _, value in headers:
        assert value.isascii() and not any(c in value for c in "\r\n\x00")
    (attributes,) = [value for name, value in headers if name == "X-OCCI-Attribute"]
    assert 'mcn.city="Z\\u00fcrich \\u20ac"' in attributes
    assert parse_request([("X-OCCI-Attribute", 'mcn.city="Z\\u00fcrich \\u20ac"')], "text/occi", "").attributes == {
        "mcn.city": "Zürich €"
    }


def test_json_escapes_through_json() -> None:
    doc = json.loads(render_entity(HOSTILE, "application/occi+json")[1].replace("\\ud800", "?"))
    assert doc["attributes"]["occi.mcn.stack.state"] == "INIT_COMPLETE"
    assert doc["attributes"]['mcn.name"\n' + FORGED] == "1"


def test_errors_keep_their_own_lines_only() -> None:
    _, body = render_error("bad value 'a\x0bb\u2028c'\nsecond line", "text/plain")
    assert body == "bad value 'a\\u000bb\\u2028c'\nsecond line\n"
