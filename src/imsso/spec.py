"""What a client may set on an instance, checked against its profile. Pure.

Attributes arrive from OCCI (`X-OCCI-Attribute`) or JSON alike; this is the one place that says which
names are accepted, which are outputs, and which bounds apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .model import InvalidInput
from .profiles import Profile

SIZE_PREFIX = "imsso.size."
# Shown by the orchestrator, never set by a client.
OUTPUT_NAMES = {
    "occi.core.id",
    "occi.mcn.stack.id",
    "occi.mcn.stack.state",
    "mcn.service.state",
    "imsso.operation",
    "imsso.operation.state",
    "imsso.error",
}
OUTPUT_PREFIXES = ("imsso.unit.", "imsso.event", "imsso.decision.")
CREATE_ONLY = {"imsso.profile", "imsso.driver", "imsso.domain"}
SETTINGS = {"imsso.test_subscribers"}
FREE_PREFIXES = ("mcn.", "occi.core.title", "occi.core.summary")
RUNTIME_PREFIXES = ("imsso.policy.", "imsso.scale.")  # policy figures and bounds, checked by policy
DOMAIN_RE = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
ENDPOINT_RE = re.compile(r"^mcn\.endpoint\.[a-z0-9-]+\.[a-z0-9-]+\.(public|private)$")

# OCCI's attribute-name grammar (GFD.185), checked whole: dot-separated lowercase components.
ATTRIBUTE_NAME_RE = re.compile(
    r"^(?=.{1,255}\Z)[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*\Z"
)  # \Z: "$" lets "\n" end a name
MAX_VALUE = 8 * 1024  # characters of one attribute value, as the OCCI parser bounds it
# Controls but tab, and the Unicode line breaks: a value holding one could end a rendered line.
CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")

ACCEPTED = (
    "inputs under mcn. (e.g. mcn.endpoint.maas), imsso.size.<role>, imsso.test_subscribers, "
    "imsso.os.<option> (driver openstack), imsso.policy.<policy>.<field>, "
    "imsso.scale.<role>.min|max, and at creation imsso.profile, imsso.driver, "
    "imsso.domain"
)


@dataclass
class Changes:
    """A client's request, split by what it changes."""

    sizes: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    create_only: dict[str, str] = field(default_factory=dict)
    test_subscribers: bool | None = None

    def empty(self) -> bool:
        return not (self.sizes or self.attributes or self.create_only or self.test_subscribers is not None)


# Who owns each attribute namespace: what split does with a name, and who checks its value.
OUTPUT, SIZE, CREATE, SETTING, FREE, DRIVER, POLICY = (
    "output",
    "size",
    "create",
    "setting",
    "free",
    "driver",
    "policy",
)
NAMES: dict[str, str] = {
    **dict.fromkeys(OUTPUT_NAMES, OUTPUT),
    **dict.fromkeys(CREATE_ONLY, CREATE),
    **dict.fromkeys(SETTINGS, SETTING),
}
PREFIXES: dict[str, str] = {
    **dict.fromkeys(OUTPUT_PREFIXES, OUTPUT),
    SIZE_PREFIX: SIZE,
    **dict.fromkeys(FREE_PREFIXES, FREE),
    **dict.fromkeys(RUNTIME_PREFIXES, POLICY),
}


def owner(name: str, driver_prefixes: tuple[str, ...] = ()) -> str | None:
    """The namespace a name belongs to (None: unknown): exact names first, then the longest prefix.
    `driver_prefixes` are the option prefixes of the known drivers (each driver checks its own
    options: their names are the drivers' to say, not this table's)."""
    if name in NAMES:
        return NAMES[name]
    if ENDPOINT_RE.match(name):
        return OUTPUT
    prefixes = {**PREFIXES, **dict.fromkeys(driver_prefixes, DRIVER)}
    matching = [p for p in prefixes if name.startswith(p)]
    return prefixes[max(matching, key=len)] if matching else None


def split(attributes: dict[str, Any], driver_prefixes: tuple[str, ...] = ()) -> Changes:
    """Sort attributes into changes; refuse outputs and unknown names with what is accepted.
    Values of driver and policy names are checked by their owners (the driver, policy.py)."""
    changes = Changes()
    for name, value in attributes.items():
        check_attribute(name, value)
        namespace = owner(name, driver_prefixes)
        if namespace == OUTPUT:
            raise InvalidInput(
                f"attribute {name} is set by the orchestrator and cannot be changed", {"attribute": name}
            )
        if namespace == SIZE:
            changes.sizes[name[len(SIZE_PREFIX) :]] = _as_int(name, value)
        elif namespace == CREATE:
            changes.create_only[name] = _as_str(name, value)
        elif namespace == SETTING:
            changes.test_subscribers = _as_bool(name, value)
        elif namespace in (FREE, DRIVER, POLICY):
            changes.attributes[name] = value
        else:
            raise InvalidInput(f"unknown attribute {name}: accepted are {ACCEPTED}", {"attribute": name})
    return changes


def check_attribute(name: Any, value: Any) -> None:
    """Any face's attribute: a whole OCCI name and a bounded scalar of printable text."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME_RE.match(name):
        shown = repr(name)[:80]
        raise InvalidInput(
            f"attribute name {shown} is not an OCCI attribute name: dot-separated parts "
            "of lowercase letters, digits, '_' and '-', each starting with a letter, "
            "at most 255 characters (e.g. mcn.endpoint.maas)",
            {"attribute": shown},
        )
    if value is None or isinstance(value, (dict, list, tuple)):
        raise InvalidInput(f"attribute {name} must be a string, a number or true/false", {"attribute": name})
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"attribute {name} is longer than {MAX_VALUE} characters", {"attribute": name})
        if CONTROL_RE.search(value):
            raise InvalidInput(
                f"attribute {name} holds a control character: values are printable text", {"attribute": name}
            )


def check_sizes(profile: Profile, sizes: dict[str, int]) -> None:
    for role_name, count in sizes.items():
        role = profile.role(role_name)
        if not role.min <= count <= role.max:
            raise InvalidInput(
                f"size of {role_name} must be between {role.min} and {role.max} in profile {profile.name}, not {count}",
                {"role": role_name, "min": role.min, "max": role.max, "given": count},
            )


def default_sizes(profile: Profile) -> dict[str, int]:
    return {name: role.default for name, role in profile.roles.items()}


def check_domain(domain: str) -> str:
    domain = domain.strip().lower()
    if not DOMAIN_RE.match(domain):
        raise InvalidInput(f"imsso.domain '{domain}' is not a DNS domain name (e.g. ims.example.org)")
    return domain


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}")
    try:
        number = int(str(value), 10)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {value!r}") from None
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise InvalidInput(f"{name} must be true or false, not {value!r}")


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string, not {value!r}")
    return value
