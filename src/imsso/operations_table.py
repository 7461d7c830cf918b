"""Operation kinds in one table: what lifecycle, the engine, OCCI and the JSON API know of each kind.

Adding a kind is one member of OperationKind, one row here and one handler (a function of
engine/operations.py named by the row). Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model import InstanceState, OperationKind

S = InstanceState
K = OperationKind


@dataclass(frozen=True)
class OperationSpec:
    kind: OperationKind
    running: InstanceState  # the instance's state while the operation runs
    applies_from: frozenset[InstanceState]
    # Where success leaves the instance; None: where its units say (none: initialised, else
    # active when provisioned, deployed when not).
    after: InstanceState | None
    stack_action: str  # Heat's action word, kept in occi.mcn.stack.state
    user_action: bool  # an action of OCCI (?action=) and of the JSON API
    handler: str  # the function of engine/operations.py that runs it
    # When occi.mcn.stack.state takes the stack action's words: "always", "with units" (an
    # operation before any deploy changes only the spec), "never" (it configures what exists).
    stack_change: Literal["always", "with units", "never"] = "always"

    @property
    def name(self) -> str:
        return self.kind.value


# Failed instances accept every operation: operations are level-based, so running one again is the retry.
_ANY_LIVE = frozenset(
    {S.INITIALISED, S.DEPLOYING, S.DEPLOYED, S.PROVISIONING, S.ACTIVE, S.UPDATING, S.SCALING, S.HEALING, S.FAILED}
)
_SETTLED = frozenset({S.INITIALISED, S.DEPLOYED, S.ACTIVE, S.FAILED})

TABLE: dict[OperationKind, OperationSpec] = {
    row.kind: row
    for row in (
        OperationSpec(
            K.DEPLOY,
            S.DEPLOYING,
            frozenset({S.INITIALISED, S.FAILED}),
            S.DEPLOYED,
            "CREATE",
            user_action=True,
            handler="deploy",
        ),
        OperationSpec(
            K.PROVISION,
            S.PROVISIONING,
            frozenset({S.DEPLOYED, S.ACTIVE, S.FAILED}),
            S.ACTIVE,
            "UPDATE",
            user_action=True,
            handler="provision",
            stack_change="never",
        ),
        OperationSpec(
            K.UPDATE,
            S.UPDATING,
            _SETTLED,
            None,
            "UPDATE",
            user_action=False,
            handler="update",
            stack_change="with units",
        ),
        OperationSpec(
            K.SCALE, S.SCALING, _SETTLED, None, "UPDATE", user_action=False, handler="scale", stack_change="with units"
        ),
        OperationSpec(
            K.HEAL,
            S.HEALING,
            frozenset({S.DEPLOYED, S.ACTIVE}),
            None,
            "UPDATE",
            user_action=False,
            handler="heal",
            stack_change="never",
        ),
        OperationSpec(K.DISPOSE, S.DISPOSING, _ANY_LIVE, S.DISPOSED, "DELETE", user_action=False, handler="dispose"),
    )
}

# The user actions in the table's order (deploy before provision, as a client runs them).
USER_ACTIONS: tuple[str, ...] = tuple(row.name for row in TABLE.values() if row.user_action)


def spec_of(kind: OperationKind) -> OperationSpec:
    return TABLE[kind]
