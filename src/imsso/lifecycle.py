"""Which operation applies in which state, and what a state looks like in Heat's words.

Pure rules, shared by the service layer (to refuse early) and the engine (to move states).
"""

from __future__ import annotations

from .model import Instance, InstanceState, NotApplicable, OperationKind
from .operations_table import TABLE, USER_ACTIONS

S = InstanceState
K = OperationKind

# Views of the operation table (operations_table.TABLE), under the names the rules below use.
ALLOWED_FROM: dict[OperationKind, frozenset[InstanceState]] = {k: r.applies_from for k, r in TABLE.items()}
RUNNING_STATE: dict[OperationKind, InstanceState] = {k: r.running for k, r in TABLE.items()}
STACK_ACTION: dict[OperationKind, str] = {k: r.stack_action for k, r in TABLE.items()}


def check_applicable(instance: Instance, kind: OperationKind) -> None:
    """Raise NotApplicable with the reason when `kind` cannot start now."""
    if instance.state in ALLOWED_FROM[kind]:
        if instance.state == S.FAILED and kind == K.PROVISION and not _was_deployed(instance):
            raise NotApplicable(
                f"provision needs a deployed instance; '{instance.name}' failed before its deploy "
                "finished: run deploy again first"
            )
        if instance.state == S.FAILED and kind == K.DEPLOY and _was_deployed(instance):
            raise NotApplicable(
                f"'{instance.name}' was deployed before it failed: retry with provision, an update "
                "or a scale, or dispose of it"
            )
        return
    hint = {
        S.INITIALISED: "deploy it first",
        S.DISPOSED: "it has been disposed",
        S.ACTIVE: "it is already deployed and provisioned",
        S.DEPLOYED: "it is already deployed",
    }.get(instance.state, "wait for the running operation to finish")
    accepted = ", ".join(sorted(s.value for s in ALLOWED_FROM[kind]))
    raise NotApplicable(
        f"{kind.value} does not apply to instance '{instance.name}' in state {instance.state.value}: "
        f"{hint} ({kind.value} applies in: {accepted})",
        {"state": instance.state.value, "operation": kind.value},
    )


def _was_deployed(instance: Instance) -> bool:
    # Only a deploy that never completed leaves these words; any later operation keeps the units.
    return instance.stack_state not in ("INIT_COMPLETE", "CREATE_FAILED", "CREATE_IN_PROGRESS")


def state_after(instance: Instance, kind: OperationKind, has_units: bool) -> InstanceState:
    """Where a successful operation leaves the instance."""
    after = TABLE[kind].after
    if after is not None:
        return after
    if not has_units:
        return S.INITIALISED
    return S.ACTIVE if instance.provisioned else S.DEPLOYED


def stack_state(kind: OperationKind, phase: str) -> str:
    """Heat's status word for an operation phase: IN_PROGRESS, COMPLETE or FAILED."""
    return f"{STACK_ACTION[kind]}_{phase}"


def applicable_actions(instance: Instance) -> list[str]:
    """The OCCI actions (deploy, provision) that apply now: one Link header each."""
    if instance.current_operation_id:
        return []
    return [
        k.value
        for k in map(OperationKind, USER_ACTIONS)
        if instance.state in ALLOWED_FROM[k]
        and not (k == K.PROVISION and not _was_deployed(instance))
        and not (k == K.DEPLOY and instance.state == S.FAILED and _was_deployed(instance))
    ]
