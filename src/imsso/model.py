"""Pure types of the orchestrator: instances, units, operations, events, subscribers.

No I/O here: the store maps these to tables, the faces render them, the engine changes them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InstanceState(StrEnum):
    INITIALISED = "initialised"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    UPDATING = "updating"
    SCALING = "scaling"
    HEALING = "healing"
    DISPOSING = "disposing"
    DISPOSED = "disposed"
    FAILED = "failed"


class OperationKind(StrEnum):
    DEPLOY = "deploy"
    PROVISION = "provision"
    UPDATE = "update"
    SCALE = "scale"
    HEAL = "heal"
    DISPOSE = "dispose"


class OperationState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class UnitState(StrEnum):
    PLANNED = "planned"  # address reserved, nothing started yet
    STARTING = "starting"  # process launched, not yet answering its probe
    RUNNING = "running"  # answers its probe and takes traffic
    DRAINING = "draining"  # out of routing, finishing what it has
    STOPPED = "stopped"
    FAILED = "failed"


class OrchestratorError(Exception):
    """An error a user can act on. `code` picks the HTTP status in the faces."""

    code = "invalid"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(OrchestratorError):
    code = "invalid"


class TemporaryError(OrchestratorError):
    """A failure that may pass if tried again (a refused connection, a cloud API's 5xx): a step
    with retries tries again; anything else (DriverError, a programming error) fails at once."""

    code = "unavailable"

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message, {"cause": cause} if cause else None)
        self.cause = cause


class NotFound(OrchestratorError):
    code = "not_found"


class Conflict(OrchestratorError):
    code = "conflict"


class NotApplicable(OrchestratorError):
    """An action that does not apply in the instance's current state."""

    code = "not_applicable"


class NotApplicableHere(InvalidInput):
    """A valid request that the instance's driver cannot serve (e.g. a plan preview of a local one)."""

    code = "not_applicable"


class Unauthorized(OrchestratorError):
    code = "unauthorized"


class Forbidden(OrchestratorError):
    code = "forbidden"


class Unavailable(OrchestratorError):
    code = "unavailable"


@dataclass
class Instance:
    id: str
    tenant: str
    name: str
    profile: str
    driver: str
    domain: str
    sizes: dict[str, int]
    attributes: dict[str, Any]
    state: InstanceState = InstanceState.INITIALISED
    stack_state: str = "INIT_COMPLETE"
    provisioned: bool = False
    test_subscribers: bool = True
    secret: str = ""  # shared secret of the instance's units (digest nonces)
    block: int = 0  # the instance's address block (local driver: 127.x.<block>.0/24)
    stack_id: str = ""  # the Heat stack that holds the instance, for drivers that make one
    outputs: dict[str, Any] = field(default_factory=dict)  # what the driver reported (endpoints)
    current_operation_id: str | None = None
    failed_operation_id: str | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    updated_at: dt.datetime = field(default_factory=utcnow)


@dataclass
class Unit:
    id: str
    instance_id: str
    name: str
    role: str
    index: int
    address: str
    state: UnitState = UnitState.PLANNED
    pid: int | None = None
    started_at: float | None = None  # process start time, to tell a reused pid apart
    detail: str = ""


@dataclass
class StepRecord:
    name: str
    state: str  # "done" | "failed" | "running"
    started_at: str
    finished_at: str | None = None
    detail: str = ""


@dataclass
class OperationError:
    step: str
    message: str
    cause: str = ""
    location: str = ""  # file:line of the innermost frame, for an unexpected exception


@dataclass
class Operation:
    id: str
    instance_id: str
    kind: OperationKind
    params: dict[str, Any]
    state: OperationState = OperationState.QUEUED
    steps: list[StepRecord] = field(default_factory=list)
    error: OperationError | None = None
    attempts: int = 0
    created_at: dt.datetime = field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


@dataclass
class Event:
    id: int
    instance_id: str
    time: dt.datetime
    kind: str  # "lifecycle" | "step" | "decision" | "failure" | "unit"
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subscriber:
    instance_id: str
    user: str
    domain: str
    # Secrets are left out of repr: a subscriber in a log line or a traceback shows none.
    password: str = field(repr=False)  # SIP Digest; "" for AKA only, or where only HA1 is kept
    k: str = field(default="", repr=False)  # AKA: the USIM's K and the operator's OPc, 32 hex digits each
    opc: str = field(default="", repr=False)
    amf: str = "8000"  # AKA: the authentication management field of its vectors, 4 hex digits
    # SIP Digest where the profile keeps no password: MD5(user:realm:password), and ha1b the same
    # for the username user@domain (the realm is the domain).
    ha1: str = field(default="", repr=False)
    ha1b: str = field(default="", repr=False)
    # What a subscriber read without its secrets authenticates with ("digest", "aka").
    credentials: tuple[str, ...] = ()

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def auth(self) -> list[str]:
        has = {"digest": bool(self.password or self.ha1), "aka": bool(self.k)}
        return [kind for kind in ("digest", "aka") if has[kind] or kind in self.credentials]
