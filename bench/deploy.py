#!/usr/bin/env python3
"""Deploy to first REGISTER, against a floor; and the service's memory with 20 instances.

Usage: .venv/bin/python bench/deploy.py [--runs N] [--fleet 20]

What is measured, and how (figures are printed, never asserted):

1. imsso: an `imsso serve` of its own (temporary IMSSO_DATA_DIR, 127.0.0.1:8061, units in
   127.120.0.0/16). The clock starts before POST /v1/instances (sip-core, default sizes, actions
   deploy+provision, imsso.test_subscribers false) and stops when a REGISTER through the P-CSCF
   gets 401 then 200 (`imsso.drivers.local.sipcheck.register`). Our own subscriber is added with
   POST /v1/instances/{name}/subscribers right after the first POST returns: it is stored, and
   written to the S-CSCF's table at deploy (or at once when the units are already reserved).
   The P-CSCF's address is read from GET /v1/instances/{name} as soon as the units are reserved.
   Each run is a fresh instance, disposed afterwards (the dispose operation is waited for).
2. floor: the same profile rendered with `imsso.planning.build` on 127.121.0.0/16, the same
   subscriber table (the driver's `sync_subscribers`) and the same argv (the driver's `_argv`),
   started by this script with plain Popen: dns and S-CSCF at once, the P-CSCF as soon as the
   S-CSCF answers an OPTIONS (a P-CSCF relaying to an S-CSCF not yet listening would mark it
   down for seconds), then the same REGISTER check. The clock starts at the first launch.
   The process groups are stopped after each run.
3. the ratio of the medians.
4. the RSS of the `imsso serve` process with 0 instances and with `--fleet` instances deployed
   AND provisioned (active, with the profile's test subscribers), the RSS and PSS summed over
   all their unit processes, then every instance disposed and the processes left counted.

The REGISTER check: `sipcheck.register` waits up to 1 s for an answer, and a datagram sent before
the P-CSCF listens is simply lost. So a new attempt starts every ATTEMPT_EVERY seconds while the
older ones wait, and the first attempt that succeeds stops the clock (resolution ~20 ms).

Everything is cleaned up at the end, also on Ctrl-C or an error: instances disposed, server
stopped, any process whose command line names the temporary folder killed, the folder removed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from imsso import planning, profiles, spec
from imsso.drivers.local import LocalDriver, probes, sipcheck
from imsso.model import Instance, OrchestratorError, Subscriber, Unit

LISTEN = "127.0.0.1:8061"
POOL = "127.120.0.0/16"
FLOOR_POOL = "127.121.0.0/16"
DNS_PORT = 15353
PROFILE = "sip-core"
TENANT = "bench"
USER, PASSWORD = "bench", "bench-" + secrets.token_hex(6)

ATTEMPT_EVERY = 0.02  # a new REGISTER attempt this often while older ones wait for answers
MAX_IN_FLIGHT = 64
REGISTER_TIMEOUT = 60.0  # from the request to the first REGISTER, at worst
OPERATION_TIMEOUT = 180.0
SERVER_START_TIMEOUT = 30.0
MiB = 1024 * 1024


class BenchError(Exception):
    pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until `predicate()` is truthy; raise naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ the REGISTER clock


def _attempt(proxy: str, domain: str) -> tuple[bool, float, str]:
    result = sipcheck.register(proxy, planning.SIP_PORT, domain, USER, PASSWORD)
    return result.ok, time.monotonic(), result.summary


def first_register(proxy: str, domain: str, deadline: float, aborted) -> float:
    """Monotonic time at which a REGISTER through `proxy` first got 401 then 200.

    `aborted()` returns a reason to give up (e.g. the deploy failed), checked 4 times a second.
    """
    pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="register")
    pending: set = set()
    last, next_attempt, next_check = "no attempt yet", 0.0, 0.0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_attempt and len(pending) < MAX_IN_FLIGHT:
                pending.add(pool.submit(_attempt, proxy, domain))
                next_attempt = now + ATTEMPT_EVERY
            done, pending = wait(pending, timeout=max(next_attempt - time.monotonic(), 0), return_when=FIRST_COMPLETED)
            for future in done:
                ok, at, summary = future.result()
                if ok:
                    return at
                last = summary
            if not pending:
                time.sleep(max(next_attempt - time.monotonic(), 0))
            if time.monotonic() > next_check:
                if reason := aborted():
                    raise BenchError(reason)
                next_check = time.monotonic() + 0.25
        raise BenchError(f"no REGISTER through {proxy} went through in time: {last}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # attempts in flight end within 2 s


# ------------------------------------------------------------------ imsso, as a user runs it


class Server:
    """One `imsso serve` with its own data folder, listen address and address pool."""

    def __init__(
        self,
        data_dir: Path,
        listen: str = LISTEN,
        pool: str = POOL,
        dns_port: int = DNS_PORT,
        env: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir
        self.listen = listen
        self.url = f"http://{listen}"
        self.env = {
            **os.environ,
            "IMSSO_DATA_DIR": str(data_dir),
            "IMSSO_LISTEN": listen,
            "IMSSO_ADDRESS_POOL": pool,
            "IMSSO_DNS_PORT": str(dns_port),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.api: httpx.Client | None = None

    def start(self) -> None:
        if self._healthy():
            raise BenchError(f"something already answers on {self.listen}: stop it first")
        self.data_dir.mkdir(parents=True)
        with open(self.data_dir / "serve.log", "ab") as log:
            # its own session: a Ctrl-C reaches this script only, which then disposes through the API
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "imsso", "serve"],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(
            lambda: self._healthy() or self.proc.poll() is not None,
            SERVER_START_TIMEOUT,
            f"imsso serve on {self.listen}",
        )
        if self.proc.poll() is not None:
            raise BenchError(f"imsso serve exited {self.proc.returncode}: see {self.data_dir}/serve.log")
        self.api = httpx.Client(
            base_url=self.url, timeout=30, headers={"X-Auth-Token": self._token(), "X-Tenant-Name": TENANT}
        )

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _token(self) -> str:
        admin = (self.data_dir / "admin.token").read_text().strip()
        response = httpx.post(
            self.url + "/v1/tokens", json={"tenant": TENANT}, headers={"X-Auth-Token": admin}, timeout=10
        )
        _expect(response, 201)
        return response.json()["token"]

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "serve.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def rss_mib(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / MiB

    def stop(self) -> None:
        if self.api:
            self.api.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # the JSON API
    def create(self, name: str, actions=("deploy", "provision"), **attributes) -> str:
        """POST /v1/instances; returns the first operation's id."""
        response = self.api.post(
            "/v1/instances", json={"name": name, "profile": PROFILE, "actions": list(actions), "attributes": attributes}
        )
        _expect(response, 202)
        return response.json()["operation"]["id"]

    def instance(self, name: str) -> dict:
        response = self.api.get(f"/v1/instances/{name}")
        _expect(response, 200)
        return response.json()

    def operation(self, op_id: str) -> dict:
        response = self.api.get(f"/v1/operations/{op_id}")
        _expect(response, 200)
        return response.json()

    def wait_operations(self, op_id: str) -> list[dict]:
        """Wait for `op_id` and the ones chained after it; raise if one failed."""
        ops = []
        while op_id:
            op = wait_for(lambda: _ended(self.operation(op_id)), OPERATION_TIMEOUT, f"operation {op_id}")
            ops.append(op)
            if op["state"] != "succeeded":
                raise BenchError(f"{op['kind']} failed: {op['error']}")
            op_id = op["params"].get("followed_by")
        return ops

    def dispose(self, name: str) -> None:
        response = self.api.delete(f"/v1/instances/{name}")
        _expect(response, 202)
        self.wait_operations(response.json()["id"])

    def live_instances(self) -> list[dict]:
        response = self.api.get("/v1/instances")
        _expect(response, 200)
        return [i for i in response.json() if i["state"] != "disposed"]

    def unit_processes(self) -> list[psutil.Process]:
        return processes_naming(str(self.data_dir / "instances"))


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:300]}"
        )


