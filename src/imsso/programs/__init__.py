"""Programs a unit can run (kamailio, dns, hss): what each one is, declared in one place.

A Program says how it is started (argv from the unit's paths), which pid file it writes, which
Debian packages a server needs for it, which probes and reload methods a profile's role may name
for it, where its subscribers go, whether it has a management call and what figures it gives.
Drivers, planning, profiles and monitoring read these declarations instead of switching on a
program's name. Adding a program is one module here and one line in `_PROGRAMS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import InvalidInput

# Reload methods every program understands: the file is read at the next start, or on SIGHUP.
AT_START = "at-start"
SIGNAL = "signal"

# What a program's port is for (keys of Program.ports): drivers open and check ports by use.
SIP = "sip"
DNS = "dns"
MANAGEMENT = "management"  # management calls from the orchestrator (Kamailio JSON-RPC)
DIAMETER = "diameter"
STATUS = "status"  # a status page the orchestrator and the instance's units read


@dataclass(frozen=True)
class UnitPaths:
    """Where a unit runs, as its command line needs it: the same for every driver.

    `python` is how a program written in Python is started (interpreter and module or script)."""

    unit_dir: str  # the unit's config files
    run_dir: str  # where it writes its pid file (and Kamailio its runtime files)
    address: str  # the address it listens on
    shm_mb: int = 64  # Kamailio's shared memory
    dns_port: int = 53
    hss_subscribers: str = ""  # the HSS's subscriber file
    executable: str = ""  # the program's own binary, when not found on PATH by its name
    python: tuple[str, ...] = ()  # e.g. (sys.executable, "-m", "imsso.dns.server")
    pid_file: bool = True  # whether a program of ours writes a pid file (systemd needs none)


class SubscriberSink:
    """Where the subscribers of a program's units go: the name a driver writes them by."""

    NONE = ""
    SQL_TABLE = "sql-table"  # the profile's subscribers.sql table (Kamailio S-CSCF auth_db)
    HSS_FILE = "hss-file"  # the HSS's subscriber file, re-read on SIGHUP


class ProbeKind:
    """The wire checks a probe can ask for: what a driver (or a server's ready script) runs."""

    SIP = "sip"  # SIP OPTIONS over UDP, any final answer
    DNS = "dns"  # a DNS query over UDP, any answer
    HTTP = "http"  # GET answering 200


@dataclass(frozen=True)
class Probe:
    """A readiness probe: one name a role may give as `probe:`, and what it asks over the wire.

    `kind` is one of ProbeKind."""

    name: str
    kind: str
    port: int
    path: str = ""  # for http


@dataclass(frozen=True)
class Program:
    name: str
    probe_specs: tuple[Probe, ...]  # the probes a role of this program may name
    reloads: frozenset[str]  # reload methods a role may name for a file
    packages: tuple[str, ...]  # Debian packages a server needs to run it
    pid_file: str  # the file (in its run folder) it writes its pid to
    argv: Callable[[UnitPaths], list[str]]
    ports: dict[str, int] = field(default_factory=dict)  # what it serves, by use ("sip", "status")
    leave_calls: frozenset[str] = frozenset()  # management calls a role may name in `on_leave`
    subscriber_sink: str = SubscriberSink.NONE
    management: bool = False  # answers management calls (a driver's `call`)
    metrics: str = ""  # the name of the metric source that measures it
    module_packages: dict[str, str] = field(default_factory=dict)  # loadable module -> package
    binary: str = ""  # its own binary (a package's), checked before a start
    system_binary: str = ""  # where a server's package installs it
    stop_package_service: str = ""  # the Debian package's own service, to disable on a server
    python_module: str = ""  # a program of ours: the module that runs it
    standalone: bool = False  # that module is one file a server can run alone

    @property
    def probes(self) -> frozenset[str]:
        return frozenset(p.name for p in self.probe_specs)

    def probe(self, name: str) -> Probe:
        for spec in self.probe_specs:
            if spec.name == name:
                return spec
        raise InvalidInput(f"program {self.name} has no probe '{name}': known are " + ", ".join(sorted(self.probes)))

    @property
    def calls(self) -> frozenset[str]:
        """Reload methods that are management calls (the others are signal and at-start)."""
        return self.reloads - {AT_START, SIGNAL}


def probe_owner(probe: str) -> Probe:
    """The probe of that name, whichever program declares it."""
    for program in registry().values():
        for spec in program.probe_specs:
            if spec.name == probe:
                return spec
    raise InvalidInput(
        f"unknown probe '{probe}': known are " + ", ".join(sorted(n for p in registry().values() for n in p.probes))
    )


def _load() -> dict[str, Program]:
    from . import dns, hss, kamailio

    return {p.name: p for p in (kamailio.PROGRAM, dns.PROGRAM, hss.PROGRAM)}


_PROGRAMS: dict[str, Program] = {}


def registry() -> dict[str, Program]:
    """Every known program by name."""
    if not _PROGRAMS:
        _PROGRAMS.update(_load())
    return dict(_PROGRAMS)


def get(name: str) -> Program:
    programs = registry()
    try:
        return programs[name]
    except KeyError:
        raise InvalidInput(f"unknown program '{name}': known are " + ", ".join(sorted(programs))) from None
