"""A Heat (HOT) template from a Plan: the same rendered configs the local driver writes, carried to
each server by cloud-init. Pure: no cloud is called here, so `imsso plan` and the tests see exactly
what a deploy would send.

Per unit: a Neutron port with the address the plan chose (configs name their peers before any
server boots), a Nova server whose user data writes the unit's files, starts it as a systemd
service and signals a wait condition once the unit answers its own probe (no agent in the VM),
and for the roles clients reach, a floating IP. Per role: a security group opening each port it
serves to that port's clients only (see `_sources`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from ... import programs
from ...model import Instance, InvalidInput, Subscriber
from ...planning import HTTP_PORT, SIP_PORT, Plan, UnitLayout, UnitPlan
from ...profiles import Profile

HOT_VERSION = "2021-04-16"  # wallaby: kept as a string, YAML would read it as a date
CONFIG_ROOT = "/etc/imsso"
STATE_ROOT = "/var/lib/imsso"
LIB_ROOT = "/usr/local/lib/imsso"
NOTIFY = "__imsso_notify__"  # replaced by Heat with the wait condition's curl command
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Options:
    """Where the servers go: instance attributes `imsso.os.<name>`, else the configured default."""

    image: str
    flavor: str
    network: str
    cidr: str  # the network's subnet: unit addresses are chosen in it, from .10 up
    key_name: str = ""
    floating_network: str = ""
    boot_timeout: int = 900  # seconds a server has to boot, install and answer its probe
    environment: str = ""  # name of a Heat environment file in the environments folder
    manager_address: str = "127.0.0.1"  # who may call the units' JSON-RPC (the orchestrator)
    dns_clients: tuple[str, ...] = ()  # networks besides the subnet that may query the DNS unit


OPTION_NAMES = (
    "image",
    "flavor",
    "network",
    "cidr",
    "key_name",
    "floating_network",
    "boot_timeout",
    "environment",
    "manager_address",
    "dns_clients",
)
MAX_DNS_CLIENTS = 16
ATTRIBUTE_PREFIX = "imsso.os."
CREATE_ONLY = frozenset({"imsso.os.network", "imsso.os.cidr"})  # unit addresses were chosen in them


def options(attributes: dict[str, Any], defaults: dict[str, str]) -> Options:
    """The instance's options, checked; an attribute overrides the configured default."""
    unknown = [
        k for k in attributes if k.startswith(ATTRIBUTE_PREFIX) and k[len(ATTRIBUTE_PREFIX) :] not in OPTION_NAMES
    ]
    if unknown:
        raise InvalidInput(
            f"unknown attribute {unknown[0]}: accepted are " + ", ".join(ATTRIBUTE_PREFIX + n for n in OPTION_NAMES)
        )
    values = {n: str(attributes.get(ATTRIBUTE_PREFIX + n, defaults.get(n, ""))).strip() for n in OPTION_NAMES}
    for name in ("image", "flavor", "network"):
        if not values[name]:
            raise InvalidInput(
                f"{ATTRIBUTE_PREFIX}{name} is not set and has no configured default (IMSSO_OS_{name.upper()})"
            )
    for name in ("image", "flavor", "network", "key_name", "floating_network"):
        if values[name] and not NAME_RE.match(values[name]):
            raise InvalidInput(
                f"{ATTRIBUTE_PREFIX}{name} '{values[name]}' is not a name or id (letters, digits and . _ : / @ -)"
            )
    if values["environment"] and not ENVIRONMENT_RE.match(values["environment"]):
        raise InvalidInput(
            f"{ATTRIBUTE_PREFIX}environment '{values['environment']}' must name a file of "
            "the environments folder (IMSSO_HEAT_ENVIRONMENT_DIR), without .yaml"
        )
    try:
        net = ipaddress.IPv4Network(values["cidr"])
    except ValueError:
        raise InvalidInput(
            f"{ATTRIBUTE_PREFIX}cidr '{values['cidr']}' is not an IPv4 network such as 10.0.0.0/24"
        ) from None
    if net.num_addresses < 16:
        raise InvalidInput(f"{ATTRIBUTE_PREFIX}cidr {net} is too small: give a /28 or larger")
    manager = values["manager_address"] or "127.0.0.1"
    try:
        ipaddress.IPv4Address(manager)
    except ValueError:
        raise InvalidInput(f"{ATTRIBUTE_PREFIX}manager_address '{manager}' is not an IPv4 address") from None
    try:
        boot_timeout = int(values["boot_timeout"] or 900)
    except ValueError:
        raise InvalidInput(
            f"{ATTRIBUTE_PREFIX}boot_timeout must be a number of seconds, not '{values['boot_timeout']}'"
        ) from None
    if not 1 <= boot_timeout <= 7200:
        raise InvalidInput(f"{ATTRIBUTE_PREFIX}boot_timeout must be 1 to 7200 seconds, not {boot_timeout}")
    return Options(
        image=values["image"],
        flavor=values["flavor"],
        network=values["network"],
        cidr=str(net),
        key_name=values["key_name"],
        floating_network=values["floating_network"],
        boot_timeout=boot_timeout,
        environment=values["environment"],
        manager_address=manager,
        dns_clients=_dns_clients(values["dns_clients"]),
    )


