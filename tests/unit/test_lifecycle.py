"""Which operation applies in which state, and Heat's words for the stack state (imsso.lifecycle)."""

from __future__ import annotations

import pytest

from imsso import lifecycle
from imsso.model import Instance, InstanceState, NotApplicable, OperationKind

S = InstanceState
K = OperationKind


def instance(state: InstanceState = S.INITIALISED, stack_state: str = "INIT_COMPLETE", **fields) -> Instance:
    return Instance(
        id="i-1",
        tenant="acme",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.test",
        sizes={"scscf": 1},
        attributes={},
        state=state,
        stack_state=stack_state,
        **fields,
    )


# The states where an instance rests, with the stack state it has there.
RESTING = {
    S.INITIALISED: "INIT_COMPLETE",
    S.DEPLOYED: "CREATE_COMPLETE",
    S.ACTIVE: "UPDATE_COMPLETE",
    S.DISPOSED: "DELETE_COMPLETE",
}

# Where each operation may start (besides FAILED, covered below).
EXPECTED = {
    K.DEPLOY: {S.INITIALISED},
    K.PROVISION: {S.DEPLOYED, S.ACTIVE},
    K.UPDATE: {S.INITIALISED, S.DEPLOYED, S.ACTIVE},
    K.SCALE: {S.INITIALISED, S.DEPLOYED, S.ACTIVE},
    K.HEAL: {S.DEPLOYED, S.ACTIVE},  # a failed instance waits for a person: no automatic heal
    K.DISPOSE: {S.INITIALISED, S.DEPLOYING, S.DEPLOYED, S.PROVISIONING, S.ACTIVE, S.UPDATING, S.SCALING, S.HEALING},
}


@pytest.mark.parametrize("kind", list(K))
@pytest.mark.parametrize("state", [s for s in S if s != S.FAILED])
def test_which_operation_applies_in_which_state(kind, state):
    inst = instance(state, RESTING.get(state, "CREATE_COMPLETE"))
    if state in EXPECTED[kind]:
        lifecycle.check_applicable(inst, kind)
    else:
        with pytest.raises(NotApplicable) as err:
            lifecycle.check_applicable(inst, kind)
        message = err.value.message
        assert message.startswith(f"{kind.value} does not apply to instance 'core' in state {state.value}: ")
        # the message lists where it would apply
        for allowed in lifecycle.ALLOWED_FROM[kind]:
            assert allowed.value in message
        assert err.value.details == {"state": state.value, "operation": kind.value}


@pytest.mark.parametrize(
    "state, kind, reason",
    [
        (S.INITIALISED, K.PROVISION, "deploy it first"),
        (S.DEPLOYED, K.DEPLOY, "it is already deployed"),
        (S.ACTIVE, K.DEPLOY, "it is already deployed and provisioned"),
        (S.DISPOSED, K.DEPLOY, "it has been disposed"),
        (S.DISPOSED, K.DISPOSE, "it has been disposed"),
        (S.DEPLOYING, K.PROVISION, "wait for the running operation to finish"),
        (S.SCALING, K.UPDATE, "wait for the running operation to finish"),
    ],
)
def test_not_applicable_says_why(state, kind, reason):
    with pytest.raises(NotApplicable) as err:
        lifecycle.check_applicable(instance(state, RESTING.get(state, "CREATE_COMPLETE")), kind)
    assert reason in err.value.message


def test_a_failed_instance_accepts_every_operation_as_its_retry_but_a_second_deploy():
    failed = instance(S.FAILED, "UPDATE_FAILED")
    for kind in K:
        if kind not in (K.DEPLOY, K.HEAL):  # heals are the runtime's, for what it watches
            lifecycle.check_applicable(failed, kind)
    with pytest.raises(NotApplicable) as err:
        lifecycle.check_applicable(failed, K.DEPLOY)
    assert "was deployed before it failed" in err.value.message


@pytest.mark.parametrize("stack_state", ["INIT_COMPLETE", "CREATE_FAILED", "CREATE_IN_PROGRESS"])
def test_provision_of_an_instance_whose_deploy_failed_asks_for_deploy(stack_state):
    with pytest.raises(NotApplicable) as err:
        lifecycle.check_applicable(instance(S.FAILED, stack_state), K.PROVISION)
    assert "run deploy again first" in err.value.message
    lifecycle.check_applicable(instance(S.FAILED, stack_state), K.DEPLOY)


