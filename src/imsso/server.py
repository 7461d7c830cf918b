"""Assembles the orchestrator from its settings: store, drivers, engine, auth, service, web app."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path

import uvicorn

from . import drivers, profiles, programs
from .auth import LocalTokens, Validator
from .auth.keystone import KeystoneValidator
from .config import Settings, private_dir
from .engine import Engine
from .engine.observer import Observer
from .engine.runtime import Runtime
from .model import Instance, InvalidInput, Unit
from .monitoring import AllowedHosts
from .monitoring.hss import HssStatus
from .monitoring.kamailio import KamailioStats
from .monitoring.process import ProcessUsage
from .monitoring.prometheus import URL_ATTRIBUTE, PrometheusSource
from .monitoring.zabbix import ENDPOINT_ATTRIBUTE, ZabbixSource, api_url
from .service import Service
from .store import Store
from .telemetry import Telemetry
from .vault import Vault

log = logging.getLogger("imsso")


class Orchestrator:
    def __init__(self, settings: Settings):
        self.settings = settings.resolved()
        private_dir(settings.data_dir)
        self._lock = _lock_data_dir(settings.data_dir)
        self.store = Store(settings.database_url, Vault(settings.key_file))
        self.store.migrate()
        self.local_tokens: LocalTokens | None = None
        keystone: KeystoneValidator | None = None
        validator: Validator
        if settings.keystone_url:
            validator = keystone = KeystoneValidator(
                settings.keystone_url, settings.keystone_cache, refusal_seconds=settings.keystone_refusal_cache
            )
        else:
            self.local_tokens = validator = LocalTokens(
                self.store, settings.data_dir / "admin.token", settings.token_ttl
            )
            self.local_tokens.admin_token()  # create it now, so `imsso token issue` finds it
        # Every registered driver is there for every instance; the instance names its own.
        self.drivers = drivers.build_all(
            drivers.DriverContext(settings, keystone.catalog if keystone else None, keystone.url if keystone else "")
        )
        if settings.driver not in self.drivers:
            raise InvalidInput(
                f"IMSSO_DRIVER '{settings.driver}' is not available (available: {', '.join(self.drivers)})"
            )
        self.telemetry = Telemetry(self.store)
        # One registry of profiles for everything here. It is the one the module-level
        # `profiles.load` also serves, so the callers not yet handed it share its cache.
        self.profiles = profiles.default_registry()
        self.engine = Engine(self.store, self.drivers, settings, self.telemetry, profiles=self.profiles)
        self.observer = Observer(self.store, self.drivers)
        self.runtime = Runtime(
            self.store,
            self.engine.request,
            self._sources(),
            self._answers,
            settings.runtime_interval or 1.0,
            self.telemetry.decision,
            alive=self._alive,
            profiles=self.profiles,
        )
        self.service = Service(
            self.store,
            self.engine,
            self.drivers,
            settings,
            validator,
            on_token=self._remember_token if keystone else None,
            figures=self.runtime.latest,
            profiles=self.profiles,
        )

    def _remember_token(self, tenant: str, token: str) -> None:
        for driver in self.drivers.values():
            driver.remember_token(tenant, token)

    def _sources(self) -> list:
        def program(instance: Instance, unit: Unit) -> programs.Program:
            return programs.get(self.profiles.load(instance.profile).role(unit.role).program)

        def driver(instance: Instance) -> drivers.BaseDriver:
            return self.drivers[instance.driver]

        hosts = self.settings.metrics_hosts
        prometheus = PrometheusSource(self.settings.prometheus_url)
        zabbix = ZabbixSource(self.settings.zabbix_user, self.settings.zabbix_password)
        # Kamailio last: its own figures win over the same names from a Prometheus.
        return [
            AllowedHosts(prometheus, URL_ATTRIBUTE, hosts, _as_url),
            AllowedHosts(zabbix, ENDPOINT_ATTRIBUTE, hosts, api_url),
            ProcessUsage(self._alive),
            HssStatus(program),
            KamailioStats(driver, program),
        ]

    def _alive(self, instance, unit) -> bool:
        return self.drivers[instance.driver].is_alive(instance, unit)

    def _answers(self, instance, unit) -> bool:
        probe = self.profiles.load(instance.profile).role(unit.role).probe
        return self.drivers[instance.driver].answers(instance, unit, probe)

    def start(self) -> None:
        self.engine.start()
        self.observer.start()
        if self.settings.runtime_interval > 0:
            self.runtime.start()
        pid_file(self.settings).write_text(f"{os.getpid()}\n")

    def stop(self) -> None:
        # Here, not after uvicorn.run: uvicorn re-raises SIGTERM once shut down, ending the process.
        path = pid_file(self.settings)
        if path.exists() and path.read_text().strip() == str(os.getpid()):
            path.unlink()
        self.runtime.stop()
        self.observer.stop()
        self.engine.stop()
        self.store.close()


def _as_url(value: object) -> str:
    text = str(value).strip()
    return text if "://" in text else f"http://{text}"


def _lock_data_dir(data_dir: Path):
    """One orchestrator per data folder: two would run the same operations twice."""
    handle = open(data_dir / "imsso.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InvalidInput(
            f"another imsso serve uses the data folder {data_dir}: stop it first, "
            "or give this one another IMSSO_DATA_DIR"
        ) from None
    return handle


def _check_listen(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            raise InvalidInput(
                f"cannot listen on {settings.listen}: {exc.strerror} (is another imsso "
                "running? set IMSSO_LISTEN or --listen to another address)"
            ) from None


def pid_file(settings: Settings) -> Path:
    return settings.data_dir / "imsso.pid"


def serve(settings: Settings) -> None:
    from .api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # the data folder holds tokens' digests, subscriber passwords, unit secrets
    _check_listen(settings.resolved())
    if not ipaddress.ip_address(socket.gethostbyname(settings.host)).is_loopback:
        log.warning("listening on %s: tokens travel in clear over HTTP; put a TLS proxy in front", settings.listen)
    orchestrator = Orchestrator(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per unit RPC is noise
    uvicorn.run(create_app(orchestrator), host=settings.host, port=settings.port, log_level="info", access_log=False)
