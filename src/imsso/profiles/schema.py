"""The schema of profile.yaml, checked when a profile is loaded. Pure: data in, problems out.

Hand-written rather than pydantic: the messages name the key path and what is accepted in the
profile author's terms (`roles.dns.program: 'bind9' is not a program (known: dns, hss, kamailio)`,
`roles.scscf.routeable: unknown key (did you mean 'routable'?)`), structure and cross-references
(entry, order, templates, the program's probes and reloads) are checked in one pass that collects
every problem, and the data layer does not depend on the web framework's validation library.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping
from typing import Any

from ..model import InvalidInput
from ..policy import Policy, parse
from ..programs import Program
from .types import CREDENTIALS, PROTOCOLS, Port, Profile, Role

PROFILE_KEYS = (
    "name",
    "description",
    "domain",
    "roles",
    "entry",
    "order",
    "test_subscribers",
    "credentials",
    "auth",
    "policies",
)
PROFILE_REQUIRED = ("name", "domain", "roles", "entry")
ROLE_KEYS = ("program", "sizes", "ports", "files", "probe", "reload", "shm_mb", "children", "routable", "on_leave")
ROLE_REQUIRED = ("program", "sizes", "probe")
SIZE_KEYS = ("min", "default", "max")
PORT_KEYS = ("port", "protocol")
ON_LEAVE_KEYS = ("rpc", "params")
POLICY_KEYS = tuple(f.name for f in dataclasses.fields(Policy))
AUTH_METHODS = ("digest", "aka")


class ProfileError(InvalidInput):
    """Every problem of one profile, each as `<file>: <key path>: <what is wrong>`."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = tuple(f"{source}: {p}" for p in problems)
        super().__init__("\n".join(self.problems))


def check(raw: Any, templates: Collection[str], programs: Mapping[str, Program]) -> list[str]:
    """Every problem of a parsed profile.yaml, as `<key path>: <message>`; none when it is valid."""
    problems = _Problems()
    if not isinstance(raw, dict):
        problems.add("", "the file must hold a mapping of keys (name, domain, roles, entry...)")
        return problems.items
    problems.keys("", raw, PROFILE_KEYS, PROFILE_REQUIRED)
    for key in ("name", "domain", "description"):
        if key in raw:
            problems.text(key, raw[key])
    roles: Any = raw.get("roles")
    role_names: list[str] = []
    if "roles" in raw and problems.mapping("roles", roles):
        role_names = [str(name) for name in roles]
        for name, spec in roles.items():
            _check_role(problems, f"roles.{name}", spec, templates, programs)
    if "entry" in raw and problems.text("entry", raw["entry"]):
        problems.choice("entry", raw["entry"], "a role", role_names)
    if "order" in raw:
        _check_order(problems, raw["order"], role_names)
    if "test_subscribers" in raw:
        problems.texts("test_subscribers", raw["test_subscribers"])
    if "credentials" in raw and raw["credentials"] not in CREDENTIALS:
        problems.add(
            "",
            f"credentials '{raw['credentials']}' is not one of {', '.join(CREDENTIALS)} "
            "(ha1: the units check digest against MD5(user:realm:password); "
            "encrypted: they need the password itself)",
        )
    if "auth" in raw and problems.texts("auth", raw["auth"]):
        for i, method in enumerate(raw["auth"]):
            problems.choice(f"auth[{i}]", method, "an authentication method", AUTH_METHODS)
    if "policies" in raw:
        _check_policies(problems, raw["policies"], role_names)
    return problems.items


def build(raw: dict[str, Any], templates: dict[str, str], extra_files: dict[str, str]) -> Profile:
    """The Profile of a profile.yaml that `check` found valid."""
    roles = {name: _role(name, spec) for name, spec in raw["roles"].items()}
    return Profile(
        name=raw["name"],
        description=raw.get("description", ""),
        domain=raw["domain"],
        roles=roles,
        order=tuple(raw.get("order", list(roles))),
        entry=raw["entry"],
        templates=templates,
        extra_files=extra_files,
        test_subscribers=tuple(raw.get("test_subscribers", ())),
        policies=tuple(parse(p, roles) for p in raw.get("policies", ())),
        auth=tuple(raw.get("auth", ("digest",))),
        credentials=raw.get("credentials", "encrypted"),
    )


def _role(name: str, spec: dict[str, Any]) -> Role:
    sizes = spec["sizes"]
    return Role(
        name=name,
        program=spec["program"],
        min=sizes["min"],
        default=sizes["default"],
        max=sizes["max"],
        ports=tuple(Port(**p) for p in spec.get("ports", ())),
        files=dict(spec.get("files", {})),
        probe=spec["probe"],
        reload=dict(spec.get("reload", {})),
        shm_mb=spec.get("shm_mb", 32),
        children=spec.get("children", 2),
        routable=spec.get("routable", False),
        on_leave=dict(spec.get("on_leave", {})),
    )


