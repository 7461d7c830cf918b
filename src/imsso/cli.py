"""The `imsso` command. Everything but `serve` and `secrets rotate` (which works on this machine's
data folder and database) talks to the API over HTTP, never to the store."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import typer
from rich.console import Console
from rich.table import Table

from .config import Settings, private_dir

app = typer.Typer(
    help="IMS Service Orchestrator: deploy, watch, scale and dispose of IMS cores.",
    no_args_is_help=True,
    add_completion=False,
)
token_app = typer.Typer(help="Tokens for the API.", no_args_is_help=True)
subs_app = typer.Typer(help="Subscribers of an instance.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(subs_app, name="subscriber")
secrets_app = typer.Typer(help="The key that seals subscribers' secrets in the database.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
profile_app = typer.Typer(help="Profiles: the IMS variants, as data.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
out = Console()
err = Console(stderr=True)
SERVER_START_TIMEOUT = 30.0
OPERATION_TIMEOUT = 300.0


class ApiError(Exception):
    pass


class Client:
    """The API as the CLI sees it: base URL from IMSSO_URL, token and tenant from the environment."""

    def __init__(self, url: str | None = None, token: str | None = None, tenant: str | None = None):
        # IMSSO_URL names a remote service; else the one this machine's settings would serve.
        listen = os.environ.get("IMSSO_LISTEN", "127.0.0.1:8051")
        self.url = (url or os.environ.get("IMSSO_URL") or f"http://{listen}").rstrip("/")
        self.token = token or os.environ.get("IMSSO_TOKEN", "")
        self.tenant = tenant or os.environ.get("IMSSO_TENANT", "")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"X-Auth-Token": self.token, "X-Tenant-Name": self.tenant, **kwargs.pop("headers", {})}
        try:
            response = httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach imsso at {self.url}: {exc} (is `imsso serve` running?)") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text.strip()
            raise ApiError(f"{method} {path}: {response.status_code}: {message}")
        return response

    def json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _client() -> Client:
    client = Client()
    if not client.token or not client.tenant:
        _fail("set IMSSO_TOKEN and IMSSO_TENANT (export IMSSO_TOKEN=$(imsso token issue --tenant T))")
    return client


@app.command()
def serve(
    listen: str | None = typer.Option(None, help="host:port (IMSSO_LISTEN)"),
    data_dir: Path | None = typer.Option(None, help="state folder (IMSSO_DATA_DIR)"),
    database_url: str | None = typer.Option(None, help="SQLAlchemy URL (IMSSO_DATABASE_URL)"),
    driver: str | None = typer.Option(None, help="default driver (IMSSO_DRIVER)"),
    profile: str | None = typer.Option(None, help="default profile (IMSSO_PROFILE)"),
) -> None:
    """Run the API and the engine in the foreground."""
    from .model import OrchestratorError
    from .server import serve as run_server

    settings = _settings(listen, data_dir, database_url, driver, profile)
    try:
        run_server(settings)
    except OrchestratorError as exc:
        _fail(exc.message)


def _settings(listen=None, data_dir=None, database_url=None, driver=None, profile=None) -> Settings:
    s = Settings.from_env()
    s.listen = listen or s.listen
    s.data_dir = data_dir or s.data_dir
    s.database_url = database_url or s.database_url
    s.driver = driver or s.driver
    s.profile = profile or s.profile
    return s.resolved()


@token_app.command("issue")
def token_issue(
    tenant: str = typer.Option(..., help="the tenant the token acts for"),
    ttl: int | None = typer.Option(None, help="lifetime in seconds"),
) -> None:
    """Print a new token for TENANT alone on stdout (needs the data folder's admin.token)."""
    settings = _settings()
    admin = settings.data_dir / "admin.token"
    if not admin.exists():
        _fail(f"no {admin}: start `imsso serve` first (it creates the admin token)")
    try:
        body = Client(token=admin.read_text().strip()).json("POST", "/v1/tokens", json={"tenant": tenant, "ttl": ttl})
    except ApiError as exc:
        _fail(str(exc))
    print(body["token"])


@secrets_app.command("rotate")
def secrets_rotate(
    data_dir: Path | None = typer.Option(None, help="state folder (IMSSO_DATA_DIR)"),
    database_url: str | None = typer.Option(None, help="SQLAlchemy URL (IMSSO_DATABASE_URL)"),
) -> None:
    """A new key seals every subscriber secret again, then the old key leaves the key file
    (IMSSO_SECRETS_KEY_FILE, <data dir>/secrets.key). It may run beside this machine's `imsso serve`,
    which reads the key file again when it changes; run it again if it was interrupted."""
    from .model import OrchestratorError
    from .store import Store
    from .vault import Vault

    settings = _settings(data_dir=data_dir, database_url=database_url)
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        _fail(
            f"no database at {url.removeprefix('sqlite:///')}: nothing to rotate "
            "(set IMSSO_DATA_DIR or IMSSO_DATABASE_URL to the service's)"
        )
    store = Store(url, Vault(settings.key_file))
    try:
        store.migrate()
        count = store.rotate_secrets()
    except OrchestratorError as exc:
        _fail(exc.message)
    finally:
        store.close()
    out.print(f"{count} subscriber(s) sealed with a new key; {settings.secrets_key_file} holds it alone")


@profile_app.command("check")
def profile_check(
    profile: str = typer.Argument(..., metavar="DIR", help="a profile folder, or the name of an installed profile"),
) -> None:
    """Check a profile before anyone deploys it: profile.yaml against the schema, then every
    template of every role rendered at the profile's min, default and max sizes. Prints every
    problem (file, key or template, size) and exits 1, or a short summary and exits 0."""
    from .profiles import check

    folder = _profile_folder(profile)
    report = check.check_folder(folder)
    if report.ok:
        print(check.summary(report))
        return
    for problem in report.problems:
        print(problem)
    print(f"{len(report.problems)} problem(s) in {folder}", file=sys.stderr)
    raise typer.Exit(1)


def _profile_folder(given: str) -> Path:
    """A folder holding profile.yaml, or the folder of an installed profile of that name."""
    from .model import NotFound
    from .profiles import NAME_RE, default_registry

    if (Path(given) / "profile.yaml").is_file():
        return Path(given)
    registry = default_registry()
    try:
        if NAME_RE.match(given):
            return registry.folder(given)
    except NotFound:
        pass
    _fail(
        f"{given} is neither a profile folder (with a profile.yaml) nor an installed profile "
        f"({', '.join(registry.available())})"
    )
    raise AssertionError("unreachable")


@app.command("list")
def list_instances() -> None:
    """The tenant's instances."""
    rows = _call(_client().json, "GET", "/v1/instances")
    table = Table("name", "state", "stack", "profile", "driver", "sizes", "P-CSCF")
    for i in rows:
        pcscf = next((u["address"] for u in i["units"] if u["role"] == "pcscf"), "")
        table.add_row(
            i["name"],
            i["state"],
            i["stack_state"],
            i["profile"],
            i["driver"],
            " ".join(f"{k}={v}" for k, v in i["sizes"].items()),
            pcscf,
        )
    out.print(table)


@app.command()
def show(name: str = typer.Argument("default")) -> None:
    """An instance, its units and its last failure."""
    i = _call(_client().json, "GET", f"/v1/instances/{name}")
    out.print(
        f"[bold]{i['name']}[/bold] ({i['id']}) state={i['state']} stack={i['stack_state']} "
        f"profile={i['profile']} driver={i['driver']} domain={i['domain']}"
    )
    table = Table("unit", "role", "address", "state", "pid")
    for u in i["units"]:
        table.add_row(u["name"], u["role"], u["address"], u["state"], str(u["pid"] or ""))
    out.print(table)
    for name_, value in i["attributes"].items():
        out.print(f"{name_} = {value}")
    if i["failed_operation"]:
        e = i["failed_operation"]["error"]
        out.print(f"[red]{i['failed_operation']['kind']} failed at {e['step']}: {e['message']}[/red]")
        if e.get("cause"):
            out.print(e["cause"])


def _sizes(items: list[str]) -> dict[str, int]:
    parsed = {}
    for item in items:
        role, _, count = item.partition("=")
        if not count.isdigit():
            _fail(f"'{item}' is not ROLE=COUNT (e.g. scscf=3)")
        parsed[role] = int(count)
    return parsed


@app.command()
def scale(name: str, sizes: list[str] = typer.Argument(..., help="ROLE=COUNT, e.g. scscf=3")) -> None:
    """Change the number of units of roles, e.g. `imsso scale default scscf=3`."""
    parsed = _sizes(sizes)
    client = _client()
    op = _call(client.json, "PATCH", f"/v1/instances/{name}", json={"sizes": parsed})
    _follow(client, op)


@app.command()
def plan(
    name: str = typer.Argument("default"),
    size: list[str] = typer.Option([], help="ROLE=COUNT to plan, e.g. --size scscf=3"),
    attribute: list[str] = typer.Option([], "--set", help="NAME=VALUE to plan, e.g. --set imsso.os.flavor=m1.large"),
    template: bool = typer.Option(False, help="print the whole template and environment"),
) -> None:
    """Show what a deploy or an update would send to Heat and how it differs from the live stack.
    Changes nothing."""
    attributes = {}
    for item in attribute:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"'{item}' is not NAME=VALUE")
        attributes[key] = value
    result = _call(
        _client().json, "POST", f"/v1/instances/{name}/plan", json={"sizes": _sizes(size), "attributes": attributes}
    )
    stack = result.get("stack")
    out.print(
        f"stack {result['stack_name']}: "
        + (
            f"{stack['status']} ({stack['id']}), a {result['action']} would"
            if stack
            else "not created yet, a deploy would"
        )
    )
    for change, names in result["resources"].items():
        if names:
            out.print(f"  {change:<9} {', '.join(names)}")
    if not any(result["resources"].values()):
        out.print("  change no resource")
    if result.get("diff"):
        out.print(result["diff"], markup=False, highlight=False)
    if template:
        import yaml

        out.print(
            yaml.safe_dump(
                {"template": result["template"], "environment": result["environment"]}, sort_keys=False, width=1000
            ),
            markup=False,
            highlight=False,
        )