def _ended(op: dict) -> dict | None:
    return op if op["state"] in ("succeeded", "failed") else None


def _pcscf_address(server: Server, name: str) -> str | None:
    instance = server.instance(name)
    if instance["state"] == "failed":
        raise BenchError(f"instance {name} failed: {instance['failed_operation']['error']}")
    return next((u["address"] for u in instance["units"] if u["role"] == "pcscf"), None)


@dataclass
class ImssoRun:
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # where the time went, from the operations


def imsso_run(server: Server, name: str) -> ImssoRun:
    wall0, t0 = time.time(), time.monotonic()
    op_id = server.create(name, **{"imsso.test_subscribers": False})
    # Stored now; written to the S-CSCF's table by deploy's "subscriber table" step, or by this
    # request itself if the units are already reserved (provision writes the table once more).
    _expect(server.api.post(f"/v1/instances/{name}/subscribers", json={"user": USER, "password": PASSWORD}), 201)
    deadline = t0 + REGISTER_TIMEOUT
    pcscf = wait_for(lambda: _pcscf_address(server, name), REGISTER_TIMEOUT, f"{name}'s P-CSCF address", interval=0.01)
    domain = server.instance(name)["domain"]

    def aborted() -> str | None:
        state = server.instance(name)["state"]
        return f"instance {name} is {state}" if state == "failed" else None

    done_at = first_register(pcscf, domain, deadline, aborted)
    ops = server.wait_operations(op_id)
    server.dispose(name)
    return ImssoRun(done_at - t0, _breakdown(ops, wall0, wall0 + (done_at - t0)))


