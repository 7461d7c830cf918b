"""Fuzzing the OCCI face with hypothesis: the parser alone, then the real app through TestClient.

What must hold for any input: the parser raises only its own errors, whose message names the bad part
on one line; what it accepts is safe to render; the app answers no 5xx and shows no Python internals.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fakes import Orchestrator
from imsso.api.app import create_app
from imsso.api.occi import OcciSyntaxError, UnsupportedMediaType, parse_request, render_entity
from imsso.api.occi.model import Category, Entity
from imsso.api.occi.parsing import CONTROL, is_attribute_name, value_problem

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
KIND = f'orchestrator; scheme="{SERVICE}"'
OCCI_HEADERS = ("Category", "X-OCCI-Attribute", "Link", "X-OCCI-Location")
CONTENT_TYPES = (
    "text/occi",
    "text/plain",
    "application/occi+json",
    "application/json",
    None,
    "text/html",
    "text/plain; charset=utf-8",
)
# Where an error may say the bad part was: a header, a body line, the JSON body, or the body's encoding.
WHERE = re.compile(
    r"^(Category|X-OCCI-Attribute|Link|X-OCCI-Location|text/plain body line \d+, \S+"
    r"|text/plain body line \d+|application/occi\+json body|request body): "
)

# Valid requests of the guide and the spec, the seeds of the mutations.
VALID_HEADERS = [
    ("Category", KIND),
    ("Category", f'deploy; scheme="{SERVICE}"; class="action"'),
    ("X-OCCI-Attribute", 'mcn.endpoint.maas="160.85.4.50"'),
    ("X-OCCI-Attribute", 'imsso.size.scscf=2, mcn.ratio=0.5, mcn.ok=true, mcn.text="a \\"b\\", c\\\\d"'),
    ("Link", '</net/1>; rel="http://x.org/infra#network"; self="/link/1"; occi.nic.mtu=1500'),
    ("X-OCCI-Location", "/orchestrator/default, http://127.0.0.1:8051/ims/x"),
    (
        "Category",
        f'orchestrator; scheme="{SERVICE}"; class="kind"; title="IMS, the core"; '
        'attributes="mcn.endpoint.maas{required} occi.core.id{immutable}"; '
        f'actions="{SERVICE}deploy"',
    ),
]
VALID_PLAIN = (
    f'Category: {KIND}\nX-OCCI-Attribute: mcn.endpoint.maas="160.85.4.50"\n'
    'X-OCCI-Attribute: imsso.size.scscf=2\n  , mcn.x="folded"\n'
)
VALID_JSON = json.dumps(
    {
        "kind": SERVICE + "orchestrator",
        "mixins": [SERVICE + "small"],
        "attributes": {"mcn.endpoint.maas": "160.85.4.50", "imsso.size.scscf": 2},
        "links": [{"target": {"location": "/net/1", "kind": "http://x.org#n"}}],
    }
)

# Characters an HTTP header may carry (h11 refuses the other controls), and any text for bodies.
header_text = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)) | st.just("\t"), max_size=120)
syntax_chars = st.sampled_from(list(';,="\\<>{}#:. \t\n\r') + ["\u2028", "\x00", "\x85", "é", "€"])
body_text = st.text(st.characters() | syntax_chars, max_size=300)


@st.composite
def mutated(draw, text: str) -> str:
    """`text` with a few characters inserted, deleted or replaced, favouring the grammar's own."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(("insert", "delete", "replace")))
        char = draw(syntax_chars | st.characters())
        if action == "insert" or not chars:
            chars.insert(pos, char)
        elif action == "delete":
            del chars[min(pos, len(chars) - 1)]
        else:
            chars[min(pos, len(chars) - 1)] = char
    return "".join(chars)


def headers_strategy(text_values):
    random_header = st.tuples(st.sampled_from(OCCI_HEADERS + ("X-Other",)), text_values)
    mutated_header = st.sampled_from(VALID_HEADERS).flatmap(lambda h: st.tuples(st.just(h[0]), mutated(h[1])))
    return st.lists(random_header | mutated_header | st.sampled_from(VALID_HEADERS), max_size=6)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
json_bodies = json_values.map(json.dumps) | st.dictionaries(
    st.sampled_from(("kind", "mixins", "attributes", "links", "action", "title", "resources", "id")),
    json_values,
    max_size=4,
).map(json.dumps)
bodies = st.just("") | body_text | mutated(VALID_PLAIN) | mutated(VALID_JSON) | json_bodies