@app.command()
def dispose(name: str = typer.Argument("default")) -> None:
    """Remove the instance and everything it created."""
    client = _client()
    _follow(client, _call(client.json, "DELETE", f"/v1/instances/{name}"))


@app.command()
def events(
    name: str = typer.Argument("default"),
    since: int = 0,
    kind: str = typer.Option("", help="only this kind: lifecycle, step, unit, decision, failure"),
) -> None:
    """The instance's event log: steps, decisions (with the figures behind them), failures."""
    params: dict[str, Any] = {"since": since, **({"kind": kind} if kind else {})}
    for e in _call(_client().json, "GET", f"/v1/instances/{name}/events", params=params):
        out.print(f"{e['id']:>5} {e['time'][:19]} {e['kind']:<10} {e['message']}")


@subs_app.command("list")
def subscriber_list(instance: str = typer.Argument("default")) -> None:
    for s in _call(_client().json, "GET", f"/v1/instances/{instance}/subscribers"):
        out.print(s["aor"])


@subs_app.command("add")
def subscriber_add(
    user: str,
    password: str = typer.Option("", help="SIP Digest password (asked for when no --k)"),
    k: str = typer.Option("", help="AKA: the USIM's K, 32 hex digits (profile ims)"),
    opc: str = typer.Option("", help="AKA: the operator key OPc, 32 hex digits"),
    instance: str = typer.Option("default"),
) -> None:
    """Add (or change) a subscriber: a password for SIP Digest, K and OPc for AKA, or both."""
    if not password and not k:
        password = typer.prompt("Password", hide_input=True)
    body = {"user": user, **({"password": password} if password else {}), **({"k": k, "opc": opc} if k or opc else {})}
    s = _call(_client().json, "POST", f"/v1/instances/{instance}/subscribers", json=body)
    out.print(f"added {s['aor']} ({', '.join(s['auth'])})")


