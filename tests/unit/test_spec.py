"""What a client may set on an instance: imsso.spec, checked against the sip-core profile."""

from __future__ import annotations

import pytest

from imsso import profiles, spec
from imsso.model import InvalidInput


@pytest.fixture(scope="module")
def sip_core() -> profiles.Profile:
    return profiles.load("sip-core")


# --- split ------------------------------------------------------------------------------------------


def test_split_sorts_sizes_inputs_settings_and_create_only():
    changes = spec.split(
        {
            "imsso.size.scscf": "3",
            "imsso.size.pcscf": 1,
            "mcn.endpoint.maas": "160.85.4.50",
            "occi.core.title": "my core",
            "imsso.test_subscribers": "false",
            "imsso.profile": "sip-core",
            "imsso.domain": "ims.example.org",
        }
    )
    assert changes.sizes == {"scscf": 3, "pcscf": 1}
    assert changes.attributes == {"mcn.endpoint.maas": "160.85.4.50", "occi.core.title": "my core"}
    assert changes.test_subscribers is False
    assert changes.create_only == {"imsso.profile": "sip-core", "imsso.domain": "ims.example.org"}
    assert not changes.empty()


def test_split_of_nothing_is_empty():
    changes = spec.split({})
    assert changes.empty()
    assert changes.test_subscribers is None


@pytest.mark.parametrize(
    "name",
    [
        "occi.core.id",
        "occi.mcn.stack.state",
        "occi.mcn.stack.id",
        "mcn.service.state",
        "imsso.operation",
        "imsso.error",
        "imsso.unit.scscf-1.state",
        "mcn.endpoint.pcscf-1.local.private",
        "mcn.endpoint.scscf-2.public-net.public",
    ],
)
def test_outputs_are_refused_naming_the_attribute(name):
    with pytest.raises(InvalidInput) as err:
        spec.split({name: "x"})
    assert name in err.value.message
    assert "set by the orchestrator" in err.value.message
    assert err.value.details == {"attribute": name}


def test_an_input_under_mcn_endpoint_is_not_taken_for_an_output():
    # mcn.endpoint.maas is the guide's monitoring input, not a unit endpoint
    assert spec.split({"mcn.endpoint.maas": "160.85.4.50"}).attributes == {"mcn.endpoint.maas": "160.85.4.50"}


@pytest.mark.parametrize("name", ["foo.bar", "imsso.colour", "occi.core.owner", "size.scscf"])
def test_unknown_names_are_refused_listing_what_is_accepted(name):
    with pytest.raises(InvalidInput) as err:
        spec.split({name: "x"})
    message = err.value.message
    assert f"unknown attribute {name}" in message
    for accepted in (
        "mcn.",
        "imsso.size.<role>",
        "imsso.test_subscribers",
        "imsso.profile",
        "imsso.driver",
        "imsso.domain",
    ):
        assert accepted in message
    assert err.value.details == {"attribute": name}


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        (" No ", False),
        ("0", False),
        (1, True),
        (0, False),
    ],
)
def test_booleans_parse(value, expected):
    assert spec.split({"imsso.test_subscribers": value}).test_subscribers is expected


@pytest.mark.parametrize("value", ["maybe", "", "2", "on"])
def test_a_bad_boolean_is_refused_naming_the_attribute(value):
    with pytest.raises(InvalidInput) as err:
        spec.split({"imsso.test_subscribers": value})
    assert "imsso.test_subscribers must be true or false" in err.value.message
    assert repr(value) in err.value.message


@pytest.mark.parametrize("value, expected", [(3, 3), ("3", 3), (" 2 ", 2), ("-1", -1), ("0", 0)])
def test_sizes_parse_as_whole_numbers(value, expected):
    assert spec.split({"imsso.size.scscf": value}).sizes == {"scscf": expected}


