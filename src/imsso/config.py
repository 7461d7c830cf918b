"""Settings from the environment; `imsso serve` flags override them. Defaults serve one machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from .model import InvalidInput


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "imsso"


# Defaults of the openstack driver's instance attributes imsso.os.<name> (IMSSO_OS_<NAME>).
OS_DEFAULTS = {
    "image": "debian-12",
    "flavor": "m1.small",
    "network": "private",
    "cidr": "10.0.0.0/24",
    "key_name": "",
    "floating_network": "",
    "boot_timeout": "900",
    "manager_address": "127.0.0.1",
    "dns_clients": "",
}


@dataclass
class Settings:
    listen: str = "127.0.0.1:8051"
    data_dir: Path = field(default_factory=_default_data_dir)
    database_url: str = ""
    driver: str = "local"
    profile: str = "sip-core"
    keystone_url: str = ""
    address_pool: str = "127.100.0.0/16"
    dns_port: int = 53
    token_ttl: int = 12 * 3600
    workers: int = 4
    runtime_interval: float = 1.0  # seconds between observations of the runtime loop; 0: off
    prometheus_url: str = ""  # the Prometheus the runtime asks, unless an instance names its own
    metrics_hosts: list[str] = field(default_factory=list)  # hosts instances may name for metrics
    zabbix_user: str = "Admin"
    zabbix_password: str = "zabbix"
    keystone_cache: float = 30.0  # seconds a Keystone token validation is trusted
    keystone_refusal_cache: float = 5.0  # seconds a token Keystone refused is refused without asking
    quota_instances: int = 10  # live (not disposed) instances per tenant
    quota_units: int = 50  # units per tenant, the sum of its live instances' sizes
    metrics: str = "auto"  # /metrics: on, off, or auto (on when listening on loopback only)
    docs: bool = True  # the Swagger UI at /v1/docs (/v1/openapi.json is always served)
    max_body: int = 1024 * 1024  # bytes of a request body; more is refused with 413
    secrets_key_file: Path | None = None  # seals subscribers' secrets; <data dir>/secrets.key if unset
    # openstack driver
    os_region: str = ""  # catalog region of the orchestration endpoint (any when empty)
    os_cloud: str = ""  # clouds.yaml account, when tokens are not Keystone's
    heat_environment: str = ""  # environment file sent with every stack create and update
    heat_environment_dir: str = ""  # where environments named by imsso.os.environment live
    os_defaults: dict[str, str] = field(default_factory=dict)  # imsso.os.<name> defaults

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        s = cls()
        s.listen = env.get("IMSSO_LISTEN", s.listen)
        if env.get("IMSSO_DATA_DIR"):
            s.data_dir = Path(env["IMSSO_DATA_DIR"])
        s.database_url = env.get("IMSSO_DATABASE_URL", "")
        s.driver = env.get("IMSSO_DRIVER", s.driver)
        s.profile = env.get("IMSSO_PROFILE", s.profile)
        s.keystone_url = env.get("IMSSO_KEYSTONE_URL") or env.get("DESIGN_URI", "")
        s.address_pool = env.get("IMSSO_ADDRESS_POOL", s.address_pool)
        s.dns_port = int(env.get("IMSSO_DNS_PORT", s.dns_port))
        s.token_ttl = int(env.get("IMSSO_TOKEN_TTL", s.token_ttl))
        s.keystone_cache = float(env.get("IMSSO_KEYSTONE_CACHE", s.keystone_cache))
        s.keystone_refusal_cache = _number(env, "IMSSO_KEYSTONE_REFUSAL_CACHE", s.keystone_refusal_cache, float)
        s.quota_instances = _number(env, "IMSSO_QUOTA_INSTANCES", s.quota_instances, int)
        s.quota_units = _number(env, "IMSSO_QUOTA_UNITS", s.quota_units, int)
        s.metrics = env.get("IMSSO_METRICS", s.metrics).strip().lower()
        s.docs = _switch(env, "IMSSO_DOCS", s.docs)
        s.max_body = int(env.get("IMSSO_MAX_BODY", s.max_body))
        if env.get("IMSSO_SECRETS_KEY_FILE"):
            s.secrets_key_file = Path(env["IMSSO_SECRETS_KEY_FILE"])
        s.runtime_interval = float(env.get("IMSSO_RUNTIME_INTERVAL", s.runtime_interval))
        s.prometheus_url = env.get("IMSSO_PROMETHEUS_URL", "")
        s.metrics_hosts = [h for h in env.get("IMSSO_METRICS_HOSTS", "").replace(",", " ").split() if h]
        s.zabbix_user = env.get("IMSSO_ZABBIX_USER", s.zabbix_user)
        s.zabbix_password = env.get("IMSSO_ZABBIX_PASSWORD", s.zabbix_password)
        s.os_region = env.get("IMSSO_OS_REGION", "")
        s.os_cloud = env.get("IMSSO_OS_CLOUD", "")
        s.heat_environment = env.get("IMSSO_HEAT_ENVIRONMENT", "")
        s.heat_environment_dir = env.get("IMSSO_HEAT_ENVIRONMENT_DIR", "")
        s.os_defaults = {
            **OS_DEFAULTS,
            **{name: env[f"IMSSO_OS_{name.upper()}"] for name in OS_DEFAULTS if env.get(f"IMSSO_OS_{name.upper()}")},
        }
        return s

    def resolved(self) -> Settings:
        """Fill what depends on other settings and check what can be checked before starting."""
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.heat_environment_dir:
            self.heat_environment_dir = str(self.data_dir / "heat-environments")
        if not self.os_defaults:
            self.os_defaults = dict(OS_DEFAULTS)
        self.secrets_key_file = self.key_file.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'imsso.sqlite'}"
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"IMSSO_LISTEN '{self.listen}' must be host:port, e.g. 127.0.0.1:8051")
        self.metrics_enabled()  # refuses a value it does not know
        for name, value in (
            ("IMSSO_QUOTA_INSTANCES", self.quota_instances),
            ("IMSSO_QUOTA_UNITS", self.quota_units),
            ("IMSSO_KEYSTONE_REFUSAL_CACHE", self.keystone_refusal_cache),
        ):
            if value < 0:
                raise InvalidInput(f"{name} must be 0 or more, not {value}")
        pool = ipaddress.ip_network(self.address_pool, strict=False)
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        if not isinstance(pool, ipaddress.IPv4Network) or not pool.subnet_of(loopback) or pool.prefixlen > 16:
            raise InvalidInput(
                f"IMSSO_ADDRESS_POOL '{self.address_pool}' must be a /16 (or larger) "
                "inside 127.0.0.0/8, e.g. 127.100.0.0/16"
            )
        return self

    @property
    def key_file(self) -> Path:
        """The file of the key that seals subscribers' secrets (outside the database)."""
        return self.secrets_key_file or self.data_dir / "secrets.key"

    def metrics_enabled(self) -> bool:
        """/metrics has no token: served on loopback by default, elsewhere only when asked."""
        if self.metrics not in METRICS_CHOICES:
            raise InvalidInput(f"IMSSO_METRICS '{self.metrics}' must be one of {', '.join(METRICS_CHOICES)}")
        if self.metrics == "auto":
            try:
                return ipaddress.ip_address(self.host).is_loopback
            except ValueError:
                return self.host == "localhost"
        return self.metrics == "on"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


METRICS_CHOICES = ("auto", "on", "off")


def _number(env: dict[str, str], name: str, default, kind):
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a {'whole ' if kind is int else ''}number, not '{text}'") from None


def _switch(env: dict[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise InvalidInput(f"{name} must be on or off, not '{text}'")


def private_dir(path: Path) -> Path:
    """Create `path` and the parents it lacks as 0700 from the start; refuse an existing folder that
    others may write to (they could swap the database, the tokens or a unit's config)."""
    path = path.expanduser().absolute()
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another process: checked below like any existing folder
        else:
            os.chmod(folder, 0o700)  # the umask may not take bits away from 0700, but make sure
    mode = path.stat().st_mode
    if mode & 0o022:
        raise InvalidInput(
            f"the data folder {path} is writable by its group or by others (mode "
            f"{mode & 0o777:o}): run `chmod go-w {path}` (0700 is best) or choose another "
            "IMSSO_DATA_DIR"
        )
    return path
