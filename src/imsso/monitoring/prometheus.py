"""Figures from a Prometheus server: one instant query per unit and metric over its HTTP API.

For clouds where the units are already scraped (Kamailio's xhttp_prom exporter, node exporters):
the orchestrator then reads what operators see in their dashboards instead of asking each unit.
The server is the instance attribute `imsso.metrics.prometheus` (a client input) or the configured
default; without either the source is off for that instance.

Queries are PromQL templates; `{address}`, `{unit}`, `{role}`, `{instance}` (the instance's name)
and `{instance_id}` are filled per unit. Only those exact tokens are replaced, so PromQL's own
braces (`metric{label="..."}`) need no escaping. The values are escaped for a PromQL string, where
they normally go. A query should select one series: the first one answered is taken.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import httpx

from ..model import Instance, Unit
from . import Figures

log = logging.getLogger("imsso.monitoring")

URL_ATTRIBUTE = "imsso.metrics.prometheus"
QUERY_ATTRIBUTE = "imsso.metrics.prometheus.query."  # + our metric name: a template of the instance

# Kamailio's xhttp_prom exporter, scraped by Prometheus at <unit address>:5080.
DEFAULT_QUERIES = {
    "sip.registers": 'kamailio_core_rcv_requests_register{instance="{address}:5080"}',
    "sip.requests": 'kamailio_core_rcv_requests{instance="{address}:5080"}',
    "sip.transactions": 'kamailio_tmx_active_transactions{instance="{address}:5080"}',
    "sip.registered_users": 'kamailio_usrloc_registered_users{instance="{address}:5080"}',
}

_PLACEHOLDER = re.compile(r"\{(address|unit|role|instance|instance_id)\}")


class PrometheusSource:
    name = "prometheus"

    def __init__(self, default_url: str = "", queries: dict[str, str] | None = None, timeout: float = 2.0):
        self.default_url = default_url
        self.queries = dict(DEFAULT_QUERIES if queries is None else queries)
        self.timeout = timeout
        self._warnings = WarnOnce()
        # One client for the source's life: a new one per sample costs tens of milliseconds (its
        # TLS context) and loses the connections kept alive to the server.
        self._http = httpx.Client()

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        url = self.url_for(instance)
        queries = self.queries_for(instance)
        if not url or not queries or not units:
            return {}
        out: Figures = {}
        try:
            for unit in units:
                for metric, template in queries.items():
                    value = self._query(url, metric, fill(template, instance, unit))
                    if value is not None:
                        out.setdefault(unit.name, {})[metric] = value
        except httpx.TransportError as e:
            # A server that does not answer would cost a timeout per remaining query: stop asking.
            self._warnings.warn((url, "unreachable"), "Prometheus at %s does not answer: %s", url, e)
        except Exception as e:  # a figure source must never break the loop that samples it
            self._warnings.warn((url, "failed"), "querying Prometheus at %s failed: %r", url, e)
        return out

    def close(self) -> None:
        self._http.close()

    def url_for(self, instance: Instance) -> str:
        """The instance's own server if it names one, else the configured default; "" = off."""
        url = str(instance.attributes.get(URL_ATTRIBUTE) or self.default_url).strip().rstrip("/")
        if url and "://" not in url:
            url = "http://" + url
        return url

    def queries_for(self, instance: Instance) -> dict[str, str]:
        """The configured queries with the instance's overrides and additions; an empty override
        drops a metric (a server that does not have it)."""
        queries = dict(self.queries)
        for key, template in instance.attributes.items():
            if not key.startswith(QUERY_ATTRIBUTE) or not isinstance(template, str):
                continue
            metric = key[len(QUERY_ATTRIBUTE) :]
            if template.strip():
                queries[metric] = template
            else:
                queries.pop(metric, None)
        return queries

    def _query(self, url: str, metric: str, query: str) -> float | None:
        """One instant query; None when it gives no number (transport errors are raised)."""
        response = self._http.get(f"{url}/api/v1/query", params={"query": query}, timeout=self.timeout)
        self._warnings.forget((url, "unreachable"))
        try:
            answer = response.json()
        except ValueError:
            self._warnings.warn(
                (url, "bad answer"),
                "Prometheus at %s answered HTTP %s without JSON (%s)",
                url,
                response.status_code,
                metric,
            )
            return None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else answer
            self._warnings.warn(
                (url, "query", metric),
                "Prometheus at %s refused the query for %s (HTTP %s): %s",
                url,
                metric,
                response.status_code,
                error,
            )
            return None
        value = parse(answer)
        if value is None:
            log.debug("Prometheus at %s has no figure for %s: %s", url, metric, query)
        return value


def fill(template: str, instance: Instance, unit: Unit) -> str:
    """The query of one unit: the placeholders replaced in one pass (a value that looks like a
    placeholder stays as it is)."""
    values = {
        "address": unit.address,
        "unit": unit.name,
        "role": unit.role,
        "instance": instance.name,
        "instance_id": instance.id,
    }
    return _PLACEHOLDER.sub(lambda m: _promql_string(values[m.group(1)]), template)


def _promql_string(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def parse(answer: dict[str, Any]) -> float | None:
    """The value of a successful instant query: the first sample of a vector, or a scalar.
    NaN and infinities are no figures."""
    data = answer.get("data")
    if not isinstance(data, dict):
        return None
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list) and result and isinstance(result[0], dict):
        pair = result[0].get("value")
    elif kind == "scalar":
        pair = result
    else:
        return None
    try:
        value = float(pair[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return value if math.isfinite(value) else None


class WarnOnce:
    """Warns once per failure kind, then logs at debug: a server down for an hour is one warning,
    not one per sample. `forget` re-arms a kind once things work again."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, ...]] = set()

    def warn(self, kind: tuple[str, ...], message: str, *args: object) -> None:
        level = logging.DEBUG if kind in self._seen else logging.WARNING
        self._seen.add(kind)
        log.log(level, message, *args)

    def forget(self, kind: tuple[str, ...]) -> None:
        self._seen.discard(kind)