@pytest.mark.parametrize("value", [True, False, "3.5", 3.5, "three", "", "0x3"])
def test_a_size_that_is_not_a_whole_number_is_refused(value):
    with pytest.raises(InvalidInput) as err:
        spec.split({"imsso.size.scscf": value})
    assert "imsso.size.scscf must be a whole number" in err.value.message
    assert repr(value) in err.value.message


@pytest.mark.parametrize("name", ["imsso.profile", "imsso.driver", "imsso.domain"])
def test_create_only_names_need_a_non_empty_string(name):
    assert spec.split({name: "x"}).create_only == {name: "x"}
    for bad in ("", 3, True):
        with pytest.raises(InvalidInput) as err:
            spec.split({name: bad})
        assert f"{name} must be a non-empty string" in err.value.message


# --- sizes ------------------------------------------------------------------------------------------


def test_sizes_within_the_profile_bounds_pass(sip_core):
    spec.check_sizes(sip_core, {"scscf": 1})
    spec.check_sizes(sip_core, {"scscf": 5, "pcscf": 1, "dns": 1})
    spec.check_sizes(sip_core, {})


@pytest.mark.parametrize(
    "role, count, low, high",
    [
        ("scscf", 6, 1, 5),
        ("scscf", 0, 1, 5),
        ("scscf", -1, 1, 5),
        ("pcscf", 2, 1, 1),
        ("dns", 0, 1, 1),
    ],
)
def test_sizes_out_of_bounds_name_the_role_bounds_and_value(sip_core, role, count, low, high):
    with pytest.raises(InvalidInput) as err:
        spec.check_sizes(sip_core, {role: count})
    assert err.value.message == (f"size of {role} must be between {low} and {high} in profile sip-core, not {count}")
    assert err.value.details == {"role": role, "min": low, "max": high, "given": count}


def test_a_size_for_a_role_the_profile_lacks_names_the_roles(sip_core):
    with pytest.raises(InvalidInput) as err:
        spec.check_sizes(sip_core, {"hss": 1})
    assert "no role 'hss'" in err.value.message
    for role in ("dns", "pcscf", "scscf"):
        assert role in err.value.message


def test_default_sizes_come_from_the_profile(sip_core):
    assert spec.default_sizes(sip_core) == {"dns": 1, "pcscf": 1, "scscf": 1}


# --- domain -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("ims.test", "ims.test"),
        ("IMS.Example.ORG", "ims.example.org"),
        (" core-1.acme.ims.test ", "core-1.acme.ims.test"),
    ],
)
def test_a_domain_is_normalised(given, expected):
    assert spec.check_domain(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "localhost",
        "ims_core.test",
        "-ims.test",
        "ims-.test",
        "ims..test",
        "ims.test.",
        "ims.t",
        "ims.123",
        "",
        "a b.test",
        "x" * 64 + ".test",
    ],
)
def test_a_bad_domain_is_refused_with_an_example(bad):
    with pytest.raises(InvalidInput) as err:
        spec.check_domain(bad)
    assert "is not a DNS domain name" in err.value.message
    assert "ims.example.org" in err.value.message


@pytest.mark.parametrize(
    "name",
    [
        "mcn.x\nX-OCCI-Attribute: occi.mcn.stack.state",
        'mcn.x"',
        "mcn.x=1",
        "mcn..x",
        "mcn.X",
        "mcn.1x",
        "mcn.x;y",
        "",
        "m" * 256,
        7,
    ],
)
def test_attribute_names_are_checked_whole(name):
    with pytest.raises(InvalidInput) as refused:
        spec.split({name: "v"})
    assert "not an OCCI attribute name" in refused.value.message


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "x" * 8193, None, {"a": 1}, [1]])
def test_attribute_values_are_bounded_printable_scalars(value):
    with pytest.raises(InvalidInput) as refused:
        spec.split({"mcn.endpoint.maas": value})
    assert "mcn.endpoint.maas" in refused.value.message


def test_attribute_values_may_hold_quotes_tabs_and_text():
    assert spec.split({"mcn.note": 'say "hi"\tthere \\ é'}).attributes == {"mcn.note": 'say "hi"\tthere \\ é'}
