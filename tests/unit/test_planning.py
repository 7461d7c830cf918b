"""From an instance, the sip-core profile and its units to a Plan (imsso.planning)."""

from __future__ import annotations

import json
import re

import pytest

from imsso import planning, profiles
from imsso.model import Instance, Unit
from imsso.planning import DnsRecord

DOMAIN = "core.acme.ims.test"
ADDRESSES = {
    "dns-1": "127.200.0.2",
    "scscf-1": "127.200.0.3",
    "scscf-2": "127.200.0.4",
    "scscf-3": "127.200.0.5",
    "pcscf-1": "127.200.0.6",
}


@pytest.fixture(scope="module")
def profile() -> profiles.Profile:
    return profiles.load("sip-core")


def make_instance() -> Instance:
    return Instance(
        id="inst-1",
        tenant="acme",
        name="core",
        profile="sip-core",
        driver="fake",
        domain=DOMAIN,
        sizes={"dns": 1, "scscf": 3, "pcscf": 1},
        attributes={},
        secret="s3cr3t-nonce",
    )


def make_units(*names: str) -> list[Unit]:
    units = []
    for name in names or ADDRESSES:
        role, index = name.rsplit("-", 1)
        units.append(
            Unit(id=f"u-{name}", instance_id="inst-1", name=name, role=role, index=int(index), address=ADDRESSES[name])
        )
    return units


def layout(instance: Instance, unit_name: str) -> dict[str, str]:
    return {
        "unit_dir": f"/srv/imsso/{instance.id}/{unit_name}",
        "subscribers_db": f"/srv/imsso/{instance.id}/subscribers.sqlite",
        "dns_port": "53",
        "internal_net": "127.200.0.0/24",
        "manager_address": "127.0.0.1",
    }


def build(profile, *names: str, in_routing=None) -> planning.Plan:
    units = make_units(*names)
    # the order given does not matter: the plan orders by the profile's start order
    return planning.build(make_instance(), profile, list(reversed(units)), layout, in_routing)


def dispatcher_addresses(plan: planning.Plan) -> list[str]:
    text = plan.unit("pcscf-1").files["dispatcher.list"]
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    found = []
    for line in entries:
        match = re.fullmatch(r"1 sip:([\d.]+):5060 0 0 duid=(scscf-\d+)", line)
        assert match, f"unexpected dispatcher line: {line!r}"
        assert ADDRESSES[match.group(2)] == match.group(1)
        found.append(match.group(1))
    return found


def dmq_notification_peers(config: str) -> list[str]:
    return re.findall(r'modparam\("dmq", "notification_address", "sip:([\d.]+):5060"\)', config)


# --- the plan's units ---------------------------------------------------------------------------------


def test_units_in_start_order_with_their_role_files(profile):
    plan = build(profile)
    assert [u.name for u in plan.units] == ["scscf-1", "scscf-2", "scscf-3", "pcscf-1", "dns-1"]
    assert plan.instance_id == "inst-1" and plan.domain == DOMAIN
    assert set(plan.unit("pcscf-1").files) == {"kamailio.cfg", "dispatcher.list"}
    assert set(plan.unit("scscf-2").files) == {"kamailio.cfg", "dmq-peers.cfg"}
    assert set(plan.unit("dns-1").files) == {"zone.json"}
    assert plan.unit("pcscf-1").reload == {"dispatcher.list": "dispatcher.reload"}
    assert plan.unit("scscf-1").program == "kamailio" and plan.unit("dns-1").program == "dns"
    assert plan.unit("pcscf-1").shm_mb == 64
    assert [u.name for u in plan.role_units("scscf")] == ["scscf-1", "scscf-2", "scscf-3"]
    with pytest.raises(KeyError):
        plan.unit("scscf-9")


# --- DNS records ----------------------------------------------------------------------------------------