@subs_app.command("remove")
def subscriber_remove(user: str, instance: str = typer.Option("default")) -> None:
    _call(_client().request, "DELETE", f"/v1/instances/{instance}/subscribers/{user}")
    out.print(f"removed {user}")


@app.command()
def up(
    tenant: str = typer.Option("demo", envvar="IMSSO_TENANT", help="tenant of the default instance"),
    scscf: int | None = typer.Option(None, help="number of S-CSCFs"),
    profile: str = typer.Option(
        "ims", help="profile of the default instance: ims (3GPP, with an HSS) or sip-core (light)"
    ),
) -> None:
    """Start the service, deploy and provision the default instance, print how to use it, keep serving."""
    settings = _settings()
    client = Client(url=f"http://{settings.listen}", tenant=tenant)
    server = None if client.healthy() else _start_server(settings)
    try:
        client.token = _issue(settings, client, tenant)
        instance = _ensure_default(client, scscf, profile)
        _print_summary(client, instance)
        if server is None:
            out.print("(the service was already running: it keeps running)")
            return
        out.print(
            "[bold]Serving.[/bold] Ctrl-C stops the service (the IMS keeps running; `imsso down` disposes of it)."
        )
        server.wait()
    except ApiError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


@app.command()
def down(tenant: str = typer.Option("demo", envvar="IMSSO_TENANT")) -> None:
    """Dispose of the default instance and stop the service."""
    settings = _settings()
    client = Client(url=f"http://{settings.listen}", tenant=tenant)
    if not client.healthy():
        _start_server(settings)
    try:
        client.token = _issue(settings, client, tenant)
        try:
            _follow(client, client.json("DELETE", "/v1/instances/default"))
        except ApiError as exc:
            if ": 404:" not in str(exc):
                raise
            out.print("no default instance")
    except ApiError as exc:
        _fail(str(exc))
    _stop_server(settings)