def _dns_clients(text: str) -> tuple[str, ...]:
    """`imsso.os.dns_clients`: IPv4 networks, comma separated, e.g. 0.0.0.0/0 for UEs anywhere."""
    found: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            found.append(str(ipaddress.IPv4Network(item)))
        except ValueError:
            raise InvalidInput(
                f"{ATTRIBUTE_PREFIX}dns_clients: '{item}' is not an IPv4 network such as "
                "203.0.113.0/24 (host bits zero) or 0.0.0.0/0; give networks separated "
                "by commas"
            ) from None
    if len(found) > MAX_DNS_CLIENTS:
        raise InvalidInput(f"{ATTRIBUTE_PREFIX}dns_clients names {len(found)} networks: at most {MAX_DNS_CLIENTS}")
    return tuple(sorted(set(found), key=found.index))


# The source of each program of ours that a server runs as one file, by program name; one text
# stands for all of them (a test's placeholder).
Scripts = dict[str, str] | str


def _script(scripts: Scripts, program: str) -> str:
    return scripts if isinstance(scripts, str) else scripts.get(program, "")


def script_sources() -> dict[str, str]:
    """The standalone programs' own module sources, read from this package."""
    import importlib.util

    found = {}
    for program in programs.registry().values():
        spec = importlib.util.find_spec(program.python_module) if program.standalone else None
        if spec is not None and spec.origin:
            with open(spec.origin) as source:
                found[program.name] = source.read()
    return found


def stack_name(instance: Instance) -> str:
    return f"imsso-{instance.name}-{instance.id[:8]}"


def network_label(opts: Options) -> str:
    """The <net> of `mcn.endpoint.<unit>.<net>.<public|private>`."""
    return re.sub(r"[^a-z0-9-]+", "-", opts.network.lower()).strip("-") or "net"


def layout(opts: Options, unit_name: str) -> UnitLayout:
    """Paths inside the server, for the config templates."""
    return UnitLayout(
        unit_dir=f"{CONFIG_ROOT}/{unit_name}",
        subscribers_db=f"{STATE_ROOT}/subscribers.sqlite",
        hss_subscribers=f"{STATE_ROOT}/hss-subscribers.json",
        dns_port=53,
        internal_net=opts.cidr,
        manager_address=opts.manager_address,
    )