def _breakdown(ops: list[dict], wall0: float, registered: float) -> dict[str, float]:
    """Seconds per step of the deploy operation, and the milestones around it."""
    at = lambda iso: datetime.fromisoformat(iso).timestamp()  # noqa: E731
    deploy = ops[0]
    times = {"POST -> deploy operation started": at(deploy["started_at"]) - wall0}
    for step in deploy["steps"]:
        if step["finished_at"]:
            times[f"deploy step: {step['name']}"] = at(step["finished_at"]) - at(step["started_at"])
    times["POST -> deploy operation finished"] = at(deploy["finished_at"]) - wall0
    times["POST -> first REGISTER 200 (the figure above)"] = registered - wall0
    if len(ops) > 1:
        times["POST -> provision finished (readiness check included)"] = at(ops[1]["finished_at"]) - wall0
    return times


# ------------------------------------------------------------------ the floor: same units, no orchestrator


class Floor:
    """The sip-core units rendered as the driver would, started by plain Popen."""

    def __init__(self, root: Path):
        self.driver = LocalDriver(root, FLOOR_POOL, DNS_PORT)
        self.profile = profiles.load(PROFILE)
        self.marker = f"{root}/"
        self.procs: list[subprocess.Popen] = []

    def render(self) -> tuple[Instance, planning.Plan]:
        """A fresh folder with every unit's files and the subscriber table."""
        shutil.rmtree(self.driver.data_dir / "instances", ignore_errors=True)
        instance = Instance(
            id="floor",
            tenant=TENANT,
            name="floor",
            profile=PROFILE,
            driver="local",
            domain=self.profile.domain,
            sizes=spec.default_sizes(self.profile),
            attributes={},
            test_subscribers=False,
            secret=secrets.token_hex(16),
            block=0,
        )
        units, taken = [], set()
        for role in self.profile.order:
            for index in range(1, instance.sizes[role] + 1):
                address = self.driver.allocate_address(instance, taken)
                taken.add(address)
                units.append(
                    Unit(str(uuid.uuid4()), instance.id, planning.unit_name(role, index), role, index, address)
                )
        plan = planning.build(instance, self.profile, units, self.driver.layout)
        self.driver.preflight(instance, plan, [u.name for u in plan.units])  # ports free, modules there
        for unit in plan.units:
            folder = self.driver.unit_dir(instance, unit.name)
            folder.mkdir(parents=True)
            for file_name, content in unit.files.items():
                (folder / file_name).write_text(content)
        self.driver.sync_subscribers(instance, self.profile, [Subscriber(instance.id, USER, instance.domain, PASSWORD)])
        return instance, plan

    def run(self) -> float:
        instance, plan = self.render()
        t0 = time.monotonic()
        try:
            pcscfs = plan.role_units("pcscf")
            for unit in plan.units:
                if unit not in pcscfs:
                    self._launch(instance, unit)
            for unit in plan.units:
                if self.profile.role(unit.role).routable:
                    wait_for(
                        lambda: probes.sip_options(unit.address, planning.SIP_PORT, timeout=0.5),
                        REGISTER_TIMEOUT,
                        f"floor {unit.name} answering OPTIONS",
                        interval=0.01,
                    )
            for unit in pcscfs:
                self._launch(instance, unit)
            done_at = first_register(pcscfs[0].address, instance.domain, t0 + REGISTER_TIMEOUT, self._died)
            return done_at - t0
        finally:
            self.stop()

    def _launch(self, instance: Instance, unit: planning.UnitPlan) -> None:
        folder = self.driver.unit_dir(instance, unit.name)
        with open(folder / "unit.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    self.driver._argv(unit, folder),
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )

    def _died(self) -> str | None:
        dead = [p for p in self.procs if p.poll() is not None]
        return f"floor process {dead[0].args[:2]} exited {dead[0].returncode}" if dead else None

    def stop(self) -> None:
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()
        kill_processes_naming(self.marker)  # children that outlived their group leader


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------ processes and memory


