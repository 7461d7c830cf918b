"""Assembles the orchestrator from its settings: store, drivers, engine, auth, service, web app."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path

import uvicorn

from .auth import LocalTokens
from .auth.keystone import KeystoneValidator
from .config import Settings, private_dir
from .drivers.local import LocalDriver
from .drivers.openstack import Credentials, OpenStackDriver
from . import profiles
from .engine import Engine
from .engine.observer import Observer
from .engine.runtime import Runtime
from .monitoring import AllowedHosts
from .monitoring.hss import HssStatus
from .monitoring.kamailio import KamailioStats
from .monitoring.process import ProcessUsage
from .monitoring.prometheus import URL_ATTRIBUTE, PrometheusSource
from .monitoring.zabbix import ENDPOINT_ATTRIBUTE, ZabbixSource, api_url
from .model import InvalidInput
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
        self.store = Store(settings.database_url, Vault(settings.secrets_key_file))
        self.store.migrate()
        self.local_tokens: LocalTokens | None = None
        keystone: KeystoneValidator | None = None
        if settings.keystone_url:
            validator = keystone = KeystoneValidator(settings.keystone_url, settings.keystone_cache,
                                                     refusal_seconds=settings.keystone_refusal_cache)
        else:
            self.local_tokens = validator = LocalTokens(self.store, settings.data_dir / "admin.token",
                                                        settings.token_ttl)
            self.local_tokens.admin_token()  # create it now, so `imsso token issue` finds it
        # Every driver is there for every instance; the instance names its own.
        self.credentials = Credentials(keystone.catalog if keystone else None, settings.os_region,
                                       settings.os_cloud, keystone.url if keystone else "")
        self.drivers = {
            "local": LocalDriver(settings.data_dir, settings.address_pool, settings.dns_port),
            "openstack": OpenStackDriver(self.credentials, settings.os_defaults, settings.heat_environment,
                                         Path(settings.heat_environment_dir)),
        }
        if settings.driver not in self.drivers:
            raise InvalidInput(f"IMSSO_DRIVER '{settings.driver}' is not available "
                               f"(available: {', '.join(self.drivers)})")
        self.telemetry = Telemetry(self.store)
        self.engine = Engine(self.store, self.drivers, settings, self.telemetry)
        self.observer = Observer(self.store, self.drivers)
        self.runtime = Runtime(self.store, self.engine.request, self._sources(), self._answers,
                               settings.runtime_interval or 1.0, self.telemetry.decision,
                               alive=self._alive)
        self.service = Service(self.store, self.engine, self.drivers, settings, validator,
                               on_token=self.credentials.remember if keystone else None,
                               figures=self.runtime.latest)

    def _sources(self) -> list:
        def program(instance, unit) -> str:
            return profiles.load(instance.profile).role(unit.role).program

        def call(instance, unit, method, *params):
            return self.drivers[instance.driver].call(instance, unit, method, *params)

        hosts = self.settings.metrics_hosts
        prometheus = PrometheusSource(self.settings.prometheus_url)
        zabbix = ZabbixSource(self.settings.zabbix_user, self.settings.zabbix_password)
        # Kamailio last: its own figures win over the same names from a Prometheus.
        return [AllowedHosts(prometheus, URL_ATTRIBUTE, hosts, _as_url),
                AllowedHosts(zabbix, ENDPOINT_ATTRIBUTE, hosts, api_url),
                ProcessUsage(self._alive), HssStatus(program), KamailioStats(call, program)]

    def _alive(self, instance, unit) -> bool:
        return self.drivers[instance.driver].is_alive(instance, unit)

    def _answers(self, instance, unit) -> bool:
        probe = profiles.load(instance.profile).role(unit.role).probe
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
        raise InvalidInput(f"another imsso serve uses the data folder {data_dir}: stop it first, "
                           "or give this one another IMSSO_DATA_DIR") from None
    return handle


def _check_listen(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {settings.listen}: {exc.strerror} (is another imsso "
                               "running? set IMSSO_LISTEN or --listen to another address)") from None


def pid_file(settings: Settings) -> Path:
    return settings.data_dir / "imsso.pid"


def serve(settings: Settings) -> None:
    from .api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # the data folder holds tokens' digests, subscriber passwords, unit secrets
    _check_listen(settings.resolved())
    if not ipaddress.ip_address(socket.gethostbyname(settings.host)).is_loopback:
        log.warning("listening on %s: tokens travel in clear over HTTP; put a TLS proxy in front",
                    settings.listen)
    orchestrator = Orchestrator(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per unit RPC is noise
    uvicorn.run(create_app(orchestrator), host=settings.host, port=settings.port, log_level="info",
                access_log=False)