def test_an_a_record_for_every_unit(profile):
    plan = build(profile)
    a_records = {(r.name, r.value) for r in plan.dns_records if r.type == "A"}
    for name, address in ADDRESSES.items():
        assert (f"{name}.{DOMAIN}", address) in a_records
    # and per role: a name that resolves to each of its units
    assert {v for n, v in a_records if n == f"scscf.{DOMAIN}"} == {
        ADDRESSES["scscf-1"],
        ADDRESSES["scscf-2"],
        ADDRESSES["scscf-3"],
    }
    assert {v for n, v in a_records if n == f"ns.{DOMAIN}"} == {ADDRESSES["dns-1"]}


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_sip_srv_at_the_domain_points_to_the_pcscf(profile, proto):
    plan = build(profile)
    srv = [r for r in plan.dns_records if r.type == "SRV" and r.name == f"_sip._{proto}.{DOMAIN}"]
    assert srv == [DnsRecord(f"_sip._{proto}.{DOMAIN}", "SRV", f"pcscf-1.{DOMAIN}", priority=10, weight=10, port=5060)]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_srv_per_role(profile, proto):
    plan = build(profile)

    def targets(role: str) -> list[str]:
        return sorted(
            r.value
            for r in plan.dns_records
            if r.type == "SRV" and r.name == f"_sip._{proto}.{role}.{DOMAIN}" and r.port == 5060
        )

    assert targets("scscf") == [f"scscf-{i}.{DOMAIN}" for i in (1, 2, 3)]
    assert targets("pcscf") == [f"pcscf-1.{DOMAIN}"]
    assert targets("dns") == []  # the DNS server does not speak SIP


def test_the_zone_file_carries_every_record(profile):
    plan = build(profile)
    zone = json.loads(plan.unit("dns-1").files["zone.json"])
    assert zone["domain"] == DOMAIN
    assert {(r["name"], r["type"], r["value"]) for r in zone["records"]} == {
        (r.name, r.type, r.value) for r in plan.dns_records
    }


# --- routing --------------------------------------------------------------------------------------------


def test_every_scscf_is_routed_by_default(profile):
    plan = build(profile)
    assert plan.in_routing == ("scscf-1", "scscf-2", "scscf-3")
    assert dispatcher_addresses(plan) == [ADDRESSES["scscf-1"], ADDRESSES["scscf-2"], ADDRESSES["scscf-3"]]


@pytest.mark.parametrize("routed", [["scscf-1", "scscf-3"], ["scscf-2"], ["scscf-3", "scscf-1", "scscf-2"]])
def test_in_routing_decides_the_dispatcher_list(profile, routed):
    plan = build(profile, in_routing=routed)
    assert sorted(dispatcher_addresses(plan)) == sorted(ADDRESSES[n] for n in routed)
    assert set(plan.in_routing) == set(routed)


def test_no_scscf_in_routing_leaves_an_empty_dispatcher_set(profile):
    plan = build(profile, in_routing=[])
    assert plan.in_routing == ()
    assert dispatcher_addresses(plan) == []


def test_only_routable_units_enter_routing(profile):
    plan = build(profile, in_routing=["pcscf-1", "dns-1", "scscf-2"])
    assert plan.in_routing == ("scscf-2",)
    assert dispatcher_addresses(plan) == [ADDRESSES["scscf-2"]]


# --- rendered configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scscf-1", "scscf-2", "scscf-3", "pcscf-1"])
def test_kamailio_configs_listen_on_the_units_own_address(profile, name):
    config = build(profile).unit(name).files["kamailio.cfg"]
    address = ADDRESSES[name]
    for listen in (f"listen=udp:{address}:5060", f"listen=tcp:{address}:5060", f"listen=tcp:{address}:5080"):
        assert listen in config
    assert f"/srv/imsso/inst-1/{name}" in config  # its own folder, from the driver's layout
    for other, other_address in ADDRESSES.items():
        if other != name:
            assert f"listen=udp:{other_address}" not in config


