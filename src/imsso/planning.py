"""From an instance, its profile and its units to a Plan: what must run where, with which configs.

Pure: templates come in as text with the profile, paths come from the driver's layout, and the
result is data a driver realises. Rendering here means every driver runs the same configs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypedDict, cast

import jinja2
import jinja2.sandbox

from . import unitkeys
from .model import Instance, Unit
from .profiles import Port, Profile, Role

SIP_PORT = 5060
HTTP_PORT = 5080


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str  # A | SRV | NAPTR
    value: str
    ttl: int = 60
    priority: int = 0  # SRV priority; NAPTR order
    weight: int = 0  # SRV weight; NAPTR preference
    port: int = 0
    service: str = ""  # NAPTR service, e.g. SIP+D2U


@dataclass(frozen=True)
class UnitPlan:
    name: str
    role: str
    index: int
    address: str
    program: str
    probe: str
    ports: tuple[Port, ...]
    files: dict[str, str]  # file name -> rendered content
    reload: dict[str, str] = field(default_factory=dict)
    shm_mb: int = 32
    children: int = 2


@dataclass(frozen=True)
class Plan:
    instance_id: str
    domain: str
    units: tuple[UnitPlan, ...]
    dns_records: tuple[DnsRecord, ...]
    in_routing: tuple[str, ...]  # routable units that take traffic now
    entry: str  # the role clients reach

    def unit(self, name: str) -> UnitPlan:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise KeyError(name)

    def role_units(self, role: str) -> list[UnitPlan]:
        return [u for u in self.units if u.role == role]


@dataclass(frozen=True)
class UnitLayout:
    """Where a unit's things are, as its driver places them: what templates see as paths.

    Every driver's `layout()` returns one. Indexing by field name (`layout["unit_dir"]`) is kept
    for code written against the mapping it replaces."""

    unit_dir: str  # the unit's config files
    subscribers_db: str  # the instance's subscriber table (SQLite), for the S-CSCFs' auth_db
    hss_subscribers: str  # the HSS's subscriber file
    internal_net: str  # the instance's addresses (CIDR): who may send unauthenticated SIP
    manager_address: str  # where the orchestrator calls the units from (management calls)
    dns_port: int = 53

    def context(self) -> LayoutContext:
        return LayoutContext(
            unit_dir=self.unit_dir,
            subscribers_db=self.subscribers_db,
            hss_subscribers=self.hss_subscribers,
            internal_net=self.internal_net,
            manager_address=self.manager_address,
            dns_port=str(self.dns_port),
        )

    def __getitem__(self, key: str) -> str:
        if key not in LayoutContext.__annotations__:
            raise KeyError(key)
        return str(getattr(self, key))


Layout = Callable[[Instance, str], UnitLayout]


@dataclass(frozen=True)
class UnitView:
    """A unit as templates see it."""

    name: str
    role: str
    index: int
    address: str


class LayoutContext(TypedDict):
    """The driver's paths in the template context (UnitLayout, as text)."""

    unit_dir: str
    subscribers_db: str
    hss_subscribers: str
    internal_net: str
    manager_address: str
    dns_port: str


class TemplateContext(LayoutContext):
    """Every name a profile's templates see (the README's "Writing a profile" lists them)."""

    unit: UnitView
    domain: str
    sip_port: int
    http_port: int
    auth_secret: str
    mgmt_bearer_sha256: str  # management (JSON-RPC): the hash of "Bearer <this unit's key>"
    dmq_header: str  # in-instance SIP trust: the sender holds a key, a checker its hash
    dmq_key: str
    dmq_key_sha256: str
    term_header: str
    term_key: str
    term_key_sha256: str
    edge_header: str
    edge_key: str
    edge_key_sha256: str
    shm_mb: int
    children: int
    roles: dict[str, list[UnitView]]  # every unit, by role
    routed: list[UnitView]  # the routable units taking traffic
    peers: list[str]  # addresses of the same role's other units
    zone_json: str


def unit_name(role: str, index: int) -> str:
    return f"{role}-{index}"


def desired_units(
    profile: Profile, sizes: dict[str, int], existing: Iterable[Unit]
) -> tuple[list[Unit], list[Unit], list[tuple[str, int]]]:
    """Existing units to keep, existing units beyond the sizes, and (role, index) of units to add.

    The lowest indexes stay: scale-in removes the newest units first."""
    existing = list(existing)
    keep: list[Unit] = []
    extra: list[Unit] = []
    new: list[tuple[str, int]] = []
    for role in profile.order:
        want = sizes.get(role, profile.role(role).default)
        mine = sorted((u for u in existing if u.role == role), key=lambda u: u.index)
        keep += mine[:want]
        extra += mine[want:]
        used = {u.index for u in mine}
        free = (i for i in range(1, want + len(used) + 1) if i not in used)
        new += [(role, next(free)) for _ in range(want - len(mine[:want]))]
    return keep, extra, new


