"""Parsing OCCI requests (GFD.185 text renderings, GFD.226 JSON)."""

from __future__ import annotations

import json

import pytest

from imsso.api.occi.model import AttributeValue, Category, OcciSyntaxError, Request, UnsupportedMediaType
from imsso.api.occi.parsing import parse_request, split_type_id

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
AUTH = [("X-Auth-Token", "secret-token"), ("X-Tenant-Name", "demo")]


def headers_only(*pairs: tuple[str, str]) -> Request:
    return parse_request([*AUTH, ("Content-Type", "text/occi"), *pairs], "text/occi", "")


def attributes_of(value: str) -> dict[str, AttributeValue]:
    return dict(parse_request([("X-OCCI-Attribute", value)], "text/occi", "").attributes)


def syntax_error(headers: list[tuple[str, str]], content_type: str | None = "text/occi", body: str = "") -> str:
    with pytest.raises(OcciSyntaxError) as caught:
        parse_request(headers, content_type, body)
    return str(caught.value)


# --- the user guide's requests ----------------------------------------------


def test_user_guide_put_creates_orchestrator_kind() -> None:
    request = headers_only(("Category", f'orchestrator; scheme="{SERVICE}"'))
    assert request.categories == (Category(term="orchestrator", scheme=SERVICE, cls=""),)
    assert request.categories[0].id == SERVICE + "orchestrator"
    assert dict(request.attributes) == {}
    assert request.links == () and request.locations == ()


def test_user_guide_deploy_action() -> None:
    request = headers_only(("Category", f'deploy; scheme="{SERVICE}"'))
    (category,) = request.categories
    assert (category.term, category.scheme, category.cls) == ("deploy", SERVICE, "")


def test_user_guide_update_attribute() -> None:
    request = headers_only(("X-OCCI-Attribute", 'mcn.endpoint.maas="160.85.4.50"'))
    assert dict(request.attributes) == {"mcn.endpoint.maas": "160.85.4.50"}
    assert request.categories == ()


def test_user_guide_delete_has_nothing_to_parse() -> None:
    request = parse_request(AUTH, None, "")
    assert request.categories == () and dict(request.attributes) == {}


def test_non_occi_headers_are_ignored_even_when_they_look_odd() -> None:
    request = parse_request([("X-Auth-Token", '"unbalanced'), ("Accept", "*/*")], None, "")
    assert request.categories == () and dict(request.attributes) == {}


def test_header_names_are_case_insensitive() -> None:
    request = parse_request(
        [("category", f'orchestrator; scheme="{SERVICE}"'), ("x-occi-attribute", "a=1")], "text/occi", ""
    )
    assert request.categories[0].term == "orchestrator"
    assert dict(request.attributes) == {"a": 1}


# --- Category -------------------------------------------------------------------


def test_full_category_with_class_title_rel_location_attributes_actions() -> None:
    value = (
        f'orchestrator; scheme="{SERVICE}"; class="kind"; title="IMS orchestrator";'
        ' rel="http://schemas.ogf.org/occi/core#resource"; location="/orchestrator/";'
        ' attributes="mcn.endpoint.maas{required} occi.core.id{immutable} mcn.x{required immutable}";'
        f' actions="{SERVICE}deploy {SERVICE}provision";'
    )
    (category,) = headers_only(("Category", value)).categories
    assert category.cls == "kind"
    assert category.title == "IMS orchestrator"
    assert category.rel == "http://schemas.ogf.org/occi/core#resource"
    assert category.location == "/orchestrator/"
    assert category.attributes == (
        "mcn.endpoint.maas{required}",
        "occi.core.id{immutable}",
        "mcn.x{immutable required}",
    )
    assert category.attribute_names == ("mcn.endpoint.maas", "occi.core.id", "mcn.x")
    assert category.actions == (SERVICE + "deploy", SERVICE + "provision")


def test_several_categories_in_one_header_and_in_repeated_headers() -> None:
    one_header = headers_only(
        ("Category", f'orchestrator; scheme="{SERVICE}"; class="kind", tpl; scheme="http://x.org/t#"; class=mixin')
    )
    repeated = headers_only(
        ("Category", f'orchestrator; scheme="{SERVICE}"; class="kind"'),
        ("Category", 'tpl; scheme="http://x.org/t#"; class=mixin'),
    )
    assert one_header.categories == repeated.categories
    assert [(c.term, c.cls) for c in one_header.categories] == [("orchestrator", "kind"), ("tpl", "mixin")]