def _start_server(settings: Settings) -> subprocess.Popen:
    log = settings.data_dir / "serve.log"
    private_dir(settings.data_dir)
    env = {**os.environ, "IMSSO_DATA_DIR": str(settings.data_dir), "IMSSO_LISTEN": settings.listen}
    with open(log, "ab") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "imsso", "serve"], env=env, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL
        )
    client = Client(url=f"http://{settings.listen}")
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    with out.status(f"starting imsso on {settings.listen}"):
        while not client.healthy():
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                _fail(f"imsso serve did not start (log {log}):\n" + "\n".join(tail))
            time.sleep(0.1)
    out.print(f"imsso serving on http://{settings.listen} (log: {log})")
    return server


def _stop_server(settings: Settings) -> None:
    pid_path = settings.data_dir / "imsso.pid"
    if not pid_path.exists():
        return
    pid = int(pid_path.read_text())
    try:  # only an imsso serve: a stale file may name another process by now
        if "serve" not in " ".join(psutil.Process(pid).cmdline()):
            return
        os.kill(pid, signal.SIGTERM)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and pid_path.exists():
        time.sleep(0.1)
    out.print("imsso stopped")


def _issue(settings: Settings, client: Client, tenant: str) -> str:
    admin = (settings.data_dir / "admin.token").read_text().strip()
    return Client(url=client.url, token=admin).json("POST", "/v1/tokens", json={"tenant": tenant})["token"]


def _ensure_default(client: Client, scscf: int | None, profile: str | None) -> dict:
    try:
        instance = client.json("GET", "/v1/instances/default")
    except ApiError as exc:
        if ": 404:" not in str(exc):
            raise
        body: dict[str, Any] = {"name": "default", "sizes": {"scscf": scscf} if scscf else {}}
        if profile:
            body["profile"] = profile
        created = client.json("POST", "/v1/instances", json=body)
        _follow(client, created["operation"])
        return client.json("GET", "/v1/instances/default")
    if instance["current_operation"]:
        _follow(client, client.json("GET", f"/v1/operations/{instance['current_operation']}"))
    instance = client.json("GET", "/v1/instances/default")
    for action, states in (("deploy", ("initialised", "failed")), ("provision", ("deployed", "failed"))):
        if instance["state"] in states and not (action == "deploy" and instance["provisioned"]):
            _follow(client, client.json("POST", f"/v1/instances/default/actions/{action}"))
            instance = client.json("GET", "/v1/instances/default")
    if scscf and instance["sizes"].get("scscf") != scscf:
        _follow(client, client.json("PATCH", "/v1/instances/default", json={"sizes": {"scscf": scscf}}))
        instance = client.json("GET", "/v1/instances/default")
    return instance


