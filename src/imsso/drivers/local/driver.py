"""The local driver: Kamailio and DNS units as processes on loopback addresses of this machine.

Folders: <data>/instances/<instance id>/units/<unit>/ holds a unit's configs, pid file and log;
<data>/instances/<instance id>/subscribers.sqlite is the table the S-CSCFs authenticate against.
"""

from __future__ import annotations

import glob
import ipaddress
import itertools
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from ... import programs, unitkeys
from ...model import Instance, InvalidInput, Subscriber, Unit
from ...planning import HTTP_PORT, SIP_PORT, Plan, UnitLayout, UnitPlan
from ...profiles import Profile, Role
from ...programs import ProbeKind, Program, SubscriberSink
from .. import Capabilities, DriverContext, DriverError, UnitDriver
from . import probes, processes, sipcheck
from .kamrpc import KEY_FILE, KamailioRpc, RpcError

PROBE_INTERVAL = 0.01  # a refused probe answers at once (ICMP): polling fast costs little
SUBSCRIBER_COLUMNS = "username, domain, password, ha1, ha1b"  # of the profile's subscribers.sql


class LocalDriver(UnitDriver):
    name = "local"
    capabilities = Capabilities(live_reload=True, heal=True, management=True, probe=True)

    def __init__(self, data_dir: Path, address_pool: str = "127.100.0.0/16", dns_port: int = 53):
        self.data_dir = Path(data_dir)
        self.pool = ipaddress.ip_network(address_pool, strict=False)
        self.dns_port = dns_port

    @classmethod
    def build(cls, context: DriverContext) -> LocalDriver:
        settings = context.settings
        return cls(settings.data_dir, settings.address_pool, settings.dns_port)

    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        """The lowest free host of the instance's /24 (its block) in the pool."""
        block = self._block(instance)
        for host in list(block.hosts())[1:]:  # .1 stays free: it is the block's "gateway" by habit
            if str(host) not in taken:
                return str(host)
        raise DriverError(f"no free address left in {block} for instance {instance.name}")

    # where things live
    def instance_dir(self, instance: Instance) -> Path:
        return self.data_dir / "instances" / instance.id

    def unit_dir(self, instance: Instance, unit_name: str) -> Path:
        return self.instance_dir(instance) / "units" / unit_name

    def _block(self, instance: Instance) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        blocks: Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network] = self.pool.subnets(new_prefix=24)
        return next(itertools.islice(blocks, instance.block, None))

    def layout(self, instance: Instance, unit_name: str) -> UnitLayout:
        return UnitLayout(
            unit_dir=str(self.unit_dir(instance, unit_name)),
            subscribers_db=str(self.instance_dir(instance) / "subscribers.sqlite"),
            hss_subscribers=str(self.instance_dir(instance) / "hss-subscribers.json"),
            dns_port=self.dns_port,
            internal_net=str(self._block(instance)),
            # Linux sends from 127.0.0.1 to any 127.x address: that is us calling the units.
            manager_address="127.0.0.1",
        )

    # checks before starting anything
    def preflight(self, instance: Instance, plan: Plan, new_units: list[str]) -> None:
        for name in sorted({plan.unit(n).program for n in new_units}):
            program = _program(name)
            if program.binary:
                self._check_installed(program, [plan.unit(n) for n in new_units if plan.unit(n).program == name])
        for name in new_units:
            if self._settle(instance, plan.unit(name)) is None:
                self._check_ports(plan.unit(name))

    @staticmethod
    def _check_installed(program: Program, units: list[UnitPlan]) -> None:
        """The program's binary, and the loadable modules its configs name (Kamailio's)."""
        if shutil.which(program.binary) is None:
            raise DriverError(
                f"{program.binary} is not installed: install the Debian packages "
                f"{' '.join(program.packages)} (apt-get install ...)"
            )
        if not program.module_packages:
            return
        module_dirs = glob.glob(f"/usr/lib/*/{program.binary}/modules") + glob.glob(
            f"/usr/lib/{program.binary}/modules"
        )
        available = {Path(p).stem for d in module_dirs for p in glob.glob(f"{d}/*.so")}
        wanted = {
            line.split('"')[1].removesuffix(".so")
            for unit in units
            for text in unit.files.values()
            for line in text.splitlines()
            if line.strip().startswith("loadmodule")
        }
        missing = sorted(wanted - available)
        if missing:
            packages = sorted({program.module_packages.get(m, program.packages[0]) for m in missing})
            raise DriverError(
                f"{program.binary.capitalize()} modules missing: {', '.join(missing)}: "
                f"install the Debian packages {' '.join(packages)}"
            )

    def _check_ports(self, unit: UnitPlan) -> None:
        dns = _program(unit.program).ports.get(programs.DNS)
        for port in unit.ports:
            number = self.dns_port if port.port == dns else port.port
            if not probes.port_free(unit.address, number, port.protocol):
                raise DriverError(
                    f"address {unit.address} port {number}/{port.protocol} for {unit.name} is in use "
                    "by another process: stop it, or set IMSSO_ADDRESS_POOL to another 127.x.0.0/16"
                )

    # units
    def _settle(self, instance: Instance, plan: UnitPlan) -> tuple[int, float | None] | None:
        """The unit's main process if it runs (its pid file names it), else clear what it left.

        A main process that died leaves its children holding the unit's sockets; a main process
        started just before a crash of ours runs without its pid in the store. Both are found
        by the unit folder in their command lines, and told apart by the pid file.
        """
        folder = self.unit_dir(instance, plan.name)
        if not folder.exists():
            return None  # never started: no process can name it (folders are made before a start)
        marker = f"{folder}/"
        pid = _read_pid(folder / _program(plan.program).pid_file)
        if pid and processes.alive(pid, None, marker):
            return pid, processes.start_time(pid)
        try:
            processes.stop(marker, None)
        except processes.ProcessError as exc:
            raise DriverError(f"leftovers of {plan.name} cannot be stopped", str(exc)) from exc
        return None

    def ensure_unit(self, instance: Instance, unit: Unit, plan: UnitPlan) -> Unit:
        folder = self.unit_dir(instance, unit.name)
        if processes.alive(unit.pid, unit.started_at, f"{folder}/"):
            return unit
        found = self._settle(instance, plan)
        if found:
            unit.pid, unit.started_at = found
            unit.detail = "adopted"
            return unit
        _private_dirs(self.data_dir, folder)
        for name, content in plan.files.items():
            _write(folder / name, content)
        if _program(plan.program).management:  # its config holds only the key's hash: this is for us
            _write(folder / KEY_FILE, self._key(instance, unit.name) + "\n")
        unit.pid, unit.started_at = processes.spawn(self._argv(plan, folder), folder, folder / "unit.log")
        unit.detail = "started"
        return unit

    def _argv(self, plan: UnitPlan, folder: Path) -> list[str]:
        program = _program(plan.program)
        if not (program.binary or program.python_module):
            raise DriverError(f"the local driver cannot run program '{plan.program}' of {plan.name}")
        return program.argv(
            programs.UnitPaths(
                unit_dir=str(folder),
                run_dir=str(folder),
                address=plan.address,
                shm_mb=plan.shm_mb,
                dns_port=self.dns_port,
                hss_subscribers=str(self.instance_dir_of(folder) / "hss-subscribers.json"),
                python=(sys.executable, "-m", program.python_module),
            )
        )

    @staticmethod
    def instance_dir_of(unit_folder: Path) -> Path:
        return unit_folder.parent.parent  # <instance>/units/<unit>

    def wait_ready(self, instance: Instance, unit: Unit, plan: UnitPlan, deadline: float) -> None:
        folder = self.unit_dir(instance, unit.name)
        while True:
            if self._probe(instance, plan):
                return
            if not processes.alive(unit.pid, unit.started_at, f"{folder}/"):
                code = processes.exit_code(unit.pid) if unit.pid else None
                raise DriverError(
                    f"{unit.name} exited{f' with status {code}' if code is not None else ''}"
                    " before answering its probe",
                    processes.log_tail(folder / "unit.log"),
                )
            if time.monotonic() > deadline:
                raise DriverError(
                    f"{unit.name} did not answer its {plan.probe} probe at {plan.address} in time",
                    processes.log_tail(folder / "unit.log"),
                )
            time.sleep(PROBE_INTERVAL)

    def _probe(self, instance: Instance, plan: UnitPlan) -> bool:
        return self.answers(instance, plan, plan.probe)

    def answers(self, instance: Instance, unit: Unit | UnitPlan, probe: str) -> bool:
        """Whether the unit answers its probe now (one try, half a second)."""
        try:
            spec = programs.probe_owner(probe)
        except InvalidInput:
            raise DriverError(f"unknown probe '{probe}' for {unit.name}") from None
        if spec.kind == ProbeKind.SIP:
            return probes.sip_options(unit.address, spec.port, timeout=0.5) is not None
        if spec.kind == ProbeKind.DNS:  # the DNS units listen on the driver's port, not the standard one
            return probes.dns_query(unit.address, self.dns_port, f"ns.{instance.domain}", "A", timeout=0.5) is not None
        if spec.kind == ProbeKind.HTTP:
            return probes.http_ok(f"http://{unit.address}:{spec.port}{spec.path}", timeout=0.5)
        raise DriverError(f"probe '{probe}' of {unit.name} needs a {spec.kind} check this driver lacks")

    def changed_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        folder = self.unit_dir(instance, unit.name)
        return sorted(n for n, c in plan.files.items() if _read(folder / n) != c)

    def apply_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        folder = self.unit_dir(instance, unit.name)
        done = []
        for name in self.changed_files(instance, unit, plan):
            if name not in plan.reload:
                raise DriverError(f"{name} of {unit.name} cannot be applied live: restart the unit")
            before = _read(folder / name)
            _write(folder / name, plan.files[name])
            try:
                done.append(self._reload(instance, unit, plan, name))
            except DriverError:
                _write(folder / name, before or "")  # still differs from the plan: a retry applies it
                raise
        return done

    def _reload(self, instance: Instance, unit: Unit, plan: UnitPlan, name: str) -> str:
        how = plan.reload[name]
        if how == "at-start":
            return f"{name} of {unit.name} written (read at its next start)"
        if how == "signal":
            if unit.pid is None or not self.is_alive(instance, unit):  # never signal another's pid
                raise DriverError(f"{unit.name} is not running: cannot reload {name}")
            os.kill(unit.pid, signal.SIGHUP)
            return f"{name} reloaded in {unit.name} (SIGHUP)"
        try:
            self._rpc(instance, plan.name, plan.address).call(how)
        except RpcError as exc:
            raise DriverError(f"could not apply {name} to {unit.name} with {how}", str(exc)) from exc
        return f"{name} applied to {unit.name} by {how}"

    def wait_drained(self, instance: Instance, unit: Unit, deadline: float) -> dict[str, float]:
        """Wait until the unit holds no SIP transaction, so stopping it cuts nothing short."""
        rpc = self._rpc(instance, unit.name, unit.address)
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                stats = rpc.call("tm.stats")
            except RpcError:  # busy, or gone: ask again until the deadline
                if not self.is_alive(instance, unit):
                    return {"transactions": 0.0, "stopped": 1.0}
                seen = {"unanswered": 1.0}
                time.sleep(0.1)
                continue
            # "waiting" transactions are finished ones kept to absorb retransmissions: not in flight.
            current, waiting = float(stats.get("current", 0)), float(stats.get("waiting", 0))
            seen = {"transactions": current - waiting, "waiting": waiting}
            if seen["transactions"] <= 0:
                return seen
            time.sleep(0.1)
        return seen

    def call(self, instance: Instance, unit: Unit, method: str, *params: str) -> object:
        try:
            return self._rpc(instance, unit.name, unit.address).call(method, *params)
        except RpcError as exc:
            raise DriverError(f"{method} on {unit.name} failed", str(exc)) from exc

    @staticmethod
    def _key(instance: Instance, unit_name: str) -> str:
        return unitkeys.management_key(instance.secret, unit_name)

    def _rpc(self, instance: Instance, unit_name: str, address: str) -> KamailioRpc:
        return KamailioRpc(address, HTTP_PORT, key=self._key(instance, unit_name))

    def stop_unit(self, instance: Instance, unit: Unit) -> None:
        folder = self.unit_dir(instance, unit.name)
        try:
            processes.stop(f"{folder}/", unit.pid)
        except processes.ProcessError as exc:
            raise DriverError(f"could not stop {unit.name}", str(exc)) from exc
        shutil.rmtree(folder, ignore_errors=True)

    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        return processes.alive(unit.pid, unit.started_at, f"{self.unit_dir(instance, unit.name)}/")

    # subscribers and service checks
    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        path = self.instance_dir(instance) / "subscribers.sqlite"
        _private_dirs(self.data_dir, path.parent)  # the tables hold passwords
        if not path.exists():  # SQLite gives its -wal and -shm files the database's mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        if _sink_roles(profile, SubscriberSink.HSS_FILE):
            self._sync_hss(instance, profile, subscribers)
        schema = profile.extra_files.get("subscribers.sql")
        if schema is None:
            return
        # Where the profile keeps HA1 only, password is "" and the S-CSCFs read ha1/ha1b.
        wanted = sorted((s.user, s.domain, s.password, s.ha1, s.ha1b) for s in subscribers)
        # Kamailio reads this file at every authentication (WAL: readers never wait for us).
        try:
            with closing(sqlite3.connect(path, timeout=10)) as db, db:
                db.executescript(schema)
                if sorted(db.execute(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscriber")) == wanted:
                    return
                db.execute("DELETE FROM subscriber")
                db.executemany(f"INSERT INTO subscriber ({SUBSCRIBER_COLUMNS}) VALUES (?, ?, ?, ?, ?)", wanted)
        except sqlite3.Error as exc:
            raise DriverError(f"could not write the subscriber table of {instance.name}", str(exc)) from exc

    def _sync_hss(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        """The HSS's subscriber file, then a SIGHUP to the HSS units that run (no restart)."""
        path = self.instance_dir(instance) / "hss-subscribers.json"
        entries = [
            {
                "impi": f"{s.user}@{s.domain}",
                "impus": [s.aor],
                "password": s.password or None,
                "k": s.k or None,
                "opc": s.opc or None,
                "amf": s.amf,
                "sqn": 0,
            }
            for s in subscribers
        ]
        text = json.dumps({"realm": instance.domain, "subscribers": entries}, indent=1) + "\n"
        if _read(path) == text:
            return
        _write(path, text)
        for role in _sink_roles(profile, SubscriberSink.HSS_FILE):
            for folder in self.instance_dir(instance).glob(f"units/{role.name}-*"):
                pid = _read_pid(folder / _program(role.program).pid_file)
                if pid and processes.alive(pid, None, f"{folder}/"):
                    os.kill(pid, signal.SIGHUP)

    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None, deadline: float) -> str:
        entry = plan.role_units(plan.entry)[0]
        last = ""
        while time.monotonic() < deadline:
            result = sipcheck.register(
                entry.address,
                SIP_PORT,
                instance.domain,
                subscriber.user if subscriber else "imsso-probe",
                *_digest_secret(subscriber),
            )
            if result.ok:
                return result.summary
            last = result.summary
            time.sleep(0.2)
        raise DriverError(f"no REGISTER went through the P-CSCF {entry.address}: {last}")

    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        done = []
        for unit in units:
            self.stop_unit(instance, unit)
            done.append(f"stopped {unit.name}")
        folder = self.instance_dir(instance)
        try:
            strays = processes.stop(f"{folder}/", None)
        except processes.ProcessError as exc:
            raise DriverError(f"could not stop every process of {instance.name}", str(exc)) from exc
        if strays:
            done.append(f"stopped {len(strays)} stray process(es) of the instance")
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise DriverError(f"could not remove {folder}")
        done.append("removed the instance folder")
        return done


def _program(name: str) -> Program:
    try:
        return programs.get(name)
    except InvalidInput as exc:
        raise DriverError(f"the local driver cannot run program '{name}'", exc.message) from None


def _sink_roles(profile: Profile, sink: str) -> list[Role]:
    """The roles whose program takes its subscribers through `sink`."""
    return [r for r in profile.roles.values() if _program(r.program).subscriber_sink == sink]


def _digest_secret(sub: Subscriber | None) -> tuple[str | None, str]:
    """(password, HA1) the readiness REGISTER answers its challenge with; (None, "") to stop at
    the challenge (no subscriber, or one without digest credentials)."""
    if sub is None or not (sub.password or sub.ha1):
        return None, ""
    return (sub.password or ""), sub.ha1


def _private_dirs(top: Path, folder: Path) -> None:
    """`folder` and its parents below `top` made (or made again) 0700: configs hold keys."""
    below = [folder, *folder.parents]
    if top not in below:
        raise DriverError(f"{folder} is not inside the data folder {top}")
    top.mkdir(mode=0o700, parents=True, exist_ok=True)  # normally made by the service at its start
    for level in reversed(below[: below.index(top)]):
        level.mkdir(mode=0o700, exist_ok=True)
        level.chmod(0o700)


def _write(path: Path, content: str) -> None:
    """0600 (configs hold keys, subscriber files passwords), replaced whole."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # a leftover from before kept its mode
        out.write(content)
    tmp.replace(path)  # readers never see half a file


def _read_pid(path: Path) -> int | None:
    text = _read(path)
    return int(text.strip()) if text and text.strip().isdigit() else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
