"""Profiles are data: a folder per IMS variant with profile.yaml and its config templates.

This module reads them from the package (or from IMSSO_PROFILES_DIR) into pure types.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model import InvalidInput, NotFound
from ..policy import Policy, parse

BUILTIN_DIR = Path(__file__).parent
# A profile name is a folder name and nothing more: no separators, no dots in front, no "..".
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CREDENTIALS = ("ha1", "encrypted")  # how a profile keeps digest passwords (profile.yaml `credentials`)


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str


@dataclass(frozen=True)
class Role:
    name: str
    program: str                   # what a driver runs: "kamailio", "dns"
    min: int
    default: int
    max: int
    ports: tuple[Port, ...]
    files: dict[str, str]          # file name in the unit -> template name
    probe: str                     # "sip-options" | "dns"
    reload: dict[str, str] = field(default_factory=dict)  # file -> how a change is applied live
    shm_mb: int = 32
    children: int = 2
    routable: bool = False         # in the P-CSCF's dispatcher set
    on_leave: dict[str, Any] = field(default_factory=dict)  # RPC the others of the role get


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    domain: str
    roles: dict[str, Role]
    order: tuple[str, ...]
    entry: str                     # the role clients reach (SIP SRV of the domain, readiness)
    templates: dict[str, str]      # template name -> text
    extra_files: dict[str, str]    # other data files of the profile (e.g. subscribers.sql)
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
            raise InvalidInput(
                f"profile {self.name} has no role '{name}' (roles: {', '.join(self.roles)})") from None


def profiles_dirs() -> list[Path]:
    extra = os.environ.get("IMSSO_PROFILES_DIR")
    return ([Path(extra)] if extra else []) + [BUILTIN_DIR]


def available() -> list[str]:
    names: set[str] = set()
    for base in profiles_dirs():
        names.update(p.parent.name for p in base.glob("*/profile.yaml") if NAME_RE.match(p.parent.name))
    return sorted(names)


def load(name: str) -> Profile:
    """The profile, read once per process: an edited profile takes effect at the next start.

    The name often comes from a tenant (JSON `profile`, OCCI `imsso.profile`): it is checked
    against a strict pattern (a plain folder name) before any path is built from it."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 64 else "(not shown)"
        raise NotFound(f"unknown profile '{shown}' (available: {', '.join(available())})")
    return _load(name, tuple(profiles_dirs()))


@functools.lru_cache(maxsize=64)
def _load(name: str, dirs: tuple[Path, ...]) -> Profile:
    for base in dirs:
        folder = base / name
        if (folder / "profile.yaml").is_file():
            return _read(folder)
    raise NotFound(f"unknown profile '{name}' (available: {', '.join(available())})")


def _read(folder: Path) -> Profile:
    raw = yaml.safe_load((folder / "profile.yaml").read_text())
    roles = {name: _role(name, spec) for name, spec in raw["roles"].items()}
    templates = {p.name: p.read_text() for p in (folder / "templates").glob("*") if p.is_file()}
    extra = {p.name: p.read_text() for p in folder.glob("*") if p.is_file() and p.name != "profile.yaml"}
    missing = sorted({t for r in roles.values() for t in r.files.values()} - set(templates))
    if missing:
        raise InvalidInput(f"profile {raw['name']} names templates it lacks: {', '.join(missing)}")
    return Profile(
        name=raw["name"], description=raw.get("description", ""), domain=raw["domain"],
        roles=roles, order=tuple(raw.get("order", list(roles))), entry=raw["entry"], templates=templates,
        extra_files=extra, test_subscribers=tuple(raw.get("test_subscribers", ())),
        policies=tuple(parse(p, roles) for p in raw.get("policies", ())),
        auth=tuple(raw.get("auth", ("digest",))), credentials=_credentials(raw))


def _credentials(raw: dict[str, Any]) -> str:
    value = raw.get("credentials", "encrypted")
    if value not in CREDENTIALS:
        raise InvalidInput(f"profile {raw['name']}: credentials '{value}' is not one of "
                           f"{', '.join(CREDENTIALS)} (ha1: the units check digest against "
                           "MD5(user:realm:password); encrypted: they need the password itself)")
    return value


def _role(name: str, spec: dict[str, Any]) -> Role:
    sizes = spec["sizes"]
    return Role(
        name=name, program=spec["program"], min=sizes["min"], default=sizes["default"],
        max=sizes["max"], ports=tuple(Port(**p) for p in spec.get("ports", ())),
        files=dict(spec.get("files", {})), probe=spec["probe"], reload=dict(spec.get("reload", {})),
        shm_mb=spec.get("shm_mb", 32), children=spec.get("children", 2),
        routable=spec.get("routable", False), on_leave=dict(spec.get("on_leave", {})))