def _follow(client: Client, op: dict | None) -> dict:
    """Show an operation's steps as they happen, then the ones chained after it; fail on failure."""
    while op is not None:
        shown = 0
        deadline = time.monotonic() + OPERATION_TIMEOUT
        with out.status(f"{op['kind']} …") as status:
            while True:
                op = client.json("GET", f"/v1/operations/{op['id']}")
                for step in op["steps"][shown:]:
                    if step["state"] == "running":
                        status.update(f"{op['kind']}: {step['name']} …")
                        break
                    mark = "[green]✓[/green]" if step["state"] == "done" else "[red]✗[/red]"
                    detail = f" — {step['detail']}" if step["detail"] else ""
                    out.print(f"{mark} {op['kind']}: {step['name']}{detail}")
                    shown += 1
                if op["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        if op["state"] == "failed":
            e = op["error"]
            raise ApiError(
                f"{op['kind']} failed at '{e['step']}': {e['message']}" + (f"\n{e['cause']}" if e.get("cause") else "")
            )
        if op["state"] != "succeeded":
            raise ApiError(f"{op['kind']} still {op['state']} after {OPERATION_TIMEOUT:.0f} s")
        out.print(f"[green]{op['kind']} succeeded[/green]")
        follow = op["params"].get("followed_by")
        op = client.json("GET", f"/v1/operations/{follow}") if follow else None
    return {}


def _print_summary(client: Client, instance: dict) -> None:
    pcscf = next((u["address"] for u in instance["units"] if u["role"] == "pcscf"), "?")
    dns = next((u["address"] for u in instance["units"] if u["role"] == "dns"), "?")
    has_hss = any(u["role"] == "hss" for u in instance["units"])
    table = Table(title=f"IMS '{instance['name']}' is {instance['state']}", show_header=False)
    table.add_row("profile", instance["profile"])
    table.add_row("P-CSCF", f"sip:{pcscf}:5060 (UDP and TCP)")
    table.add_row("domain", instance["domain"])
    table.add_row("DNS", f"{dns} port 53")
    for sub, password in _test_credentials(client, instance):
        # With an HSS, the digest username is the private identity user@domain.
        user = f"{sub['user']}@{sub['domain']}" if has_hss else sub["user"]
        shown = f"password {password}" if password else f"{' and '.join(sub['auth'])}, as you set it"
        table.add_row("subscriber", f"{sub['aor']}  {shown}  (username {user})")
    table.add_row("token", client.token)
    table.add_row("tenant", client.tenant)
    out.print(table)
    out.print("(no password is kept: the test subscribers get new ones at each `imsso up`)")
    out.print(f"export IMSSO_TOKEN={client.token} IMSSO_TENANT={client.tenant}")


def _test_credentials(client: Client, instance: dict) -> list[tuple[dict, str]]:
    """The subscribers, the profile's test ones with a password chosen here and set through the API
    (the API never gives a secret back, so whoever shows one must have chosen it)."""
    from . import profiles

    tests = set(profiles.load(instance["profile"]).test_subscribers)
    shown = []
    for sub in client.json("GET", "/v1/instances/default/subscribers"):
        password = ""
        if sub["user"] in tests and sub["auth"] == ["digest"]:
            password = secrets.token_urlsafe(12)
            client.json("PUT", f"/v1/instances/default/subscribers/{sub['user']}", json={"password": password})
        shown.append((sub, password))
    return shown


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        _fail(str(exc))


def main() -> None:
    app()
