"""The two driver shapes: a fake of each satisfies its shape, and the engine, the service and the
metric sources choose by shape or capability, never by a driver's name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fakes import FakeDriver, FakePlanDriver, Orchestrator
from imsso import drivers, programs
from imsso.drivers import BaseDriver, DriverError, PlanDriver, UnitDriver
from imsso.drivers.local import LocalDriver
from imsso.drivers.openstack import OpenStackDriver
from imsso.model import Instance, InvalidInput, OperationKind, OperationState, Unit
from imsso.monitoring.kamailio import KamailioStats

K = OperationKind


@pytest.fixture
def orch(tmp_path: Path):
    orch = Orchestrator(tmp_path / "data")
    orch.drivers["fakeplan"] = FakePlanDriver()
    orch.start()
    yield orch
    orch.stop()


def test_the_fakes_and_the_real_drivers_have_one_shape_each():
    assert isinstance(FakeDriver(), UnitDriver) and not isinstance(FakeDriver(), PlanDriver)
    assert isinstance(FakePlanDriver(), PlanDriver) and not isinstance(FakePlanDriver(), UnitDriver)
    assert issubclass(LocalDriver, UnitDriver) and issubclass(OpenStackDriver, PlanDriver)
    assert all(issubclass(cls, BaseDriver) for cls in drivers.registry().values())


def test_the_registry_names_each_driver_with_its_options_and_capabilities():
    found = drivers.registry()
    assert found == {"local": LocalDriver, "openstack": OpenStackDriver}
    assert found["openstack"].option_prefix == "imsso.os." and found["local"].option_prefix == ""
    assert "imsso.os.cidr" in found["openstack"].create_only
    assert found["local"].capabilities.live_reload and found["local"].capabilities.management
    assert found["openstack"].capabilities.preview and not found["openstack"].capabilities.management
    assert drivers.option_owner("imsso.os.flavor") == "openstack" and drivers.option_owner("x.y") == ""


def test_a_unit_driver_is_driven_unit_by_unit(orch):
    _, op = orch.service.create(orch.caller(), "here", then=(K.DEPLOY,))
    op = orch.wait_chain(op.id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert "preflight" in [s.name for s in op.steps]
    assert orch.driver.called("ensure_unit") and not orch.drivers["fakeplan"].applied


def test_a_plan_driver_gets_the_whole_plan_at_once(orch):
    instance, op = orch.service.create(orch.caller(), "there", driver="fakeplan", then=(K.DEPLOY,))
    op = orch.wait_chain(op.id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert [s.name for s in op.steps][-2:] == ["template", "stack create"]
    (request,) = orch.drivers["fakeplan"].applied
    units = orch.store.units(instance.id)
    assert sorted(request.template["resources"]) == sorted(u.name for u in units)
    assert orch.store.get_instance(instance.id).stack_id == f"plan-{instance.id[:4]}"
    assert not orch.driver.called("ensure_unit")  # the unit driver saw nothing of it


def test_plan_shows_only_for_plan_drivers_that_preview(orch):
    _, op = orch.service.create(orch.caller(), "there", driver="fakeplan", then=(K.DEPLOY,))
    orch.wait_chain(op.id)
    assert orch.service.plan(orch.caller(), "there")["stack_name"] == "fake-there"
    orch.service.create(orch.caller(), "here")
    with pytest.raises(InvalidInput, match=r"uses driver local: plans show fake plans \(driver fakeplan\)"):
        orch.service.plan(orch.caller(), "here")


def test_options_of_another_driver_are_refused_naming_it():
    instance = Instance(
        id="i1",
        tenant="t",
        name="one",
        profile="sip-core",
        driver="local",
        domain="ims.test",
        sizes={},
        attributes={"imsso.os.flavor": "m1.large"},
    )
    with pytest.raises(InvalidInput, match="imsso.os.flavor is an option of driver openstack; instance 'one'"):
        drivers.check_driver_options(FakeDriver(), instance)


def test_a_driver_without_a_management_path_refuses_calls_and_is_skipped_once(caplog):
    instance = Instance(
        id="i1",
        tenant="t",
        name="one",
        profile="sip-core",
        driver="fakeplan",
        domain="ims.test",
        sizes={},
        attributes={},
    )
    unit = Unit(id="u", instance_id="i1", name="scscf-1", role="scscf", index=1, address="10.0.0.1")
    plan_driver = FakePlanDriver()
    with pytest.raises(DriverError, match="no management path to scscf-1"):
        plan_driver.call(instance, unit, "stats.fetch", "all")
    source = KamailioStats(lambda i: plan_driver, lambda i, u: programs.get("kamailio"))
    with caplog.at_level(logging.INFO, logger="imsso.monitoring.kamailio"):
        assert source.sample(instance, [unit]) == {}
        assert source.sample(instance, [unit]) == {}
    assert [r.message for r in caplog.records].count(
        "no kamailio figures for units of driver fakeplan: it has no management path to them"
    ) == 1
    unit_driver = FakeDriver()
    assert KamailioStats(lambda i: unit_driver, lambda i, u: programs.get("kamailio")).sample(instance, [unit]) == {
        "scscf-1": {}
    }  # the fake answers None: asked, no figures
    assert unit_driver.called("call")[0].data == {"method": "stats.fetch", "params": ["all"]}


def test_a_driver_of_neither_shape_is_refused_when_built(monkeypatch):
    class Shapeless(BaseDriver):
        name = "shapeless"

        @classmethod
        def build(cls, context):
            return cls()

        def allocate_address(self, instance, taken):
            return ""

        def layout(self, instance, unit_name):
            raise NotImplementedError

        def sync_subscribers(self, instance, profile, subscribers):
            pass

        def check_service(self, instance, plan, subscriber, deadline):
            return ""

        def is_alive(self, instance, unit):
            return True

        def answers(self, instance, unit, probe):
            return True

        def dispose(self, instance, units):
            return []

    monkeypatch.setattr(drivers, "registry", lambda: {"shapeless": Shapeless})
    with pytest.raises(TypeError, match="neither a UnitDriver nor a PlanDriver"):
        drivers.build_all(drivers.DriverContext(settings=None))  # type: ignore[arg-type]