# --- OCCI Link headers: the actions that apply now ---------------------------------------------------


@pytest.mark.parametrize(
    "state, stack_state, actions",
    [
        (S.INITIALISED, "INIT_COMPLETE", ["deploy"]),
        (S.DEPLOYED, "CREATE_COMPLETE", ["provision"]),
        (S.ACTIVE, "UPDATE_COMPLETE", ["provision"]),
        (S.FAILED, "CREATE_FAILED", ["deploy"]),  # deploy failed: deploy again
        (S.FAILED, "INIT_COMPLETE", ["deploy"]),
        (S.FAILED, "UPDATE_FAILED", ["provision"]),  # units exist: provision again
        (S.DISPOSED, "DELETE_COMPLETE", []),
        (S.DEPLOYING, "CREATE_IN_PROGRESS", []),
        (S.PROVISIONING, "CREATE_COMPLETE", []),
        (S.DISPOSING, "DELETE_IN_PROGRESS", []),
    ],
)
def test_applicable_actions(state, stack_state, actions):
    assert lifecycle.applicable_actions(instance(state, stack_state)) == actions


def test_no_action_applies_while_an_operation_is_current():
    assert lifecycle.applicable_actions(instance(S.INITIALISED, current_operation_id="op-1")) == []
    assert lifecycle.applicable_actions(instance(S.DEPLOYED, "CREATE_COMPLETE", current_operation_id="op-1")) == []


def test_every_applicable_action_is_accepted():
    for state in S:
        for stack_state in ("INIT_COMPLETE", "CREATE_FAILED", "CREATE_COMPLETE", "UPDATE_COMPLETE"):
            inst = instance(state, stack_state)
            for action in lifecycle.applicable_actions(inst):
                lifecycle.check_applicable(inst, K(action))


# --- states after an operation and Heat's words ------------------------------------------------------


def test_state_after_each_operation():
    deployed = instance(S.DEPLOYING, "CREATE_IN_PROGRESS")
    assert lifecycle.state_after(deployed, K.DEPLOY, True) == S.DEPLOYED
    assert lifecycle.state_after(instance(S.PROVISIONING, "CREATE_COMPLETE"), K.PROVISION, True) == S.ACTIVE
    assert lifecycle.state_after(instance(S.DISPOSING, "DELETE_IN_PROGRESS"), K.DISPOSE, False) == S.DISPOSED
    assert lifecycle.state_after(instance(S.SCALING, "CREATE_COMPLETE"), K.SCALE, True) == S.DEPLOYED
    assert lifecycle.state_after(instance(S.UPDATING, "CREATE_COMPLETE", provisioned=True), K.UPDATE, True) == S.ACTIVE
    # an update of an instance never deployed leaves it initialised
    assert lifecycle.state_after(instance(S.UPDATING, "INIT_COMPLETE"), K.UPDATE, False) == S.INITIALISED


@pytest.mark.parametrize(
    "kind, phase, word",
    [
        (K.DEPLOY, "IN_PROGRESS", "CREATE_IN_PROGRESS"),
        (K.DEPLOY, "COMPLETE", "CREATE_COMPLETE"),
        (K.DEPLOY, "FAILED", "CREATE_FAILED"),
        (K.UPDATE, "COMPLETE", "UPDATE_COMPLETE"),
        (K.SCALE, "IN_PROGRESS", "UPDATE_IN_PROGRESS"),
        (K.PROVISION, "FAILED", "UPDATE_FAILED"),
        (K.DISPOSE, "IN_PROGRESS", "DELETE_IN_PROGRESS"),
        (K.DISPOSE, "COMPLETE", "DELETE_COMPLETE"),
    ],
)
def test_stack_state_words(kind, phase, word):
    assert lifecycle.stack_state(kind, phase) == word


def test_a_new_instance_does_not_claim_create_complete():
    # the original SO answered CREATE_COMPLETE before any deploy (a demo hack): we must not
    fresh = instance()
    assert fresh.state == S.INITIALISED
    assert fresh.stack_state == "INIT_COMPLETE"
    assert "CREATE" not in fresh.stack_state