def test_category_tolerates_whitespace_and_trailing_semicolons() -> None:
    value = f'  orchestrator ;   scheme = "{SERVICE}" ;class="kind";  ;,'
    (category,) = headers_only(("Category", value)).categories
    assert (category.term, category.scheme, category.cls) == ("orchestrator", SERVICE, "kind")


def test_category_title_may_hold_commas_and_semicolons() -> None:
    (category,) = headers_only(("Category", f'a; scheme="{SERVICE}"; title="one, two; \\"three\\""')).categories
    assert category.title == 'one, two; "three"'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("orchestrator", "missing scheme in 'orchestrator'"),
        ('orchestrator; class="kind"', "missing scheme in 'orchestrator; class=\"kind\"'"),
        ('; scheme="http://x#"', "missing term"),
        ('or chestrator; scheme="http://x#"', "invalid term 'or chestrator'"),
        ('a; scheme="http://x#"; class="thing"', "unknown class 'thing'"),
        ('a; schema="http://x#"', "unknown parameter 'schema'"),
        ('a; scheme="http://x#"; scheme="http://y#"', "parameter 'scheme' given twice"),
        ('a; scheme="http://x#" trailing', "unexpected text after the quoted string"),
        ('a; scheme="http://x#', "unterminated quoted string"),
        ('a; scheme="http://x#"; actions="deploy"', "invalid action 'deploy'"),
        ('a; scheme="http://x#"; attributes="Bad.Name"', "invalid attribute name 'Bad.Name'"),
        ('a; scheme="http://x#"; attributes="a.b{mandatory}"', "attribute 'a.b{mandatory}' has an unknown property"),
    ],
)
def test_malformed_category_names_the_bad_part(value: str, fragment: str) -> None:
    message = syntax_error([("Category", value)])
    assert message.startswith("Category: ")
    assert fragment in message
    assert "expected" in message or "accepted" in message


def test_error_quotes_only_the_bad_category_of_several() -> None:
    message = syntax_error([("Category", f'good; scheme="{SERVICE}", bad; class="kind"')])
    assert "'bad; class=\"kind\"'" in message
    assert "good" not in message


# --- X-OCCI-Attribute --------------------------------------------------------


def test_typed_values_ints_floats_booleans_unquoted() -> None:
    values = attributes_of("a.int=2, a.neg=-7, a.float=2.66, a.half=.5, a.exp=1e-05, a.yes=true, a.no=false")
    assert values == {
        "a.int": 2,
        "a.neg": -7,
        "a.float": 2.66,
        "a.half": 0.5,
        "a.exp": 1e-05,
        "a.yes": True,
        "a.no": False,
    }
    assert type(values["a.int"]) is int and type(values["a.float"]) is float and type(values["a.yes"]) is bool


def test_quoted_numbers_and_booleans_stay_strings() -> None:
    assert attributes_of('a="2", b="true"') == {"a": "2", "b": "true"}


def test_quoted_value_with_escaped_quotes_backslashes_and_commas() -> None:
    values = attributes_of(r'a.b="say \"hi\", then go", c.d="C:\\path", e="x;y"')
    assert values == {"a.b": 'say "hi", then go', "c.d": "C:\\path", "e": "x;y"}


def test_escaped_line_break_is_refused_naming_the_attribute() -> None:
    # A value with a line break could end a line of a text rendering: values are printable text and tabs.
    message = syntax_error([("X-OCCI-Attribute", r'msg="line one\nline two"')])
    assert "attribute 'msg'" in message and "'\\n'" in message and "printable" in message


def test_escaped_tab_and_unicode_are_read_back() -> None:
    assert attributes_of(r'msg="a\tb", city="Z\u00fcrich \U0001F600"') == {"msg": "a\tb", "city": "Zürich \U0001f600"}


def test_several_attributes_in_one_header_equal_repeated_headers() -> None:
    one = parse_request([("X-OCCI-Attribute", 'a=1, b="two", c=3.0')], "text/occi", "")
    repeated = parse_request(
        [("X-OCCI-Attribute", "a=1"), ("X-OCCI-Attribute", 'b="two"'), ("X-OCCI-Attribute", "c=3.0")], "text/occi", ""
    )
    assert dict(one.attributes) == dict(repeated.attributes) == {"a": 1, "b": "two", "c": 3.0}


def test_attribute_whitespace_and_spec_style_trailing_semicolon() -> None:
    assert attributes_of('  a.b = "x" ;  ,  c_d-e.f=  4 ') == {"a.b": "x", "c_d-e.f": 4}


