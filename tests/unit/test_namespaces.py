"""Each attribute namespace has one owner: spec.py sorts names by a table, policy.py checks the
policy and scale overrides, each driver its own options."""

from __future__ import annotations

import pytest

from imsso import policy, profiles, spec
from imsso.drivers import registry
from imsso.model import InvalidInput


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("imsso.size.scscf", spec.SIZE),
        ("imsso.profile", spec.CREATE),
        ("imsso.domain", spec.CREATE),
        ("imsso.test_subscribers", spec.SETTING),
        ("mcn.endpoint.maas", spec.FREE),
        ("occi.core.title", spec.FREE),
        ("imsso.policy.scscf-out.above", spec.POLICY),
        ("imsso.scale.scscf.max", spec.POLICY),
        ("occi.core.id", spec.OUTPUT),
        ("mcn.service.state", spec.OUTPUT),
        ("imsso.unit.scscf-1.state", spec.OUTPUT),
        ("mcn.endpoint.pcscf-1.local.private", spec.OUTPUT),
        ("imsso.colour", None),
    ],
)
def test_every_name_has_one_owner(name: str, owner: str | None):
    assert spec.owner(name) == owner


def test_driver_options_are_known_by_the_drivers_prefixes_only():
    prefixes = tuple(cls.option_prefix for cls in registry().values() if cls.option_prefix)
    assert "imsso.os." in prefixes
    assert spec.owner("imsso.os.network") is None
    assert spec.owner("imsso.os.network", prefixes) == spec.DRIVER
    assert spec.split({"imsso.os.network": "n1"}, prefixes).attributes == {"imsso.os.network": "n1"}
    with pytest.raises(InvalidInput, match="unknown attribute imsso.k8s.namespace"):
        spec.split({"imsso.k8s.namespace": "x"}, prefixes)


def test_policy_and_scale_overrides_are_checked_by_policy_alone():
    prof = profiles.load("sip-core")
    role = next(iter(prof.roles))
    policy.check_overrides(prof, {f"imsso.scale.{role}.max": prof.role(role).max})
    with pytest.raises(InvalidInput, match="accepted are imsso.scale.<role>.min and .max"):
        policy.check_overrides(prof, {f"imsso.scale.{role}.most": 1})
    with pytest.raises(InvalidInput, match="imsso.policy.<policy>.<field>"):
        policy.check_overrides(prof, {"imsso.policy.nosuch.above": 1})
