"""Operation kinds in one table: lifecycle, the engine, OCCI and the JSON API all read it."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from imsso import lifecycle
from imsso.api import rest
from imsso.api.occi import routes
from imsso.engine.operations import HANDLERS
from imsso.model import Instance, InstanceState, OperationKind
from imsso.operations_table import TABLE, USER_ACTIONS, OperationSpec

S = InstanceState


def test_every_kind_has_one_row_keyed_by_it():
    assert set(TABLE) == set(OperationKind)
    assert all(isinstance(row, OperationSpec) and key == row.kind for key, row in TABLE.items())
    assert all(row.name == row.kind.value for row in TABLE.values())


def test_rows_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE[OperationKind.DEPLOY].handler = "other"  # type: ignore[misc]


def test_no_kind_applies_to_a_disposed_instance_and_each_runs_in_its_own_state():
    assert all(S.DISPOSED not in row.applies_from for row in TABLE.values())
    running = [row.running for row in TABLE.values()]
    assert len(set(running)) == len(running)


def test_the_engine_runs_the_handler_each_row_names():
    assert set(HANDLERS) == set(TABLE)
    assert all(HANDLERS[kind].__name__ == row.handler for kind, row in TABLE.items())


def test_lifecycle_reads_the_table():
    for kind, row in TABLE.items():
        assert lifecycle.ALLOWED_FROM[kind] == row.applies_from
        assert lifecycle.RUNNING_STATE[kind] == row.running
        assert lifecycle.stack_state(kind, "COMPLETE") == f"{row.stack_action}_COMPLETE"


@pytest.mark.parametrize("kind", [k for k, r in TABLE.items() if r.after is not None])
def test_a_fixed_state_after_success_comes_from_the_row(kind: OperationKind):
    instance = Instance(
        id="i",
        tenant="t",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.example.org",
        sizes={},
        attributes={},
    )
    for has_units in (False, True):
        assert lifecycle.state_after(instance, kind, has_units) == TABLE[kind].after


def test_other_kinds_end_where_the_units_say():
    instance = Instance(
        id="i",
        tenant="t",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.example.org",
        sizes={},
        attributes={},
    )
    for kind in (k for k, r in TABLE.items() if r.after is None):
        assert lifecycle.state_after(instance, kind, has_units=False) == S.INITIALISED
        assert lifecycle.state_after(instance, kind, has_units=True) == S.DEPLOYED
        provisioned = dataclasses.replace(instance, provisioned=True)
        assert lifecycle.state_after(provisioned, kind, has_units=True) == S.ACTIVE


def test_user_actions_are_the_rows_marked_so_in_order():
    assert USER_ACTIONS == ("deploy", "provision")
    assert USER_ACTIONS == tuple(r.name for r in TABLE.values() if r.user_action)


def test_the_occi_actions_are_the_user_actions():
    assert tuple(routes.ACTIONS) == USER_ACTIONS
    assert routes.IMS.actions == tuple(routes.ACTIONS[a].id for a in USER_ACTIONS)


def test_the_json_action_enum_is_the_user_actions():
    assert typing.get_args(rest.UserAction) == USER_ACTIONS
    assert rest.ACTION_CHAINS[-1] == list(USER_ACTIONS)
    schema = rest.InstanceCreate.model_json_schema()["properties"]["actions"]
    assert schema["items"]["enum"] == list(USER_ACTIONS)
    assert schema["default"] == list(USER_ACTIONS)


def test_the_json_action_path_takes_exactly_the_user_actions():
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(rest.router)
    path = app.openapi()["paths"]["/v1/instances/{ref}/actions/{action}"]["post"]
    [action] = [p for p in path["parameters"] if p["name"] == "action"]
    assert action["schema"]["enum"] == list(USER_ACTIONS)


def test_only_user_actions_are_offered_as_occi_links():
    instance = Instance(
        id="i",
        tenant="t",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.example.org",
        sizes={},
        attributes={},
        state=S.ACTIVE,
        stack_state="UPDATE_COMPLETE",
        provisioned=True,
    )
    assert set(lifecycle.applicable_actions(instance)) <= set(USER_ACTIONS)


def test_the_stack_words_change_as_each_row_says():
    from imsso.engine import Engine

    instance = Instance(
        id="i",
        tenant="t",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.example.org",
        sizes={},
        attributes={},
        stack_state="INIT_COMPLETE",
    )

    class Units:  # just what Engine._stack_state reads of the store
        def __init__(self, units: list) -> None:
            self.found = units

        def units(self, instance_id: str) -> list:
            return self.found

    engine = Engine.__new__(Engine)
    for has_units in (False, True):
        engine.store = Units(["u"] if has_units else [])  # type: ignore[assignment]
        for kind, row in TABLE.items():
            op = type("Op", (), {"kind": kind})()
            changes = row.stack_change == "always" or row.stack_change == "with units" and has_units
            expected = f"{row.stack_action}_COMPLETE" if changes else "INIT_COMPLETE"
            assert engine._stack_state(instance, op, "COMPLETE") == expected, (kind, has_units)
