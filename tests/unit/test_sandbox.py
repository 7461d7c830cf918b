"""Profile templates render in Jinja2's sandbox: a profile is data, never code in the orchestrator."""

from __future__ import annotations

import jinja2
import pytest

from attacks import evil_profile
from imsso import planning, profiles
from imsso.model import Instance, Unit


def test_operator_profile_templates_render_in_a_sandbox(tmp_path):
    """Even a profile the operator installed cannot run code through its templates."""
    folder, marker = tmp_path / "profiles" / "evil", tmp_path / "pwned"
    evil_profile(folder, marker)
    prof = profiles._read(folder)
    instance = Instance(
        id="i",
        tenant="t",
        name="evil",
        profile="evil",
        driver="local",
        domain="evil.test",
        sizes={"pcscf": 1},
        attributes={},
        secret="0" * 32,
    )
    unit = Unit(id="u", instance_id="i", name="pcscf-1", role="pcscf", index=1, address="127.0.0.9")
    with pytest.raises(jinja2.exceptions.SecurityError) as refused:
        planning.build(instance, prof, [unit], lambda inst, name: {})
    assert "unsafe" in str(refused.value) or "not safely" in str(refused.value)
    assert not marker.exists()