def _check_role(
    problems: _Problems, path: str, spec: Any, templates: Collection[str], programs: Mapping[str, Program]
) -> None:
    if not problems.mapping(path, spec):
        return
    problems.keys(path, spec, ROLE_KEYS, ROLE_REQUIRED)
    program = None
    if "program" in spec and problems.choice(f"{path}.program", spec["program"], "a program", programs):
        program = programs[spec["program"]]
    if "sizes" in spec:
        _check_sizes(problems, f"{path}.sizes", spec["sizes"])
    if "ports" in spec:
        _check_ports(problems, f"{path}.ports", spec["ports"])
    files = spec.get("files", {})
    if "files" in spec and problems.mapping(f"{path}.files", files):
        for file, template in files.items():
            if problems.plain_name(f"{path}.files", file):
                problems.choice(f"{path}.files.{file}", template, "a template of the profile", templates)
    if "probe" in spec:
        known = program.probes if program else {n for p in programs.values() for n in p.probes}
        problems.choice(f"{path}.probe", spec["probe"], f"a probe of {program.name}" if program else "a probe", known)
    if "reload" in spec and problems.mapping(f"{path}.reload", spec["reload"]):
        known = program.reloads if program else {n for p in programs.values() for n in p.reloads}
        for file, method in spec["reload"].items():
            where = f"{path}.reload.{file}"
            if isinstance(files, dict) and file not in files:
                problems.add(where, f"'{file}' is not a file of the role (files: {', '.join(map(str, files))})")
            problems.choice(
                where, method, f"a reload method of {program.name}" if program else "a reload method", known
            )
    for key in ("shm_mb", "children"):
        if key in spec:
            problems.integer(f"{path}.{key}", spec[key], low=1)
    if "routable" in spec and not isinstance(spec["routable"], bool):
        problems.add(f"{path}.routable", f"{spec['routable']!r} is not true or false")
    if "on_leave" in spec:
        _check_on_leave(problems, f"{path}.on_leave", spec["on_leave"], program)


def _check_sizes(problems: _Problems, path: str, sizes: Any) -> None:
    if not problems.mapping(path, sizes):
        return
    problems.keys(path, sizes, SIZE_KEYS, SIZE_KEYS)
    given = {k: sizes[k] for k in SIZE_KEYS if k in sizes and problems.integer(f"{path}.{k}", sizes[k], low=0)}
    if len(given) == len(SIZE_KEYS) and not given["min"] <= given["default"] <= given["max"]:
        problems.add(path, f"min {given['min']} <= default {given['default']} <= max {given['max']} does not hold")
    elif given.get("max") == 0:
        problems.add(f"{path}.max", "must be at least 1")


def _check_ports(problems: _Problems, path: str, ports: Any) -> None:
    if not isinstance(ports, list):
        problems.add(path, "must be a list of {port, protocol}")
        return
    for i, port in enumerate(ports):
        where = f"{path}[{i}]"
        if not problems.mapping(where, port):
            continue
        problems.keys(where, port, PORT_KEYS, PORT_KEYS)
        if "port" in port:
            problems.integer(f"{where}.port", port["port"], low=1, high=65535)
        if "protocol" in port:
            problems.choice(f"{where}.protocol", port["protocol"], "a protocol", PROTOCOLS)


def _check_on_leave(problems: _Problems, path: str, on_leave: Any, program: Program | None) -> None:
    if not problems.mapping(path, on_leave):
        return
    problems.keys(path, on_leave, ON_LEAVE_KEYS, ("rpc",))
    if "rpc" in on_leave and program is not None:
        problems.choice(f"{path}.rpc", on_leave["rpc"], f"a call of {program.name}", program.leave_calls)
    if "params" in on_leave:
        problems.texts(f"{path}.params", on_leave["params"])


def _check_order(problems: _Problems, order: Any, roles: list[str]) -> None:
    if not problems.texts("order", order):
        return
    for i, role in enumerate(order):
        problems.choice(f"order[{i}]", role, "a role", roles)
    repeated = sorted({r for r in order if order.count(r) > 1})
    if repeated:
        problems.add("order", f"names {', '.join(repeated)} more than once")
    missing = [r for r in roles if r not in order]
    if missing:
        problems.add("order", f"lacks {', '.join(missing)}: a role not in the order gets no units")


def _check_policies(problems: _Problems, policies: Any, roles: list[str]) -> None:
    if not isinstance(policies, list):
        problems.add("policies", "must be a list of policies")
        return
    for i, policy in enumerate(policies):
        where = f"policies[{i}]"
        if not problems.mapping(where, policy):
            continue
        if not problems.keys(where, policy, POLICY_KEYS, ("name", "role", "metric")):
            continue
        try:
            parse(policy, roles)
        except (InvalidInput, TypeError) as exc:
            problems.add(where, str(exc))


class _Problems:
    """The problems found so far; each check says whether its value passed."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def keys(self, path: str, value: dict[Any, Any], accepted: tuple[str, ...], required: tuple[str, ...]) -> bool:
        ok = True
        for key in value:
            if key not in accepted:
                close = difflib.get_close_matches(str(key), accepted, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"accepted: {', '.join(accepted)}"
                self.add(_join(path, key), f"unknown key ({hint})")
                ok = False
        for key in required:
            if key not in value:
                self.add(_join(path, key), "missing (required)")
                ok = False
        return ok

    def mapping(self, path: str, value: Any) -> bool:
        if isinstance(value, dict):
            return True
        self.add(path, f"must be a mapping, not {type(value).__name__}")
        return False

    def text(self, path: str, value: Any) -> bool:
        if isinstance(value, str) and value:
            return True
        self.add(path, f"{value!r} is not a non-empty text")
        return False

    def texts(self, path: str, value: Any) -> bool:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True
        self.add(path, f"{value!r} is not a list of texts")
        return False

    def integer(self, path: str, value: Any, low: int, high: int | None = None) -> bool:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high):
            return True
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        self.add(path, f"{value!r} is not an integer {bound}")
        return False

    def choice(self, path: str, value: Any, what: str, known: Collection[str]) -> bool:
        if isinstance(value, str) and value in known:
            return True
        names = sorted(known)
        close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        self.add(path, f"{value!r} is not {what} (known: {', '.join(names) or 'none'}{hint})")
        return False

    def plain_name(self, path: str, name: Any) -> bool:
        """A file name in a unit's folder: no separators, nothing that climbs out of it."""
        if isinstance(name, str) and name and "/" not in name and "\\" not in name and name not in (".", ".."):
            return True
        self.add(_join(path, name), f"{name!r} is not a plain file name")
        return False


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
