"""Figures from Zabbix, as the original MCN orchestrator read them from its MaaS (Monitoring as a
Service): the client gives the MaaS address in the instance attribute `mcn.endpoint.maas`.

Zabbix's JSON-RPC API: `user.login` (its parameter is "username" since 5.4, "user" before: we try
the new one and fall back), `host.get` to find the units' hosts by name, then one `item.get` per
sample for all of them. The session token goes both in the body's "auth" field (Zabbix up to 6.x)
and in an "Authorization: Bearer" header (6.4 on); 7.2 refuses the field, and then only the header
is sent. A unit's host is named by `host_format` ({instance}, {unit}, {address}, {role},
{instance_id}); a unit without a host or without a recent value is left out.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import httpx

from ..model import Instance, Unit
from . import Figures
from .prometheus import WarnOnce

ENDPOINT_ATTRIBUTE = "mcn.endpoint.maas"

# Zabbix item key -> our metric name
DEFAULT_ITEMS = {
    "system.cpu.util": "zabbix.cpu_util",
    "vm.memory.utilization": "zabbix.memory_util",
    "net.if.in[eth0]": "zabbix.net_in",
}

_LOGIN_FIELDS = ("username", "user")  # Zabbix >= 5.4, then older


class ZabbixError(Exception):
    """An error answered by the API (as opposed to no answer at all)."""

    def __init__(self, code: object, message: str, data: str):
        super().__init__(f"{message} {data}".strip())
        self.code = code
        self.text = f"{message} {data}".lower()

    @property
    def session_lost(self) -> bool:
        return "session terminated" in self.text or "not authori" in self.text  # -ised (old), -ized (new)

    @property
    def invalid_params(self) -> bool:
        return self.code == -32602 or "invalid params" in self.text

    @property
    def names_a_parameter(self) -> bool:
        return "unexpected parameter" in self.text

    @property
    def refuses_auth_field(self) -> bool:
        return 'unexpected parameter "auth"' in self.text  # Zabbix >= 7.2


def api_url(endpoint: object) -> str:
    """The API of a MaaS address: a bare host (or host:port) is MCN's Zabbix frontend at
    /zabbix; a URL is the frontend itself, or the API if it names the .php."""
    text = str(endpoint or "").strip()
    if not text:
        return ""
    if not re.match(r"https?://", text, re.IGNORECASE):
        if "/" not in text:
            if text.count(":") > 1 and not text.startswith("["):
                text = f"[{text}]"  # a bare IPv6 address
            return f"http://{text}/zabbix/api_jsonrpc.php"
        text = "http://" + text
    text = text.rstrip("/")
    return text if text.lower().endswith(".php") else text + "/api_jsonrpc.php"


class ZabbixSource:
    name = "zabbix"

    def __init__(
        self,
        user: str = "Admin",
        password: str = "zabbix",
        host_format: str = "{instance}-{unit}",
        items: dict[str, str] | None = None,
        timeout: float = 2.0,
    ):
        self.user = user
        self.password = password
        self.host_format = host_format
        self.items = dict(DEFAULT_ITEMS if items is None else items)
        self.timeout = timeout
        # What we learnt of each Zabbix (by API URL), kept across samples:
        self._tokens: dict[str, str] = {}
        self._login_fields: dict[str, str] = {}
        self._header_only: set[str] = set()
        self._hostids: dict[str, dict[str, str]] = {}  # host name -> hostid
        self._warnings = WarnOnce()
        # One client for the source's life: a new one per sample costs tens of milliseconds (its
        # TLS context) and loses the connections kept alive to the server.
        self._http = httpx.Client()

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        url = api_url(instance.attributes.get(ENDPOINT_ATTRIBUTE))
        if not url or not units or not self.items:
            return {}
        try:
            hosts = self.hosts(instance, units)
        except Exception as e:  # KeyError, IndexError, AttributeError...: whatever str.format raises
            self._warnings.warn(("host_format",), "Zabbix host format %r is not usable: %r", self.host_format, e)
            return {}
        try:
            figures = self._fetch(_Session(self, self._http, url), hosts)
        except Exception as e:  # a figure source must never break the loop that samples it
            self._warnings.warn((url, _kind(e)), "no figures from Zabbix at %s: %s", url, _describe(e))
            return {}
        for kind in ("unreachable", "api error", "bad answer"):
            self._warnings.forget((url, kind))
        return figures

    def close(self) -> None:
        self._http.close()

    def hosts(self, instance: Instance, units: list[Unit]) -> dict[str, list[Unit]]:
        """Zabbix host name -> the units on it (several when the format does not name the unit)."""
        out: dict[str, list[Unit]] = {}
        for unit in units:
            name = self.host_format.format(
                instance=instance.name, unit=unit.name, address=unit.address, role=unit.role, instance_id=instance.id
            )
            out.setdefault(name, []).append(unit)
        return out

    def _fetch(self, session: _Session, hosts: dict[str, list[Unit]]) -> Figures:
        hostids = self._resolve(session, list(hosts))
        if not hostids:
            return {}
        items = session.call(
            "item.get",
            {
                "output": ["hostid", "key_", "lastvalue", "lastclock"],
                "hostids": sorted(set(hostids.values())),
                "filter": {"key_": list(self.items)},
            },
        )
        if not isinstance(items, list):
            raise ValueError(f"item.get answered {type(items).__name__}, not a list")
        by_id = {hostid: name for name, hostid in hostids.items()}
        out: Figures = {}
        answered: set[str] = set()
        for item in items:
            host = by_id.get(str(item.get("hostid"))) if isinstance(item, dict) else None
            if host is None:
                continue
            answered.add(host)
            metric, value = self.items.get(str(item.get("key_"))), _value(item)
            if metric is None or value is None:
                continue
            for unit in hosts[host]:
                out.setdefault(unit.name, {})[metric] = value
        self._forget_hosts(session.url, set(hostids) - answered)
        return out

    def _resolve(self, session: _Session, names: list[str]) -> dict[str, str]:
        """Host name -> hostid of the names Zabbix knows; found ones are cached, unknown ones asked
        again next time (a host may be registered after its unit starts)."""
        cache = self._hostids.setdefault(session.url, {})
        missing = [name for name in names if name not in cache]
        if missing:
            found = session.call("host.get", {"output": ["hostid", "host"], "filter": {"host": missing}})
            if not isinstance(found, list):
                raise ValueError(f"host.get answered {type(found).__name__}, not a list")
            for host in found:
                if isinstance(host, dict) and "host" in host and "hostid" in host:
                    cache[str(host["host"])] = str(host["hostid"])
        return {name: cache[name] for name in names if name in cache}

    def _forget_hosts(self, url: str, names: set[str]) -> None:
        """A cached host with no items at all may have been deleted and registered again under
        a new id: look it up afresh next time."""
        cache = self._hostids.get(url, {})
        for name in names:
            cache.pop(name, None)


class _Session:
    """The calls of one sample to one Zabbix, with the source's token and what it learnt."""

    _ids = itertools.count(1)

    def __init__(self, source: ZabbixSource, http: httpx.Client, url: str):
        self.source = source
        self.http = http
        self.url = url

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """An authenticated call; a session Zabbix ended is logged in again, once."""
        token = self.source._tokens.get(self.url) or self.login()
        try:
            return self._authenticated(method, params, token)
        except ZabbixError as e:
            if not e.session_lost:
                raise
        self.source._tokens.pop(self.url, None)
        return self._authenticated(method, params, self.login())

    def login(self) -> str:
        """A new token: the "username" or "user" parameter, whichever this Zabbix took last first."""
        known = self.source._login_fields.get(self.url)
        fields = [known, *(f for f in _LOGIN_FIELDS if f != known)] if known else list(_LOGIN_FIELDS)
        refusals: list[ZabbixError] = []
        for field in fields:
            try:
                token = self.rpc("user.login", {field: self.source.user, "password": self.source.password})
                break
            except ZabbixError as e:
                if not e.invalid_params:
                    raise
                refusals.append(e)  # maybe this version names the parameter the other way
        else:
            # Neither name worked: tell the refusal that is not about the name (a wrong password).
            raise min(refusals, key=lambda e: e.names_a_parameter)
        if not isinstance(token, str) or not token:
            raise ValueError("user.login answered no token")
        self.source._login_fields[self.url] = field
        self.source._tokens[self.url] = token
        return token

    def _authenticated(self, method: str, params: dict[str, Any], token: str) -> Any:
        in_body = self.url not in self.source._header_only
        try:
            return self.rpc(method, params, token, in_body)
        except ZabbixError as e:
            if not (in_body and e.refuses_auth_field):
                raise
        self.source._header_only.add(self.url)
        return self.rpc(method, params, token, in_body=False)

    def rpc(self, method: str, params: dict[str, Any], token: str | None = None, in_body: bool = False) -> Any:
        """One JSON-RPC 2.0 request; the result, or ZabbixError for an error answered."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)}
        headers = {"Content-Type": "application/json-rpc"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
            if in_body:
                body["auth"] = token
        response = self.http.post(self.url, content=json.dumps(body), headers=headers, timeout=self.source.timeout)
        try:
            answer = response.json()
        except ValueError:
            response.raise_for_status()
            raise ValueError(f"HTTP {response.status_code} without JSON") from None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            raise ZabbixError(error.get("code"), str(error.get("message", "")), str(error.get("data", "")))
        response.raise_for_status()
        if not isinstance(answer, dict) or "result" not in answer:
            raise ValueError("a JSON-RPC answer without result")
        return answer["result"]


def _value(item: dict[str, Any]) -> float | None:
    """An item's last value; none for an item that never received one (lastclock 0, where
    lastvalue is a placeholder "0") or a value that is not a finite number."""
    if str(item.get("lastclock", "")) == "0":
        return None
    try:
        value = float(item["lastvalue"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _kind(error: Exception) -> str:
    if isinstance(error, httpx.TransportError):
        return "unreachable"
    if isinstance(error, (ZabbixError, httpx.HTTPStatusError)):
        return "api error"
    return "bad answer"


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