@dataclass
class Reservation:
    """Units for sizes: what stays, with new units and their addresses, and what goes."""

    keep: list[Unit]  # existing units kept and the new ones, in the profile's order
    extra: list[Unit]  # existing units beyond the sizes
    added: list[Unit]  # the new ones (also in keep), not stored anywhere yet


def reserve_units(
    profile: Profile,
    instance_id: str,
    sizes: dict[str, int],
    existing: Iterable[Unit],
    taken: Iterable[str],
    allocate: Callable[[set[str]], str],
    unit_id: Callable[[], str] = lambda: "",
) -> Reservation:
    """The one unit reservation, of a deploy and of its preview alike: missing units get the
    lowest free indexes and addresses `allocate` picks outside `taken` (and outside each other)."""
    keep, extra, new = desired_units(profile, sizes, existing)
    in_use = set(taken)
    added: list[Unit] = []
    for role, index in new:
        address = allocate(in_use)
        in_use.add(address)
        added.append(
            Unit(
                id=unit_id(),
                instance_id=instance_id,
                name=unit_name(role, index),
                role=role,
                index=index,
                address=address,
            )
        )
    keep = sorted(keep + added, key=lambda u: (profile.order.index(u.role), u.index))
    return Reservation(keep, extra, added)


def build(
    instance: Instance, profile: Profile, units: Iterable[Unit], layout: Layout, in_routing: Iterable[str] | None = None
) -> Plan:
    """Render every unit's files. `in_routing` defaults to every routable unit."""
    ordered, routing, records, env = _inputs(instance, profile, units, in_routing)
    planned = tuple(_unit_plan(env, instance, profile, u, ordered, routing, records, layout) for u in ordered)
    return Plan(instance.id, instance.domain, planned, records, routing, profile.entry)


@dataclass(frozen=True)
class RenderError:
    unit: str
    file: str  # the file in the unit
    template: str
    message: str


def render_errors(instance: Instance, profile: Profile, units: Iterable[Unit], layout: Layout) -> list[RenderError]:
    """Every file `build` could not render, rather than only the first: for checking a profile."""
    ordered, routing, records, env = _inputs(instance, profile, units, None)
    errors = []
    for unit in ordered:
        role = profile.role(unit.role)
        context = _context(instance, unit, role, ordered, routing, records, layout(instance, unit.name))
        for name, template in role.files.items():
            try:
                env.get_template(template).render(**context)
            except Exception as exc:  # whatever a template does wrong is what the check reports
                where = f" (line {exc.lineno})" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
                errors.append(RenderError(unit.name, name, template, f"{type(exc).__name__}{where}: {exc}"))
    return errors


def _inputs(
    instance: Instance, profile: Profile, units: Iterable[Unit], in_routing: Iterable[str] | None
) -> tuple[list[Unit], tuple[str, ...], tuple[DnsRecord, ...], jinja2.Environment]:
    """What every unit's rendering shares: the units in order, those in routing, the DNS records."""
    ordered = sorted(units, key=lambda u: (_order(profile, u.role), u.index))
    routable = [u for u in ordered if profile.role(u.role).routable]
    routing = tuple(u.name for u in routable if in_routing is None or u.name in set(in_routing))
    dns_roles = {r.name for r in profile.roles.values() if r.program == "dns"}
    sip_roles = {r.name for r in profile.roles.values() if any(p.port == SIP_PORT for p in r.ports)}
    records = tuple(dns_records(instance.domain, ordered, profile.entry, dns_roles, sip_roles))
    return ordered, routing, records, _environment(profile)


def dns_records(
    domain: str, units: Iterable[Unit], entry: str, dns_roles: set[str], sip_roles: set[str] | None = None
) -> list[DnsRecord]:
    """A for every unit and its role; for the roles that speak SIP, NAPTR and SRV per role and, at
    the entry role, for the domain (RFC 3263: NAPTR picks the transport, SRV the servers)."""
    units = list(units)
    sip_roles = {u.role for u in units} - dns_roles if sip_roles is None else sip_roles
    records = [DnsRecord(f"{u.name}.{domain}", "A", u.address) for u in units]
    for role in sorted({u.role for u in units}):
        members = [u for u in units if u.role == role]
        records += [DnsRecord(f"{role}.{domain}", "A", u.address) for u in members]
        if role in dns_roles:
            records += [DnsRecord(f"ns.{domain}", "A", u.address) for u in members]
            continue
        if role not in sip_roles:
            continue
        names = [f"{role}.{domain}"] + ([domain] if role == entry else [])
        for preference, (proto, service) in enumerate((("udp", "SIP+D2U"), ("tcp", "SIP+D2T"))):
            records += [
                DnsRecord(
                    name, "NAPTR", f"_sip._{proto}.{name}", priority=10, weight=50 + 10 * preference, service=service
                )
                for name in names
            ]
        for proto in ("udp", "tcp"):
            records += [
                DnsRecord(
                    f"_sip._{proto}.{role}.{domain}", "SRV", f"{u.name}.{domain}", priority=10, weight=10, port=SIP_PORT
                )
                for u in members
            ]
            if role == entry:  # the domain's own SIP service
                records += [
                    DnsRecord(
                        f"_sip._{proto}.{domain}", "SRV", f"{u.name}.{domain}", priority=10, weight=10, port=SIP_PORT
                    )
                    for u in members
                ]
    return records