def render(
    instance: Instance, profile: Profile, plan: Plan, subscribers: list[Subscriber], opts: Options, scripts: Scripts
) -> dict[str, Any]:
    """The whole template. Deterministic: the same inputs give the same template, so a stack
    update touches only the resources whose inputs changed."""
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    net = network_label(opts)
    resources.update(security_groups(instance, profile, plan, opts))
    for unit in plan.units:
        public = _is_public(profile, unit.role, opts)
        resources.update(_unit_resources(instance, profile, unit, subscribers, opts, public, scripts))
        outputs[f"mcn.endpoint.{unit.name}.{net}.private"] = {
            "description": f"{unit.name} ({unit.role}) on {opts.network}",
            "value": unit.address,
        }
        if public and opts.floating_network:
            outputs[f"mcn.endpoint.{unit.name}.{net}.public"] = {
                "description": f"{unit.name} ({unit.role}) floating IP",
                "value": {"get_attr": [f"{unit.name}-floating-ip", "floating_ip_address"]},
            }
    return {
        "heat_template_version": HOT_VERSION,
        "description": f"imsso instance {instance.name} ({instance.id}): profile {profile.name}, "
        f"domain {instance.domain}",
        "parameters": _parameters(opts),
        "resources": resources,
        "outputs": outputs,
    }


def _parameters(opts: Options) -> dict[str, Any]:
    params: dict[str, Any] = {
        "image": {"type": "string", "default": opts.image, "description": "server image (Debian 12)"},
        "flavor": {"type": "string", "default": opts.flavor},
        "network": {"type": "string", "default": opts.network, "description": f"holds {opts.cidr}"},
    }
    if opts.key_name:
        params["key_name"] = {"type": "string", "default": opts.key_name}
    if opts.floating_network:
        params["floating_network"] = {"type": "string", "default": opts.floating_network}
    return params


def _is_public(profile: Profile, role: str, opts: Options) -> bool:
    """Clients outside the subnet reach the entry role (SIP), and the DNS role if dns_clients says so:
    those get a floating IP. The rest talk only inside."""
    serves_dns = programs.DNS in programs.get(profile.role(role).program).ports
    return role == profile.entry or (serves_dns and bool(opts.dns_clients))


WORLD = "0.0.0.0/0"
DNS_PORT = 53
SSH_PORT = 22


def security_groups(instance: Instance, profile: Profile, plan: Plan, opts: Options) -> dict[str, Any]:
    """One security group per role, opening each port to that port's clients only."""
    return {
        f"{role}-secgroup": _security_group(instance, profile, role, opts)
        for role in sorted({u.role for u in plan.units})
    }


def _manager(opts: Options) -> list[str]:
    """The orchestrator's address as a source; 127.0.0.1 means it is on no server's network: none."""
    return [] if opts.manager_address == "127.0.0.1" else [f"{opts.manager_address}/32"]


def _sources(profile: Profile, role: str, port: int, opts: Options) -> list[str]:
    """Who may reach `port` of `role`: Neutron groups cannot rate-limit, so each port is opened to
    the fewest sources its clients need."""
    program = programs.get(profile.role(role).program)
    if port == HTTP_PORT:
        return _manager(opts)  # Kamailio's management answers the orchestrator only
    if port == SIP_PORT and role == profile.entry:
        return [WORLD]  # the P-CSCF's clients are UEs, anywhere
    if port == DNS_PORT and port == program.ports.get(programs.DNS):
        return [opts.cidr, *(net for net in opts.dns_clients if net != opts.cidr)]
    if port == program.ports.get(programs.STATUS):
        return [opts.cidr, *_manager(opts)]  # the status page: the orchestrator's probe and metrics
    return [opts.cidr]  # SIP between CSCFs, Diameter, anything else: the instance's own units


def _security_group(instance: Instance, profile: Profile, role: str, opts: Options) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [{"protocol": "icmp", "remote_ip_prefix": opts.cidr}]
    for port in profile.role(role).ports:
        rules += [
            {
                "protocol": port.protocol,
                "port_range_min": port.port,
                "port_range_max": port.port,
                "remote_ip_prefix": source,
            }
            for source in _sources(profile, role, port.port, opts)
        ]
    if opts.key_name:  # a key pair is for the operator, from the orchestrator's address
        rules += [
            {"protocol": "tcp", "port_range_min": SSH_PORT, "port_range_max": SSH_PORT, "remote_ip_prefix": source}
            for source in _manager(opts)
        ]
    return {
        "type": "OS::Neutron::SecurityGroup",
        "properties": {
            "name": f"{stack_name(instance)}-{role}",
            "description": f"what {role} units serve, to their clients only",
            "rules": rules,
        },
    }


