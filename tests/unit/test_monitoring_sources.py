"""The Prometheus and Zabbix metric sources against stand-ins for their HTTP APIs on loopback.

The stand-ins answer as the real servers do at the boundary: Prometheus's instant query API, and
Zabbix's JSON-RPC in its three dialects (login "user" before 5.4, "username" after, and 7.2's
refusal of the body's "auth" field), with sessions that end and hosts that are not there.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from imsso.model import Instance, Unit
from imsso.monitoring.prometheus import DEFAULT_QUERIES, PrometheusSource, fill
from imsso.monitoring.zabbix import ZabbixSource, api_url

# --- the stand-ins ----------------------------------------------------------------------------------


@dataclass
class PrometheusStub:
    """Answers by the exact query: ("vector", "v"), ("scalar", "v"), ("error",), ("http", status),
    ("garbage",), ("hang",) (until the test ends); an unknown query has an empty result."""

    answers: dict[str, tuple] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path != "/api/v1/query":
            return reply(handler, 404, {"status": "error", "error": "not found"})
        query = parse_qs(url.query)["query"][0]
        self.queries.append(query)
        kind, *args = self.answers.get(query, ("empty",))
        if kind == "hang":
            self.release.wait(10)
            return reply(handler, 200, {"status": "success", "data": {"resultType": "vector", "result": []}})
        if kind == "http":
            return reply(handler, args[0], "<html>oops</html>")
        if kind == "garbage":
            return reply(handler, 200, "{not json")
        if kind == "error":
            return reply(handler, 400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
        if kind == "scalar":
            data = {"resultType": "scalar", "result": [1700000000.0, args[0]]}
        else:
            result = [{"metric": {"__name__": "m"}, "value": [1700000000.0, args[0]]}] if kind == "vector" else []
            data = {"resultType": "vector", "result": result}
        reply(handler, 200, {"status": "success", "data": data})


@dataclass
class ZabbixStub:
    """A Zabbix frontend's api_jsonrpc.php. `login_field` is the version's user.login parameter;
    `header_only` imitates 7.2 (the body's "auth" refused); `expire()` ends every session."""

    login_field: str = "username"
    header_only: bool = False
    password: str = "zabbix"
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> hostid
    items: list[dict[str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    broken: tuple | None = None  # ("http", status) or ("garbage",) for every request

    def methods(self) -> list[str]:
        return [call["method"] for call in self.calls]

    def expire(self) -> None:
        self.tokens.clear()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self.broken and self.broken[0] == "http":
            return reply(handler, self.broken[1], "<html>Internal Server Error</html>")
        if self.broken:
            return reply(handler, 200, "<html>not the API</html>")
        request = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        request["bearer"] = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        request["content_type"] = handler.headers.get("Content-Type")
        self.calls.append(request)
        result = self.answer(request)
        body = {"jsonrpc": "2.0", "id": request["id"]}
        body.update({"error": result[1]} if isinstance(result, tuple) else {"result": result})
        reply(handler, 200, body)

    def answer(self, request: dict[str, Any]) -> Any:
        if self.header_only and "auth" in request:
            return zerror(-32600, "Invalid request.", 'Invalid parameter "/": unexpected parameter "auth".')
        params = request["params"]
        if request["method"] == "user.login":
            return self.login(params)
        token = request["bearer"] if self.header_only else request.get("auth")
        if token not in self.tokens:
            return zerror(-32602, "Invalid params.", "Session terminated, re-login, please.")
        if request["method"] == "host.get":
            return [
                {"hostid": hid, "host": name} for name, hid in self.hosts.items() if name in params["filter"]["host"]
            ]
        if request["method"] == "item.get":
            return [
                item
                for item in self.items
                if item["hostid"] in params["hostids"] and item["key_"] in params["filter"]["key_"]
            ]
        return zerror(-32601, "Method not found.", "Incorrect API.")

    def login(self, params: dict[str, Any]) -> Any:
        if set(params) != {self.login_field, "password"}:
            other = ({"user", "username"} - {self.login_field}).pop()
            return zerror(-32602, "Invalid params.", f'Invalid parameter "/": unexpected parameter "{other}".')
        if (params[self.login_field], params["password"]) != ("Admin", self.password):
            return zerror(
                -32602, "Invalid params.", "Incorrect user name or password or account is temporarily blocked."
            )
        token = f"token-{len(self.tokens) + len(self.calls)}"
        self.tokens.add(token)
        return token


def zerror(code: int, message: str, data: str) -> tuple:
    return ("error", {"code": code, "message": message, "data": data})


def reply(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up on a hanging answer: expected, not news


@dataclass
class Stubs:
    url: str  # http://127.0.0.1:<port>: Prometheus at /api/v1/query, Zabbix at any *.php
    prometheus: PrometheusStub
    zabbix: ZabbixStub

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, dict[str, Any]]]:
    """One loopback server for the module; each test puts its own stand-ins in `current`."""
    current: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            current["prometheus"].handle(self)

        def do_POST(self):  # noqa: N802
            if self.path.endswith(".php"):
                current["zabbix"].handle(self)
            else:
                reply(self, 404, "no such page")

        def log_message(self, *args):
            pass

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", current
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def stubs(server) -> Iterator[Stubs]:
    url, current = server
    current["prometheus"], current["zabbix"] = PrometheusStub(), ZabbixStub()
    yield Stubs(url, current["prometheus"], current["zabbix"])
    current["prometheus"].release.set()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_instance(name: str = "core", **attributes: Any) -> Instance:
    return Instance(
        id="0123456789abcdef",
        tenant="t1",
        name=name,
        profile="sip-core",
        driver="local",
        domain="ims.test",
        sizes={"pcscf": 1, "scscf": 2},
        attributes=attributes,
    )


def make_units(*specs: tuple[str, int, str]) -> list[Unit]:
    return [
        Unit(
            id=f"u-{role}-{i}", instance_id="0123456789abcdef", name=f"{role}-{i}", role=role, index=i, address=address
        )
        for role, i, address in specs
    ]


UNITS = make_units(("scscf", 1, "10.9.0.10"), ("scscf", 2, "10.9.0.11"), ("pcscf", 1, "10.9.0.12"))


def kamailio(metric: str, address: str) -> str:
    return f'{metric}{{instance="{address}:5080"}}'


# --- Prometheus -------------------------------------------------------------------------------------


def test_prometheus_default_queries_give_the_kamailio_figures_of_each_unit(stubs):
    stubs.prometheus.answers = {
        kamailio("kamailio_core_rcv_requests_register", "10.9.0.10"): ("vector", "120"),
        kamailio("kamailio_core_rcv_requests", "10.9.0.10"): ("vector", "450"),
        kamailio("kamailio_tmx_active_transactions", "10.9.0.10"): ("vector", "3"),
        kamailio("kamailio_usrloc_registered_users", "10.9.0.10"): ("vector", "40"),
        kamailio("kamailio_core_rcv_requests", "10.9.0.12"): ("vector", "9.5"),
    }
    figures = PrometheusSource(default_url=stubs.url).sample(make_instance(), UNITS)
    assert figures == {
        "scscf-1": {
            "sip.registers": 120.0,
            "sip.requests": 450.0,
            "sip.transactions": 3.0,
            "sip.registered_users": 40.0,
        },
        "pcscf-1": {"sip.requests": 9.5},
    }, "scscf-2 has no series at all: it is left out"
    assert len(stubs.prometheus.queries) == len(UNITS) * len(DEFAULT_QUERIES)
    assert kamailio("kamailio_core_rcv_requests_register", "10.9.0.11") in stubs.prometheus.queries


def test_prometheus_fills_every_placeholder_and_leaves_promql_braces_alone():
    instance = make_instance(name='we"ird\\core')
    query = fill(
        'up{job="{role}", unit="{unit}", i="{instance}", id="{instance_id}"} + on() {address}', instance, UNITS[0]
    )
    assert query == ('up{job="scscf", unit="scscf-1", i="we\\"ird\\\\core", id="0123456789abcdef"} + on() 10.9.0.10')
    odd = Unit(id="x", instance_id="x", name="{address}", role="r", index=1, address="1.2.3.4")
    assert fill("{unit}/{address}", instance, odd) == "{address}/1.2.3.4", "filled in one pass"


def test_prometheus_configured_queries_and_the_instance_overrides(stubs):
    stubs.prometheus.answers = {
        'cpu{unit="scscf-1"}': ("vector", "0.25"),
        'instance_cpu{host="10.9.0.10", instance="core"}': ("vector", "0.5"),
        'calls{role="scscf"}': ("scalar", "7"),
    }
    source = PrometheusSource(
        default_url=stubs.url, queries={"cpu": 'cpu{unit="{unit}"}', "memory": 'mem{unit="{unit}"}'}
    )
    instance = make_instance(
        **{
            "imsso.metrics.prometheus.query.cpu": 'instance_cpu{host="{address}", instance="{instance}"}',
            "imsso.metrics.prometheus.query.calls": 'calls{role="{role}"}',
            "imsso.metrics.prometheus.query.memory": "",  # not on this instance's server
        }
    )
    assert source.sample(instance, UNITS[:1]) == {"scscf-1": {"cpu": 0.5, "calls": 7.0}}
    assert sorted(stubs.prometheus.queries) == [
        'calls{role="scscf"}',
        'instance_cpu{host="10.9.0.10", instance="core"}',
    ]
    stubs.prometheus.queries.clear()
    assert source.sample(make_instance(), UNITS[:1]) == {"scscf-1": {"cpu": 0.25}}, "others keep the configured"


def test_prometheus_the_instance_server_comes_before_the_default(stubs, closed_port):
    stubs.prometheus.answers = {"q": ("vector", "1")}
    source = PrometheusSource(default_url=f"http://127.0.0.1:{closed_port}", queries={"m": "q"})
    assert source.sample(make_instance(**{"imsso.metrics.prometheus": stubs.url + "/"}), UNITS[:1]) == {
        "scscf-1": {"m": 1.0}
    }
    assert source.sample(make_instance(**{"imsso.metrics.prometheus": stubs.address}), UNITS[:1]) == {
        "scscf-1": {"m": 1.0}
    }, "a bare host:port is taken as http"


def test_prometheus_without_a_server_is_off(stubs):
    assert PrometheusSource().sample(make_instance(), UNITS) == {}
    assert PrometheusSource(default_url=stubs.url, queries={}).sample(make_instance(), UNITS) == {}
    assert stubs.prometheus.queries == []


@pytest.mark.parametrize(
    "answer",
    [
        ("http", 500),
        ("http", 503),
        ("error",),
        ("garbage",),
        ("empty",),
        ("vector", "NaN"),
        ("vector", "+Inf"),
        ("vector", "many"),
    ],
)
def test_prometheus_a_query_without_a_number_leaves_that_figure_out(stubs, answer):
    stubs.prometheus.answers = {"good": ("vector", "2"), "bad": answer}
    source = PrometheusSource(default_url=stubs.url, queries={"good": "good", "bad": "bad"})
    assert source.sample(make_instance(), UNITS[:1]) == {"scscf-1": {"good": 2.0}}


def test_prometheus_down_gives_nothing_and_warns_once(closed_port, caplog):
    source = PrometheusSource(default_url=f"http://127.0.0.1:{closed_port}")
    with caplog.at_level(logging.DEBUG, logger="imsso.monitoring"):
        assert source.sample(make_instance(), UNITS) == {}
        assert source.sample(make_instance(), UNITS) == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not answer" in warnings[0].getMessage()


def test_prometheus_a_server_that_hangs_costs_one_timeout_per_sample(stubs):
    stubs.prometheus.answers = {"slow": ("hang",)}
    source = PrometheusSource(default_url=stubs.url, queries={"slow": "slow", "other": "other"}, timeout=0.2)
    started = time.monotonic()
    assert source.sample(make_instance(), UNITS) == {}
    assert time.monotonic() - started < 2
    assert stubs.prometheus.queries == ["slow"], "no more queries once the server stopped answering"


# --- Zabbix -----------------------------------------------------------------------------------------

ZHOSTS = {"core-scscf-1": "10101", "core-scscf-2": "10102"}  # no host for pcscf-1
ZITEMS = [
    {"hostid": "10101", "key_": "system.cpu.util", "lastvalue": "12.5", "lastclock": "1700000000"},
    {"hostid": "10101", "key_": "vm.memory.utilization", "lastvalue": "40", "lastclock": "1700000000"},
    {"hostid": "10101", "key_": "net.if.in[eth0]", "lastvalue": "8000", "lastclock": "1700000000"},
    {"hostid": "10102", "key_": "system.cpu.util", "lastvalue": "80", "lastclock": "1700000000"},
    {"hostid": "10102", "key_": "vm.memory.utilization", "lastclock": "1700000000"},  # no lastvalue
    {"hostid": "10102", "key_": "net.if.in[eth0]", "lastvalue": "0", "lastclock": "0"},  # never received
    {"hostid": "10102", "key_": "agent.ping", "lastvalue": "1", "lastclock": "1700000000"},  # not ours
]
WANTED = {
    "scscf-1": {"zabbix.cpu_util": 12.5, "zabbix.memory_util": 40.0, "zabbix.net_in": 8000.0},
    "scscf-2": {"zabbix.cpu_util": 80.0},
}


@pytest.fixture
def zabbix(stubs) -> ZabbixStub:
    stubs.zabbix.hosts, stubs.zabbix.items = dict(ZHOSTS), [dict(item) for item in ZITEMS]
    return stubs.zabbix


def maas(stubs: Stubs, endpoint: str | None = None) -> Instance:
    return make_instance(**{"mcn.endpoint.maas": stubs.address if endpoint is None else endpoint})


@pytest.mark.parametrize(
    "endpoint, wanted",
    [
        ("10.0.0.5", "http://10.0.0.5/zabbix/api_jsonrpc.php"),
        (" 10.0.0.5:8080 ", "http://10.0.0.5:8080/zabbix/api_jsonrpc.php"),
        ("fd00::5", "http://[fd00::5]/zabbix/api_jsonrpc.php"),
        ("http://maas.example/zabbix", "http://maas.example/zabbix/api_jsonrpc.php"),
        ("https://maas.example/zabbix/", "https://maas.example/zabbix/api_jsonrpc.php"),
        ("https://maas.example/monitor/api_jsonrpc.php", "https://maas.example/monitor/api_jsonrpc.php"),
        ("maas.example/monitor", "http://maas.example/monitor/api_jsonrpc.php"),
        ("", ""),
        (None, ""),
    ],
)
def test_zabbix_api_url_of_the_maas_endpoint(endpoint, wanted):
    assert api_url(endpoint) == wanted


def test_zabbix_figures_of_each_unit_by_host_name(stubs, zabbix):
    figures = ZabbixSource().sample(maas(stubs), UNITS)
    assert figures == WANTED, "pcscf-1 has no host; items without a value are left out"
    assert zabbix.methods() == ["user.login", "host.get", "item.get"]
    login, host_get, item_get = zabbix.calls
    assert login["params"] == {"username": "Admin", "password": "zabbix"} and "auth" not in login
    assert host_get["params"]["filter"] == {"host": ["core-scscf-1", "core-scscf-2", "core-pcscf-1"]}
    assert sorted(item_get["params"]["hostids"]) == ["10101", "10102"]
    assert item_get["auth"] == item_get["bearer"] == "token-1", "token in the body and the header"
    assert {call["content_type"] for call in zabbix.calls} == {"application/json-rpc"}


def test_zabbix_the_session_and_the_hosts_are_kept_between_samples(stubs, zabbix):
    source = ZabbixSource()
    source.sample(maas(stubs), UNITS)
    zabbix.calls.clear()
    assert source.sample(maas(stubs), UNITS) == WANTED
    assert zabbix.methods() == ["host.get", "item.get"], "pcscf-1's host is looked for again, not logged in"
    assert zabbix.calls[0]["params"]["filter"] == {"host": ["core-pcscf-1"]}


def test_zabbix_before_5_4_logs_in_with_user(stubs, zabbix):
    zabbix.login_field = "user"
    source = ZabbixSource()
    assert source.sample(maas(stubs), UNITS) == WANTED
    assert [c["params"].keys() - {"password"} for c in zabbix.calls[:2]] == [{"username"}, {"user"}]
    zabbix.expire()
    zabbix.calls.clear()
    assert source.sample(maas(stubs), UNITS) == WANTED
    assert zabbix.methods() == ["host.get", "user.login", "host.get", "item.get"]
    assert zabbix.calls[1]["params"] == {"user": "Admin", "password": "zabbix"}, "the name that worked first"


def test_zabbix_an_ended_session_is_logged_in_again(stubs, zabbix):
    source = ZabbixSource()
    source.sample(maas(stubs), UNITS)
    zabbix.expire()
    zabbix.calls.clear()
    assert source.sample(maas(stubs), UNITS) == WANTED
    assert zabbix.methods() == ["host.get", "user.login", "host.get", "item.get"]


def test_zabbix_a_session_refused_again_after_login_gives_nothing_without_looping(stubs, zabbix):
    zabbix.tokens = set()
    zabbix.login = lambda params: "a-token-zabbix-never-accepts"  # type: ignore[method-assign]
    assert ZabbixSource().sample(maas(stubs), UNITS) == {}
    assert zabbix.methods() == ["user.login", "host.get", "user.login", "host.get"]


def test_zabbix_7_2_takes_the_token_only_in_the_header(stubs, zabbix):
    zabbix.header_only = True
    source = ZabbixSource()
    assert source.sample(maas(stubs), UNITS) == WANTED
    assert zabbix.methods() == ["user.login", "host.get", "host.get", "item.get"]
    zabbix.calls.clear()
    source.sample(maas(stubs), UNITS)
    assert zabbix.methods() == ["host.get", "item.get"] and "auth" not in zabbix.calls[0], "remembered"


def test_zabbix_host_names_follow_the_format(stubs, zabbix):
    zabbix.hosts = {"10.9.0.10": "10101", "ims-core": "10102"}
    assert ZabbixSource(host_format="{address}").sample(maas(stubs), UNITS) == {"scscf-1": WANTED["scscf-1"]}
    shared = ZabbixSource(host_format="ims-{instance}").sample(maas(stubs), UNITS)
    assert shared == {unit.name: WANTED["scscf-2"] for unit in UNITS}, "units on one host share its figures"
    for unusable in ("{nope}", "{0}", "{unit.nope}", "{unit"):
        assert ZabbixSource(host_format=unusable).sample(maas(stubs), UNITS) == {}


def test_zabbix_a_host_registered_again_is_found_under_its_new_id(stubs, zabbix):
    source = ZabbixSource()
    source.sample(maas(stubs), UNITS)
    zabbix.hosts["core-scscf-1"] = "20101"
    for item in zabbix.items:
        item["hostid"] = item["hostid"].replace("10101", "20101")
    assert source.sample(maas(stubs), UNITS) == {"scscf-2": WANTED["scscf-2"]}, "the old id has no items"
    assert source.sample(maas(stubs), UNITS) == WANTED


def test_zabbix_custom_items_and_url_forms(stubs, zabbix):
    source = ZabbixSource(items={"system.cpu.util": "cpu"})
    for endpoint in (stubs.url, stubs.url + "/zabbix/", stubs.url + "/other/api.php"):
        assert source.sample(maas(stubs, endpoint), UNITS) == {"scscf-1": {"cpu": 12.5}, "scscf-2": {"cpu": 80.0}}


def test_zabbix_without_a_maas_endpoint_is_off(stubs, zabbix):
    assert ZabbixSource().sample(make_instance(), UNITS) == {}
    assert ZabbixSource().sample(maas(stubs, ""), UNITS) == {}
    assert zabbix.calls == []


@pytest.mark.parametrize("broken", [("http", 500), ("http", 404), ("garbage",)])
def test_zabbix_a_broken_frontend_gives_nothing(stubs, zabbix, broken):
    zabbix.broken = broken
    assert ZabbixSource().sample(maas(stubs), UNITS) == {}


def test_zabbix_down_gives_nothing(closed_port):
    assert ZabbixSource().sample(make_instance(**{"mcn.endpoint.maas": f"127.0.0.1:{closed_port}"}), UNITS) == {}


def test_zabbix_a_wrong_password_gives_nothing_and_warns_once(stubs, zabbix, caplog):
    source = ZabbixSource(password="wrong")
    with caplog.at_level(logging.DEBUG, logger="imsso.monitoring"):
        assert source.sample(maas(stubs), UNITS) == {}
        assert source.sample(maas(stubs), UNITS) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Incorrect user name or password" in warnings[0]
    assert zabbix.methods() == ["user.login"] * 4, "both parameter names tried each time"


# --- only the hosts the operator allowed, when a tenant names the address ---------------------------


class _Recording:
    name = "recording"

    def __init__(self):
        self.asked = 0

    def sample(self, instance, units):
        self.asked += 1
        return {"scscf-1": {"x": 1.0}}


def test_a_tenant_named_address_is_reached_only_when_the_operator_allowed_it():
    from imsso.monitoring import AllowedHosts
    from imsso.monitoring.zabbix import api_url

    inner = _Recording()
    guarded = AllowedHosts(inner, "mcn.endpoint.maas", ["10.20.0.0/16", "maas.example.net"], api_url)
    unit = Unit(id="u", instance_id="i", name="scscf-1", role="scscf", index=1, address="127.0.0.2")

    def sample(maas):
        attributes = {"mcn.endpoint.maas": maas} if maas else {}
        instance = Instance(
            id="i",
            tenant="t",
            name="core",
            profile="sip-core",
            driver="local",
            domain="ims.test",
            sizes={},
            attributes=attributes,
        )
        return guarded.sample(instance, [unit])

    assert sample("10.20.3.4") == {"scscf-1": {"x": 1.0}}
    assert sample("http://maas.example.net/zabbix") == {"scscf-1": {"x": 1.0}}
    assert sample("160.85.4.50") == {} and sample("http://169.254.169.254/") == {}
    assert sample("") == {"scscf-1": {"x": 1.0}}  # no address named: the source's own default
    assert inner.asked == 3


def test_the_hss_status_page_gives_diameter_figures():
    from imsso.monitoring.hss import parse

    status = {
        "requests_total": 42,
        "latency_ms": {"avg": 0.4, "p99": 1.2, "max": 3.0},
        "registered_impus": 3,
        "subscribers": 5,
        "requests": {"UAR": {"DIAMETER_SUCCESS": 4}},
    }
    assert parse(status) == {
        "diameter.requests": 42.0,
        "diameter.latency_avg_ms": 0.4,
        "diameter.latency_p99_ms": 1.2,
        "ims.registered_impus": 3.0,
        "ims.subscribers": 5.0,
    }
    assert parse({}) == {}
