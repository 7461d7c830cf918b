"""Unit reservation is one pure function (planning.reserve_units): a plan preview and the engine
choose the same units and addresses for the same instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import FakePlanDriver, Orchestrator
from imsso import planning, profiles
from imsso.model import OperationKind, OperationState, Unit

K = OperationKind


@pytest.fixture
def orch(tmp_path: Path):
    o = Orchestrator(tmp_path / "data")
    o.drivers["fakeplan"] = FakePlanDriver()  # the dict the engine and the service share
    o.start()
    yield o
    o.stop()


def previewed(orch: Orchestrator, sizes: dict[str, int] | None = None) -> dict[str, str]:
    return orch.service.plan(orch.caller(), "core", sizes=sizes)["template"]["resources"]


def stored(orch: Orchestrator, instance_id: str) -> dict[str, str]:
    return {u.name: u.address for u in orch.store.units(instance_id)}


def test_plan_and_deploy_reserve_the_same_units_and_addresses(orch: Orchestrator):
    instance, _ = orch.service.create(orch.caller(), "core", driver="fakeplan")
    preview = previewed(orch)
    op = orch.wait_chain(orch.service.act(orch.caller(), "core", K.DEPLOY).id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert stored(orch, instance.id) == preview
    assert preview  # the profile's default sizes: at least one unit


def test_plan_and_scale_out_reserve_the_same_new_units(orch: Orchestrator):
    instance, op = orch.service.create(orch.caller(), "core", driver="fakeplan", then=(K.DEPLOY,))
    assert orch.wait_chain(op.id).state == OperationState.SUCCEEDED
    before = stored(orch, instance.id)
    preview = previewed(orch, {"scscf": 3})
    assert orch.store.units(instance.id) and stored(orch, instance.id) == before  # the plan stored nothing
    op = orch.wait_chain(orch.service.scale(orch.caller(), "core", {"scscf": 3}).id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert stored(orch, instance.id) == preview
    assert {k: v for k, v in preview.items() if k in before} == before  # kept units keep their address


def test_reserve_units_is_pure_and_takes_the_lowest_free_index_and_address():
    profile = profiles.load("sip-core")
    existing = [Unit(id="u1", instance_id="i", name="scscf-2", role="scscf", index=2, address="10.0.0.5")]
    taken = {"10.0.0.5", "10.0.0.1"}

    def allocate(in_use: set[str]) -> str:
        return next(f"10.0.0.{h}" for h in range(1, 255) if f"10.0.0.{h}" not in in_use)

    sizes = {**{r: 0 for r in profile.roles}, "scscf": 2}
    reserved = planning.reserve_units(profile, "i", sizes, existing, taken, allocate)
    assert taken == {"10.0.0.5", "10.0.0.1"}  # not changed
    assert [(u.name, u.address, u.id) for u in reserved.added] == [("scscf-1", "10.0.0.2", "")]
    assert [u.name for u in reserved.keep] == ["scscf-1", "scscf-2"]
    assert reserved.extra == []
    shrunk = planning.reserve_units(profile, "i", {**sizes, "scscf": 0}, existing, taken, allocate)
    assert (shrunk.keep, shrunk.added, [u.name for u in shrunk.extra]) == ([], [], ["scscf-2"])