def _unit_resources(
    instance: Instance,
    profile: Profile,
    unit: UnitPlan,
    subscribers: list[Subscriber],
    opts: Options,
    public: bool,
    scripts: Scripts,
) -> dict[str, Any]:
    name = unit.name
    server: dict[str, Any] = {
        "name": f"{stack_name(instance)}-{name}",
        "image": {"get_param": "image"},
        "flavor": {"get_param": "flavor"},
        "networks": [{"port": {"get_resource": f"{name}-port"}}],
        "metadata": {"imsso_instance": instance.id, "imsso_unit": name, "imsso_role": unit.role},
        "user_data_format": "RAW",
        # A server boots with its configs: new ones mean a new server on the same port and address.
        "user_data_update_policy": "REPLACE",
        "user_data": {
            "str_replace": {
                "template": cloud_config(
                    unit,
                    profile.extra_files.get("subscribers.sql", ""),
                    subscribers,
                    opts,
                    _script(scripts, unit.program),
                ),
                "params": {NOTIFY: {"get_attr": [f"{name}-ready-handle", "curl_cli"]}},
            }
        },
    }
    if opts.key_name:
        server["key_name"] = {"get_param": "key_name"}
    resources: dict[str, Any] = {
        f"{name}-port": {
            "type": "OS::Neutron::Port",
            "properties": {
                "network": {"get_param": "network"},
                "fixed_ips": [{"ip_address": unit.address}],
                "security_groups": [{"get_resource": f"{unit.role}-secgroup"}],
            },
        },
        name: {"type": "OS::Nova::Server", "properties": server},
        f"{name}-ready-handle": {"type": "OS::Heat::WaitConditionHandle"},
        f"{name}-ready": {
            "type": "OS::Heat::WaitCondition",
            "depends_on": name,
            "properties": {"handle": {"get_resource": f"{name}-ready-handle"}, "timeout": opts.boot_timeout},
        },
    }
    if public and opts.floating_network:
        resources[f"{name}-floating-ip"] = {
            "type": "OS::Neutron::FloatingIP",
            "properties": {
                "floating_network": {"get_param": "floating_network"},
                "port_id": {"get_resource": f"{name}-port"},
            },
        }
    return resources


def cloud_config(unit: UnitPlan, schema: str, subscribers: list[Subscriber], opts: Options, script_source: str) -> str:
    """The server's user data: write the unit's files, start it, tell Heat when it answers.

    `script_source` is the program's own module, for a program of ours that runs as one file."""
    paths = layout(opts, unit.name)
    program = _runnable(unit)
    files = [
        {"path": f"{paths['unit_dir']}/{n}", "permissions": "0640", "content": c} for n, c in sorted(unit.files.items())
    ]
    service = f"imsso-{unit.name}"
    files.append({"path": f"/etc/systemd/system/{service}.service", "content": _systemd_unit(unit, program, paths)})
    files.append({"path": f"{LIB_ROOT}/ready.py", "permissions": "0755", "content": READY_PROBE})
    commands: list[str] = []
    if program.stop_package_service:  # the package's own service would hold the unit's ports
        commands.append(f"systemctl disable --now {program.stop_package_service} || true")
    if program.standalone:
        files.append({"path": _script_path(program), "content": script_source})
    if schema and any(paths["subscribers_db"] in text for text in unit.files.values()):
        files.append(
            {
                "path": f"{CONFIG_ROOT}/subscribers.sql",
                "permissions": "0600",
                "content": subscribers_sql(schema, subscribers),
            }
        )
        commands.append(f"mkdir -p {STATE_ROOT} && sqlite3 {paths['subscribers_db']} < {CONFIG_ROOT}/subscribers.sql")
    probe = program.probe(unit.probe).kind
    ok = json.dumps({"status": "SUCCESS", "reason": f"{unit.name} answers its {probe} probe"})
    bad = json.dumps({"status": "FAILURE", "reason": f"{unit.name} did not answer its {probe} probe"})
    commands += [
        f"systemctl daemon-reload && systemctl enable --now {service}",
        (
            f"python3 {LIB_ROOT}/ready.py {probe} {unit.address} 120 && {NOTIFY} --data-binary "
            f"{shlex.quote(ok)} || {NOTIFY} --data-binary {shlex.quote(bad)}"
        ),
    ]
    body = {
        "package_update": True,
        "packages": list(program.packages),
        "write_files": files,
        "runcmd": [["sh", "-c", c] for c in commands],
    }
    return "#cloud-config\n" + yaml.safe_dump(body, sort_keys=False, width=1000)