def test_scscf_configs_carry_the_domain_the_secret_and_the_subscriber_table(profile):
    plan = build(profile)
    for name in ("scscf-1", "scscf-2", "scscf-3"):
        config = plan.unit(name).files["kamailio.cfg"]
        assert f'alias="{DOMAIN}"' in config
        assert 'modparam("auth", "secret", "s3cr3t-nonce")' in config
        assert "sqlite:////srv/imsso/inst-1/subscribers.sqlite" in config


def test_pcscf_config_points_at_its_own_dispatcher_list(profile):
    config = build(profile).unit("pcscf-1").files["kamailio.cfg"]
    assert 'modparam("dispatcher", "list_file", "/srv/imsso/inst-1/pcscf-1/dispatcher.list")' in config
    assert f"sip:pcscf-1@{ADDRESSES['pcscf-1']}:5060" in config


def test_dmq_peers_are_the_other_scscfs(profile):
    plan = build(profile)
    assert dmq_notification_peers(plan.unit("scscf-3").files["dmq-peers.cfg"]) == [
        ADDRESSES["scscf-1"],
        ADDRESSES["scscf-2"],
    ]
    assert dmq_notification_peers(plan.unit("scscf-1").files["dmq-peers.cfg"]) == [
        ADDRESSES["scscf-2"],
        ADDRESSES["scscf-3"],
    ]
    assert 'include_file "dmq-peers.cfg"' in plan.unit("scscf-1").files["kamailio.cfg"]
    alone = build(profile, "dns-1", "scscf-1", "pcscf-1")  # the only one is its own peer
    assert dmq_notification_peers(alone.unit("scscf-1").files["dmq-peers.cfg"]) == [ADDRESSES["scscf-1"]]
    assert plan.unit("scscf-1").reload == {"dmq-peers.cfg": "at-start"}


def test_configs_are_stable_when_scscfs_are_added(profile):
    """Only files with a live (or at-start) path change: no running unit is restarted by a scale."""
    one = build(profile, "dns-1", "scscf-1", "pcscf-1")
    two = build(profile, "dns-1", "scscf-1", "scscf-2", "pcscf-1")
    three = build(profile)
    first = one.unit("scscf-1").files["kamailio.cfg"]
    assert two.unit("scscf-1").files["kamailio.cfg"] == first
    assert three.unit("scscf-1").files["kamailio.cfg"] == first
    assert three.unit("scscf-2").files["kamailio.cfg"] == two.unit("scscf-2").files["kamailio.cfg"]
    # what does change is the routing and the zone
    assert dispatcher_addresses(one) == [ADDRESSES["scscf-1"]]
    assert dispatcher_addresses(two) == [ADDRESSES["scscf-1"], ADDRESSES["scscf-2"]]
    assert one.unit("dns-1").files != two.unit("dns-1").files


def test_a_layout_missing_a_path_is_an_error_not_a_blank(profile):
    # StrictUndefined: a template variable nobody gave must not render as an empty string
    with pytest.raises(Exception, match="unit_dir"):
        planning.build(make_instance(), profile, make_units(), lambda i, n: {"subscribers_db": "/x"})


def test_naptr_points_each_sip_role_and_the_domain_to_its_srv_records(profile):
    plan = build(profile)
    naptr = {(r.name, r.service, r.value, r.weight) for r in plan.dns_records if r.type == "NAPTR"}
    for name in (f"scscf.{DOMAIN}", f"pcscf.{DOMAIN}", DOMAIN):  # the domain: its entry, the P-CSCF
        assert (name, "SIP+D2U", f"_sip._udp.{name}", 50) in naptr
        assert (name, "SIP+D2T", f"_sip._tcp.{name}", 60) in naptr
    assert not any(n.startswith(f"dns.{DOMAIN}") for n, *_ in naptr)
    zone = json.loads(plan.unit("dns-1").files["zone.json"])
    served = next(r for r in zone["records"] if r["type"] == "NAPTR" and r["name"] == DOMAIN)
    assert (served["order"], served["preference"], served["flags"], served["service"], served["replacement"]) == (
        10,
        50,
        "s",
        "SIP+D2U",
        f"_sip._udp.{DOMAIN}",
    )