@pytest.mark.parametrize(
    ("value", "bad_part", "problem"),
    [
        ('mcn.endpoint.maas=160.85.4.50"', 'mcn.endpoint.maas=160.85.4.50"', "cannot parse"),
        ('mcn.endpoint.maas="160.85.4.50', 'mcn.endpoint.maas="160.85.4.50', "unterminated quoted string"),
        ("mcn.endpoint.maas", "mcn.endpoint.maas", "cannot parse"),
        ("=5", "=5", "cannot parse"),
        ("Mcn.Endpoint=5", "Mcn.Endpoint=5", "invalid attribute name 'Mcn.Endpoint'"),
        ("a..b=5", "a..b=5", "invalid attribute name 'a..b'"),
        ("1abc=5", "1abc=5", "invalid attribute name '1abc'"),
        ("a=active", "a=active", "cannot parse"),
        ("a=True", "a=True", "cannot parse"),
        ("a=1.2.3", "a=1.2.3", "cannot parse"),
        ('a="x"y', 'a="x"y', "unexpected text after the quoted string"),
        ("a=1; b=2", "a=1; b=2", "cannot parse"),
        ("@@@ garbage !!!", "@@@ garbage !!!", "cannot parse"),
    ],
)
def test_malformed_attribute_names_the_bad_part(value: str, bad_part: str, problem: str) -> None:
    message = syntax_error([("X-OCCI-Attribute", value)])
    assert message.startswith(f"X-OCCI-Attribute: {problem}")
    assert f"'{bad_part}'" in message
    assert "expected" in message


def test_stray_quote_message_matches_the_documented_form() -> None:
    message = syntax_error([("X-OCCI-Attribute", 'mcn.endpoint.maas=160.85.4.50"')])
    assert message == (
        "X-OCCI-Attribute: cannot parse 'mcn.endpoint.maas=160.85.4.50\"' - expected name=value"
        " with the value a quoted string, a number or true/false"
    )


def test_error_quotes_only_the_bad_attribute_of_several() -> None:
    message = syntax_error([("X-OCCI-Attribute", 'a="fine, really", b=oops, c=3')])
    assert "'b=oops'" in message
    assert "fine" not in message and "c=3" not in message


def test_duplicate_attribute_in_one_header_is_an_error() -> None:
    message = syntax_error([("X-OCCI-Attribute", "a=1, a=2")])
    assert "attribute 'a' is given more than once" in message


def test_duplicate_attribute_across_headers_is_an_error() -> None:
    message = syntax_error([("X-OCCI-Attribute", "a=1"), ("X-OCCI-Attribute", 'a="1"')])
    assert "attribute 'a' is given more than once" in message


# --- Link and X-OCCI-Location -------------------------------------------------


def test_link_header_with_rel_self_category_and_attributes() -> None:
    value = (
        '</network/123>; rel="http://schemas.ogf.org/occi/infrastructure#network";'
        ' self="/link/networkinterface/456";'
        ' category="http://schemas.ogf.org/occi/infrastructure#networkinterface";'
        ' occi.networkinterface.interface="eth0"; occi.networkinterface.mtu=1500'
    )
    (link,) = parse_request([("Link", value)], "text/occi", "").links
    assert link.target == "/network/123"
    assert link.rel == "http://schemas.ogf.org/occi/infrastructure#network"
    assert link.self_location == "/link/networkinterface/456"
    assert link.category == "http://schemas.ogf.org/occi/infrastructure#networkinterface"
    assert dict(link.attributes) == {"occi.networkinterface.interface": "eth0", "occi.networkinterface.mtu": 1500}


def test_two_links_in_one_header() -> None:
    links = parse_request([("Link", '</a>; rel="http://x#a", </b,c>; rel="http://x#b"')], "text/occi", "").links
    assert [(link.target, link.rel) for link in links] == [("/a", "http://x#a"), ("/b,c", "http://x#b")]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('/network/123; rel="http://x#n"', "cannot parse '/network/123; rel=\"http://x#n\"'"),
        ('</network/123; rel="http://x#n"', "missing <target>"),
        ('<>; rel="http://x#n"', "missing <target>"),
        ('</n>; rel="http://x#n"; Bad=1', "invalid attribute name 'Bad'"),
    ],
)
def test_malformed_link_names_the_bad_part(value: str, fragment: str) -> None:
    message = syntax_error([("Link", value)])
    assert message.startswith("Link: ")
    assert fragment in message


def test_locations_comma_separated_and_repeated() -> None:
    request = parse_request(
        [("X-OCCI-Location", "/orchestrator/a, http://h/orchestrator/b"), ("X-OCCI-Location", "/orchestrator/c")],
        "text/occi",
        "",
    )
    assert request.locations == ("/orchestrator/a", "http://h/orchestrator/b", "/orchestrator/c")