def _runnable(unit: UnitPlan) -> programs.Program:
    """The unit's program, if a server can run it: a packaged binary, or one file of ours."""
    program = programs.get(unit.program)
    if not (program.system_binary or program.standalone):
        raise InvalidInput(f"the openstack driver cannot run program '{unit.program}' of {unit.name}")
    return program


def _script_path(program: programs.Program) -> str:
    return f"{LIB_ROOT}/{program.name}_server.py"


def _systemd_unit(unit: UnitPlan, program: programs.Program, paths: UnitLayout) -> str:
    run = f"/run/imsso-{unit.name}"
    where = programs.UnitPaths(
        unit_dir=paths["unit_dir"],
        run_dir=run,
        address=unit.address,
        shm_mb=unit.shm_mb,
        dns_port=int(paths["dns_port"]),
        hss_subscribers=paths["hss_subscribers"],
        executable=program.system_binary,
        python=("/usr/bin/python3", _script_path(program)),
        pid_file=False,
    )  # systemd holds the pid
    start = " ".join(program.argv(where))
    return (
        f"[Unit]\nDescription=imsso {unit.role} {unit.name}\nAfter=network-online.target\n\n"
        f"[Service]\nExecStart={start}\nRuntimeDirectory=imsso-{unit.name}\n"
        "Restart=on-failure\nRestartSec=2\nLimitCORE=0\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def subscribers_sql(schema: str, subscribers: list[Subscriber]) -> str:
    """The profile's subscriber schema and the rows, as SQL for sqlite3."""

    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    lines = [schema.rstrip(), "DELETE FROM subscriber;"]
    # Where the profile keeps HA1 only, password is "" and the S-CSCFs read ha1/ha1b.
    lines += [
        f"INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES "
        f"({quote(s.user)}, {quote(s.domain)}, {quote(s.password)}, {quote(s.ha1)}, {quote(s.ha1b)});"
        for s in sorted(subscribers, key=lambda s: (s.user, s.domain))
    ]
    return "\n".join(lines) + "\n"


# Runs inside the server: waits until the unit answers on its address, at most `timeout` seconds.
READY_PROBE = """#!/usr/bin/python3
\"\"\"Exit 0 once the unit answers a SIP OPTIONS (sip) or a DNS query (dns) on its address.\"\"\"
import socket, struct, sys, time

kind, address, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "sip":
    port = SIP_PORT
    message = (f"OPTIONS sip:{address}:{port} SIP/2.0\\r\\nVia: SIP/2.0/UDP {address}:5999;branch=z9hG4bK-r\\r\\n"
               f"From: <sip:ready@{address}>;tag=1\\r\\nTo: <sip:{address}>\\r\\nCall-ID: ready-{time.time()}\\r\\n"
               "CSeq: 1 OPTIONS\\r\\nMax-Forwards: 2\\r\\nContent-Length: 0\\r\\n\\r\\n").encode()
else:
    port = 53
    message = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\\x02ns\\x00\\x00\\x01\\x00\\x01"
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.sendto(message, (address, port))
            sock.recvfrom(4096)
            sys.exit(0)
        except OSError:
            time.sleep(1.0)
sys.exit(1)
""".replace("SIP_PORT", str(SIP_PORT))