def check_parse(headers: list[tuple[str, str]], content_type: str | None, body: str) -> None:
    """The properties every parse must have, whatever it was given."""
    try:
        request = parse_request(headers, content_type, body)
    except UnsupportedMediaType as err:
        assert body.strip() and "accepted:" in str(err)
        return
    except OcciSyntaxError as err:
        message = str(err)
        assert WHERE.match(message), message  # names where the bad part is
        assert not CONTROL.search(message), message  # one line, nothing that could end one
        assert len(message) < 2000, message
        return
    for name, value in request.attributes.items():  # accepted: safe for every rendering
        assert is_attribute_name(name), name
        assert value_problem(value) == "", (name, value)
    entity = Entity(Category("orchestrator", SERVICE, "kind"), "/orchestrator/x", dict(request.attributes))
    _, text = render_entity(entity, "text/plain")
    assert text.count("\n") == text.count("\nX-OCCI-Attribute: ") + 1  # one line per attribute
    assert parse_request([], "text/plain", text).attributes == request.attributes  # and it reads back


@settings(max_examples=400, deadline=None)
@given(headers=headers_strategy(header_text), content_type=st.sampled_from(CONTENT_TYPES), body=bodies)
@example(headers=[("X-OCCI-Attribute", 'mcn.a="\\u0000"')], content_type="text/occi", body="")
@example(headers=[], content_type="application/occi+json", body="[" * 100_000)
@example(headers=[], content_type="application/occi+json", body='{"attributes": {"mcn.a": 1' + "0" * 5000 + "}}")
@example(headers=[], content_type="application/occi+json", body='{"attributes": {"mcn.a": 1e999}}')
@example(headers=[("X-OCCI-Attribute", "mcn.a=" + "9" * 5000)], content_type="text/occi", body="")
@example(headers=[], content_type="text/plain", body='X-OCCI-Attribute: mcn.a="x\u2028y"')
def test_the_parser_raises_only_its_own_errors_naming_the_bad_part(headers, content_type, body):
    check_parse(headers, content_type, body)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=40), value=st.text(max_size=40) | st.integers() | st.floats() | st.booleans())
def test_any_json_attribute_is_accepted_only_when_safe(name, value):
    check_parse([], "application/occi+json", json.dumps({"attributes": {name: value}}))


# --- the same through the real app ------------------------------------------------------------------------

INTERNALS = ("Traceback", 'File "', ".py", "site-packages", "internal error", "object at 0x")
PATHS = (
    "/orchestrator/default",
    "/orchestrator/fuzz",
    "/orchestrator/",
    "/ims/",
    "/-/",
    "/orchestrator/default?action=deploy",
    "/orchestrator/default?action=provision",
    "/orchestrator/default?action=nope",
    "/ims/x?action=deploy",
)
ACCEPTS = (
    None,
    "*/*",
    "text/plain",
    "text/occi",
    "application/occi+json",
    "text/uri-list",
    "image/png",
    "text/*;q=0.5, application/occi+json;q=x",
)


def on_the_wire(value: str) -> bytes:
    """A header value as a client sends it (UTF-8), less the bytes an HTTP/1.1 parser refuses."""
    return bytes(c for c in value.encode("utf-8", "surrogatepass") if c == 9 or 0x20 <= c != 0x7F)


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    orch = Orchestrator(Path(tmp_path_factory.mktemp("fuzz")) / "data")
    with TestClient(create_app(orch), raise_server_exceptions=False) as client:
        client.headers.update({"X-Auth-Token": orch.token("fuzz"), "X-Tenant-Name": "fuzz"})
        yield client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(("PUT", "POST", "GET", "DELETE")),
    path=st.sampled_from(PATHS),
    headers=headers_strategy(header_text | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
    content_type=st.sampled_from(CONTENT_TYPES),
    accept=st.sampled_from(ACCEPTS),
    body=bodies | st.binary(max_size=200),
)
def test_the_app_answers_any_occi_request_without_5xx_or_internals(
    app_client, method, path, headers, content_type, accept, body
):
    sent = [(name, on_the_wire(value)) for name, value in headers]
    sent += [(name, value) for name, value in (("Content-Type", content_type), ("Accept", accept)) if value]
    content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    r = app_client.request(method, path, headers=sent, content=content)
    assert r.status_code < 500, r.text
    seen = repr((path, headers, body))
    for marker in INTERNALS:
        assert marker not in r.text or marker in seen, (marker, r.text)