def processes_naming(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                marker in part for part in proc.info["cmdline"] or ()
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_processes_naming(marker: str) -> int:
    procs = [p for p in processes_naming(marker) if p.pid != os.getpid()]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


def memory_mib(procs: list[psutil.Process]) -> tuple[float, float]:
    """Summed RSS and PSS (PSS counts each shared page once across the processes)."""
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
    return rss / MiB, pss / MiB


# ------------------------------------------------------------------ the report


def median_min(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


def measure_deploy(server: Server, floor: Floor, runs: int) -> None:
    print(f"deploy to first REGISTER, {runs} run(s) each (sip-core, default sizes)", flush=True)
    imsso_runs, floor_runs = [], []
    for n in range(1, runs + 1):
        imsso_runs.append(imsso_run(server, f"bench-{n}"))
        floor_runs.append(floor.run())
        print(f"  run {n}: imsso {imsso_runs[-1].seconds:.3f} s, floor {floor_runs[-1]:.3f} s", flush=True)
    (im, imin), (fm, fmin) = median_min([r.seconds for r in imsso_runs]), median_min(floor_runs)
    print(
        f"deploy to first REGISTER: imsso {im:.2f} s (min {imin:.2f}), floor {fm:.2f} s "
        f"(min {fmin:.2f}), ratio {im / fm:.1f}x"
    )
    print("  where imsso's time goes (median over the runs, seconds after the POST or per step):")
    names = list(dict.fromkeys(k for r in imsso_runs for k in r.steps))
    for name in names:
        values = [r.steps[name] for r in imsso_runs if name in r.steps]
        print(f"    {statistics.median(values):7.3f}  {name}")


def measure_fleet(server: Server, fleet: int) -> None:
    if server.live_instances():
        raise BenchError("instances are still live before the fleet: the runs did not dispose them")
    idle = server.rss_mib()
    started = time.monotonic()
    ops = [server.create(f"fleet-{n}") for n in range(1, fleet + 1)]
    failures = []
    for op_id in ops:
        try:
            server.wait_operations(op_id)
        except BenchError as exc:  # reported, not fatal: the memory figures still mean something
            failures.append(str(exc))
    took = time.monotonic() - started
    active = fleet - len(failures)
    units = server.unit_processes()
    rss, pss = memory_mib(units)
    for failure in failures:
        print(f"  FAILED in the fleet: {failure}")
    print(
        f"imsso serve RSS: {idle:.1f} MiB with 0 instances, {server.rss_mib():.1f} MiB with {fleet} "
        f"instances ({active} deployed and provisioned, in {took:.1f} s)"
    )
    print(
        f"unit processes at {fleet} instances: {len(units)}, RSS sum {rss:.0f} MiB, PSS sum {pss:.0f} MiB "
        f"({pss / max(active, 1):.1f} MiB PSS per active instance)"
    )
    started = time.monotonic()
    dispose_all(server)
    left = server.unit_processes()
    print(f"disposed {fleet} instances in {time.monotonic() - started:.1f} s; unit processes left: {len(left)}")


def dispose_all(server: Server) -> int:
    """Dispose every live instance, waiting for any operation running on it first; count them."""
    ops = []
    for instance in server.live_instances():
        if instance["current_operation"]:
            try:
                server.wait_operations(instance["current_operation"])
            except BenchError:
                pass  # a failed operation still leaves an instance dispose accepts
        response = server.api.delete(f"/v1/instances/{instance['name']}")
        _expect(response, 202)
        ops.append(response.json()["id"])
    for op_id in ops:
        server.wait_operations(op_id)
    return len(ops)


def cleanup(server: Server, root: Path) -> None:
    try:
        if server.proc and server.proc.poll() is None and server.api:
            for _ in range(3):  # again: a create interrupted in flight may land after a pass
                if not (disposed := dispose_all(server)):
                    break
                print(f"cleanup: disposed {disposed} instance(s) left live", file=sys.stderr)
    except Exception as exc:  # keep going: the processes are killed below anyway
        print(f"cleanup: dispose failed: {exc}", file=sys.stderr)
    server.stop()
    killed = kill_processes_naming(str(root))
    if killed:
        print(f"cleanup: killed {killed} leftover process(es) under {root}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure (default 5)")
    parser.add_argument("--fleet", type=int, default=20, help="instances for the memory figure (default 20)")
    args = parser.parse_args()
    for name, pool in (("imsso", POOL), ("floor", FLOOR_POOL)):
        assert ipaddress.ip_network(pool).prefixlen == 16, f"{name} pool must be a /16"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too
    root = Path(tempfile.mkdtemp(prefix="imsso-bench-"))
    server = Server(root / "imsso")
    try:
        server.start()
        print(
            f"imsso serve on {LISTEN} (pid {server.proc.pid}), data in {root}, RSS at start {server.rss_mib():.1f} MiB",
            flush=True,
        )
        measure_deploy(server, Floor(root / "floor"), args.runs)
        measure_fleet(server, args.fleet)
        return 0
    except (BenchError, OrchestratorError) as exc:  # OrchestratorError: the floor's preflight
        print(f"bench failed: {exc}", file=sys.stderr)
        print(f"last lines of imsso serve's log:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup(server, root)


if __name__ == "__main__":
    sys.exit(main())