def _order(profile: Profile, role: str) -> int:
    return profile.order.index(role) if role in profile.order else len(profile.order)


def _environment(profile: Profile) -> jinja2.Environment:
    # Sandboxed: a profile is data, and its templates must not reach Python internals
    # (`__class__`, `__globals__`...) in the orchestrator's process.
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.DictLoader(profile.templates),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _unit_plan(
    env: jinja2.Environment,
    instance: Instance,
    profile: Profile,
    unit: Unit,
    all_units: list[Unit],
    routing: tuple[str, ...],
    records: tuple[DnsRecord, ...],
    layout: Layout,
) -> UnitPlan:
    role = profile.role(unit.role)
    context = _context(instance, unit, role, all_units, routing, records, layout(instance, unit.name))
    files = {name: env.get_template(template).render(**context) for name, template in role.files.items()}
    return UnitPlan(
        name=unit.name,
        role=unit.role,
        index=unit.index,
        address=unit.address,
        program=role.program,
        probe=role.probe,
        ports=role.ports,
        files=files,
        reload=dict(role.reload),
        shm_mb=role.shm_mb,
        children=role.children,
    )


def _context(
    instance: Instance,
    unit: Unit,
    role: Role,
    all_units: list[Unit],
    routing: tuple[str, ...],
    records: tuple[DnsRecord, ...],
    paths: UnitLayout | Mapping[str, str],
) -> TemplateContext:
    def view(u: Unit) -> UnitView:
        return UnitView(name=u.name, role=u.role, index=u.index, address=u.address)

    roles: dict[str, list[UnitView]] = {}
    for u in all_units:
        roles.setdefault(u.role, []).append(view(u))
    # A test's fake driver may still give a plain mapping (perhaps partial): taken as it is.
    layout = paths.context() if isinstance(paths, UnitLayout) else cast(LayoutContext, dict(paths))
    return {
        "unit": view(unit),
        "domain": instance.domain,
        "sip_port": SIP_PORT,
        "http_port": HTTP_PORT,
        "auth_secret": instance.secret,
        # management (JSON-RPC): the config keeps only the hash of "Bearer <this unit's key>"
        "mgmt_bearer_sha256": unitkeys.sha256(unitkeys.bearer(unitkeys.management_key(instance.secret, unit.name))),
        # in-instance SIP trust: the sender holds the key, a checker needs only its hash
        "dmq_header": unitkeys.DMQ_HEADER,
        "dmq_key": unitkeys.dmq_key(instance.secret),
        "dmq_key_sha256": unitkeys.sha256(unitkeys.dmq_key(instance.secret)),
        "term_header": unitkeys.TERM_HEADER,
        "term_key": unitkeys.term_key(instance.secret),
        "term_key_sha256": unitkeys.sha256(unitkeys.term_key(instance.secret)),
        "edge_header": unitkeys.EDGE_HEADER,
        "edge_key": unitkeys.edge_key(instance.secret),
        "edge_key_sha256": unitkeys.sha256(unitkeys.edge_key(instance.secret)),
        "shm_mb": role.shm_mb,
        "children": role.children,
        "roles": roles,  # every unit, by role
        "routed": [view(u) for u in all_units if u.name in routing],  # those taking traffic
        "peers": [u.address for u in all_units if u.role == unit.role and u.name != unit.name],
        "zone_json": json.dumps({"domain": instance.domain, "records": [_zone_record(r) for r in records]}, indent=1),
        **layout,
    }


def _zone_record(record: DnsRecord) -> dict:
    """A record as the DNS unit's zone file has it (NAPTR with its own field names)."""
    fields = {k: v for k, v in record.__dict__.items() if k != "service"}
    if record.type == "NAPTR":
        fields.update(
            order=record.priority,
            preference=record.weight,
            flags="s",
            service=record.service,
            regexp="",
            replacement=record.value,
        )
    return fields
