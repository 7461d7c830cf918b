"""The keys units prove themselves with: derived per purpose and per unit, rendered into the
configs where needed (a checker gets only a hash), stable when the instance scales."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from imsso import planning, profiles, unitkeys
from imsso.drivers.local.driver import LocalDriver
from imsso.model import Instance, Subscriber, Unit

SECRET = "0123456789abcdef0123456789abcdef"


def instance(profile: str) -> Instance:
    return Instance(
        id="i-1",
        tenant="t",
        name="core",
        profile=profile,
        driver="local",
        domain="ims.test",
        sizes={},
        attributes={},
        secret=SECRET,
    )


def units(profile: profiles.Profile, extra: dict[str, int]) -> list[Unit]:
    found = []
    for position, role in enumerate(profile.order):  # a unit's address does not move as others come
        for index in range(1, extra.get(role, 1) + 1):
            found.append(
                Unit(
                    id=f"{role}-{index}",
                    instance_id="i-1",
                    name=f"{role}-{index}",
                    role=role,
                    index=index,
                    address=f"127.200.0.{10 * position + index + 1}",
                )
            )
    return found


def layout(inst: Instance, unit_name: str) -> dict[str, str]:
    return {
        "unit_dir": f"/srv/{unit_name}",
        "subscribers_db": "/srv/s.sqlite",
        "hss_subscribers": "/srv/h.json",
        "dns_port": "53",
        "internal_net": "127.200.0.0/24",
        "manager_address": "127.0.0.1",
    }


def configs(profile_name: str, **sizes: int) -> dict[str, str]:
    profile = profiles.load(profile_name)
    plan = planning.build(instance(profile_name), profile, units(profile, sizes), layout)
    return {u.name: u.files["kamailio.cfg"] for u in plan.units if "kamailio.cfg" in u.files}


def test_keys_differ_by_purpose_unit_and_instance():
    keys = {
        unitkeys.management_key(SECRET, "scscf-1"),
        unitkeys.management_key(SECRET, "scscf-2"),
        unitkeys.dmq_key(SECRET),
        unitkeys.term_key(SECRET),
        unitkeys.edge_key(SECRET),
        unitkeys.dmq_key(SECRET[::-1]),
    }
    assert len(keys) == 6 and all(len(k) == 64 for k in keys)


@pytest.mark.parametrize("profile_name", ["sip-core", "ims"])
def test_a_config_holds_its_own_management_hash_and_no_management_key(profile_name):
    for name, text in configs(profile_name).items():
        key = unitkeys.management_key(SECRET, name)
        assert hashlib.sha256(f"Bearer {key}".encode()).hexdigest() in text, name
        assert key not in text, name


@pytest.mark.parametrize("profile_name", ["sip-core", "ims"])
def test_only_senders_hold_the_sip_keys(profile_name):
    found = configs(profile_name)
    term, edge = unitkeys.term_key(SECRET), unitkeys.edge_key(SECRET)
    assert all(term in text for name, text in found.items() if name.startswith("scscf"))
    assert all(edge in text for name, text in found.items() if name.startswith("pcscf"))
    # the P-CSCF checks the term key, the S-CSCF the edge key: by hash only
    assert term not in found["pcscf-1"] and unitkeys.sha256(term) in found["pcscf-1"]
    assert edge not in found["scscf-1"] and unitkeys.sha256(edge) in found["scscf-1"]
    assert not any(term in text or edge in text for name, text in found.items() if name.startswith("icscf"))


def test_the_s_cscfs_sign_and_check_their_kdmq():
    text = configs("sip-core")["scscf-1"]
    assert f'append_hf("X-Imsso-Dmq-Key: {unitkeys.dmq_key(SECRET)}\\r\\n")' in text
    assert unitkeys.sha256(unitkeys.dmq_key(SECRET)) in text


@pytest.mark.parametrize("profile_name", ["sip-core", "ims"])
def test_kamailio_configs_do_not_change_when_the_instance_scales(profile_name):
    """kamailio.cfg is applied only at a start: a key that moved with the unit set would make
    every scaling fail on the units that run."""
    one, three = configs(profile_name), configs(profile_name, scscf=3)
    assert all(three[name] == text for name, text in one.items())


def test_the_local_driver_keeps_instance_and_unit_files_private(tmp_path):
    os.umask(0o022)
    driver = LocalDriver(tmp_path / "data")
    inst = instance("sip-core")
    driver.sync_subscribers(
        inst, profiles.load("sip-core"), [Subscriber(instance_id="i-1", user="alice", domain="ims.test", password="pw")]
    )
    folder = driver.instance_dir(inst)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder.parent).stat().st_mode) == 0o700
    assert {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.name.startswith("subscribers.sqlite")
    }["subscribers.sqlite"] == 0o600