def test_location_with_space_is_an_error() -> None:
    assert "cannot parse '/a b'" in syntax_error([("X-OCCI-Location", "/a b")])


# --- text/plain bodies and content types ---------------------------------------


def test_text_plain_body_lines_plus_headers() -> None:
    body = (
        f'Category: orchestrator; scheme="{SERVICE}"; class="kind"\n'
        "\n"
        'X-OCCI-Attribute: mcn.endpoint.maas="160.85.4.50"\n'
        "x-occi-attribute: mcn.count=3\n"
    )
    request = parse_request([*AUTH, ("X-OCCI-Attribute", "mcn.flag=true")], "text/plain; charset=utf-8", body)
    assert [c.term for c in request.categories] == ["orchestrator"]
    assert dict(request.attributes) == {"mcn.flag": True, "mcn.endpoint.maas": "160.85.4.50", "mcn.count": 3}


def test_text_plain_folded_lines_are_joined() -> None:
    body = f'Category: orchestrator;\n    scheme="{SERVICE}";\n    class="kind";\n'
    (category,) = parse_request([], "text/plain", body).categories
    assert (category.term, category.scheme, category.cls) == ("orchestrator", SERVICE, "kind")


def test_body_without_content_type_is_read_as_text_plain() -> None:
    request = parse_request([], None, "X-OCCI-Attribute: a=1\n")
    assert dict(request.attributes) == {"a": 1}


def test_text_plain_error_names_the_line() -> None:
    body = 'X-OCCI-Attribute: a=1\nX-OCCI-Attribute: b="open\n'
    message = syntax_error([], "text/plain", body)
    assert message.startswith("text/plain body line 2, X-OCCI-Attribute: unterminated quoted string in 'b=\"open'")


def test_text_plain_garbage_line_is_an_error() -> None:
    message = syntax_error([], "text/plain", "hello world\n")
    assert message.startswith("text/plain body line 1: cannot parse 'hello world'")
    assert "'X-OCCI-Attribute: ...'" in message


def test_duplicate_between_header_and_body_is_an_error() -> None:
    message = syntax_error([("X-OCCI-Attribute", "a=1")], "text/plain", "X-OCCI-Attribute: a=2\n")
    assert "text/plain body line 1, X-OCCI-Attribute: attribute 'a' is given more than once" in message


def test_text_occi_body_is_ignored() -> None:
    request = parse_request([("X-OCCI-Attribute", "a=1")], "text/occi", "OK")
    assert dict(request.attributes) == {"a": 1}


def test_unsupported_content_type_names_the_accepted_ones() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_request([], "application/xml", "<a/>")
    message = str(caught.value)
    assert "application/xml" in message
    for accepted in ("text/occi", "text/plain", "application/occi+json"):
        assert accepted in message


def test_stray_content_type_with_empty_body_is_fine() -> None:
    request = parse_request([("X-OCCI-Attribute", "a=1")], "application/x-www-form-urlencoded", "")
    assert dict(request.attributes) == {"a": 1}


# --- application/occi+json -------------------------------------------------------


def test_json_resource_body() -> None:
    body = json.dumps(
        {
            "kind": SERVICE + "orchestrator",
            "mixins": ["http://x.org/tpl#small"],
            "attributes": {"mcn.endpoint.maas": "160.85.4.50", "mcn.count": 2, "mcn.ratio": 0.5, "mcn.on": True},
            "links": [{"target": {"location": "/net/1", "kind": "http://x#network"}, "kind": "http://x#nic"}],
        }
    )
    request = parse_request([], "application/occi+json", body)
    assert [(c.term, c.scheme, c.cls) for c in request.categories] == [
        ("orchestrator", SERVICE, "kind"),
        ("small", "http://x.org/tpl#", "mixin"),
    ]
    assert dict(request.attributes) == {
        "mcn.endpoint.maas": "160.85.4.50",
        "mcn.count": 2,
        "mcn.ratio": 0.5,
        "mcn.on": True,
    }
    (link,) = request.links
    assert (link.target, link.rel, link.category) == ("/net/1", "http://x#network", "http://x#nic")


def test_json_action_invocation() -> None:
    body = json.dumps({"action": SERVICE + "deploy", "attributes": {"mcn.region": "zurich"}})
    request = parse_request([], "application/occi+json", body)
    assert request.categories == (Category(term="deploy", scheme=SERVICE, cls="action"),)
    assert dict(request.attributes) == {"mcn.region": "zurich"}


