"""What a profile is once read and checked: pure, frozen types (the loader is apart, in loader.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import InvalidInput
from ..policy import Policy

CREDENTIALS = ("ha1", "encrypted")  # how a profile keeps digest passwords (profile.yaml `credentials`)
PROTOCOLS = ("udp", "tcp")


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str


@dataclass(frozen=True)
class Role:
    name: str
    program: str  # what a driver runs: "kamailio", "dns"
    min: int
    default: int
    max: int
    ports: tuple[Port, ...]
    files: dict[str, str]  # file name in the unit -> template name
    probe: str  # "sip-options" | "dns"
    reload: dict[str, str] = field(default_factory=dict)  # file -> how a change is applied live
    shm_mb: int = 32
    children: int = 2
    routable: bool = False  # in the P-CSCF's dispatcher set
    on_leave: dict[str, Any] = field(default_factory=dict)  # RPC the others of the role get


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    domain: str
    roles: dict[str, Role]
    order: tuple[str, ...]
    entry: str  # the role clients reach (SIP SRV of the domain, readiness)
    templates: dict[str, str]  # template name -> text
    extra_files: dict[str, str]  # other data files of the profile (e.g. subscribers.sql)
    test_subscribers: tuple[str, ...] = ()
    policies: tuple[Policy, ...] = ()  # autoscaling, evaluated by the runtime loop
    auth: tuple[str, ...] = ("digest",)  # how subscribers may authenticate: digest, aka
    # How digest passwords are kept: "ha1" (only MD5(user:realm:password), where the units check
    # digest against HA1) or "encrypted" (recoverable, for units that want the plain password).
    credentials: str = "encrypted"

    def role(self, name: str) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            raise InvalidInput(f"profile {self.name} has no role '{name}' (roles: {', '.join(self.roles)})") from None
