"""What the parts of the service share: who calls, the checks of names, and where things are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..config import Settings
from ..drivers import Driver
from ..engine import Engine
from ..profiles import ProfileRegistry, default_registry
from ..store import Store

HEX32_RE = re.compile(r"^[0-9a-fA-F]{32}$")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # \Z: "$" lets a trailing "\n" in
USER_RE = re.compile(r"^[A-Za-z0-9._~+-]{1,64}$")


@dataclass
class Caller:
    tenant: str


@dataclass
class Context:
    """The orchestrator's parts every use case reaches."""

    store: Store
    engine: Engine
    drivers: dict[str, Driver]
    settings: Settings
    profiles: ProfileRegistry = field(default_factory=default_registry)