def test_json_single_resource_collection_and_title() -> None:
    body = json.dumps({"resources": [{"kind": SERVICE + "orchestrator", "title": "mine"}]})
    request = parse_request([], "application/occi+json", body)
    assert request.categories[0].term == "orchestrator"
    assert dict(request.attributes) == {"occi.core.title": "mine"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"kind": ', "invalid JSON at line 1"),
        ("[1, 2]", "expected an object, got an array"),
        ('{"kind": "orchestrator"}', "cannot parse type identifier 'orchestrator'"),
        ('{"kind": "http://x#k", "colour": "red"}', "unknown key 'colour' in a resource"),
        ('{"attributes": {"mcn": {"endpoint": "x"}}}', "attribute 'mcn' holds an object"),
        ('{"attributes": {"a": null}}', "attribute 'a' holds null"),
        ('{"attributes": {"Bad": 1}}', "invalid attribute name 'Bad'"),
        ('{"attributes": {"a": 1, "a": 2}}', "key 'a' is given more than once"),
        ('{"attributes": {"a": NaN}}', "'NaN' is not a JSON number"),
        ('{"action": 3}', "'action' holds a number"),
    ],
)
def test_malformed_json_names_the_bad_part(body: str, fragment: str) -> None:
    message = syntax_error([], "application/occi+json", body)
    assert message.startswith("application/occi+json body: ")
    assert fragment in message


def test_split_type_id() -> None:
    assert split_type_id(SERVICE + "deploy") == (SERVICE, "deploy")
    with pytest.raises(ValueError):
        split_type_id("deploy")


# --- bounds ------------------------------------------------------------------


def test_one_header_of_many_attributes_stops_at_the_bound() -> None:
    message = syntax_error([("X-OCCI-Attribute", ", ".join(f"mcn.a{i}=1" for i in range(5000)))])
    assert message.startswith("X-OCCI-Attribute: more than 200 items in one field, from 'mcn.a200=1")


def test_attributes_are_counted_across_headers_and_body() -> None:
    headers = [("X-OCCI-Attribute", f"mcn.h{i}=1") for i in range(150)]
    body = "".join(f"X-OCCI-Attribute: mcn.b{i}=1\n" for i in range(51))
    assert "'mcn.b50' is one too many - a request carries at most 200" in syntax_error(headers, "text/plain", body)
    assert len(parse_request(headers, "text/plain", body.rsplit("X-OCCI", 1)[0]).attributes) == 200


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('mcn.a="' + "x" * 8193 + '"', "attribute 'mcn.a' holds 8193 characters - a value holds at most 8192"),
        ("mcn.a=" + "9" * 65, "a bare value of 65 characters in"),
        ("mcn.a=9223372036854775808", "attribute 'mcn.a' holds a whole number beyond 64 bits"),
        ("mcn.a=1e999", "attribute 'mcn.a' holds inf - numbers must be finite"),
        ('mcn.a="\\u0007"', "attribute 'mcn.a' holds the control character '\\x07' at position 1"),
        ('mcn.a="\\u2028"', "attribute 'mcn.a' holds the control character '\\u2028'"),
        ('mcn.a="\\ud800"', "escape \\ud800 is not a character"),
        ("m" * 256 + "=1", "invalid attribute name 'mmmm"),
    ],
)
def test_values_and_names_are_bounded(value: str, fragment: str) -> None:
    message = syntax_error([("X-OCCI-Attribute", value)])
    assert fragment in message
    assert len(message) < 600  # the bad part is quoted, cut short


def test_a_name_is_checked_whole_not_by_prefix() -> None:
    assert "invalid attribute name 'mcn.endpoint.maas.'" in syntax_error([("X-OCCI-Attribute", "mcn.endpoint.maas.=1")])
    assert "invalid attribute name 'mcn.Maas'" in syntax_error([("X-OCCI-Attribute", "mcn.Maas=1")])


def test_deep_or_huge_json_is_a_syntax_error() -> None:
    assert "nested too deeply" in syntax_error([], "application/occi+json", "[" * 100_000)
    assert "cannot read a number" in syntax_error(
        [], "application/occi+json", '{"attributes": {"a": 1' + "0" * 5000 + "}}"
    )


def test_text_plain_lines_end_at_lf_or_crlf_only() -> None:
    # str.splitlines would also break at \x1c or \u2028 and read a second field out of one value.
    message = syntax_error([], "text/plain", 'X-OCCI-Attribute: mcn.a="x\u2028X-OCCI-Attribute: mcn.b=1"')
    assert "text/plain body line 1, X-OCCI-Attribute: control character '\\u2028' at position 10" in message
    request = parse_request([], "text/plain", "X-OCCI-Attribute: mcn.a=1\r\nX-OCCI-Attribute: mcn.b=2\r\n")
    assert dict(request.attributes) == {"mcn.a": 1, "mcn.b": 2}
