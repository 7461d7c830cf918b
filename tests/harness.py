"""Real processes for end-to-end tests: `imsso serve` in a temporary data folder, and sipp."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from imsso.drivers.local.kamrpc import KamailioRpc, RpcError, local_key
from polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).parent / "e2e" / "scenarios"
DNS_PORT = 53 if os.geteuid() == 0 else 5353


class Server:
    """One `imsso serve` process with its own data folder, listen address and address pool.

    Its runtime loop is off unless `env` turns it on (IMSSO_RUNTIME_INTERVAL): tests of manual
    flows kill units and scale by hand, which a live loop would answer on its own."""

    def __init__(self, data_dir: Path, listen: str, pool: str, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.listen = listen
        self.url = f"http://{listen}"
        self.env = {
            **os.environ,
            "IMSSO_DATA_DIR": str(data_dir),
            "IMSSO_LISTEN": listen,
            "IMSSO_ADDRESS_POOL": pool,
            "IMSSO_DNS_PORT": str(DNS_PORT),
            "IMSSO_RUNTIME_INTERVAL": "0",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Server:
        assert not self._healthy(), f"another imsso already answers on {self.listen}: stop it first"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imsso", "serve"], env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        wait_for(lambda: self._healthy() or self._exited(), timeout, f"imsso serve on {self.listen}")
        if self.proc.poll() is not None:
            raise AssertionError(f"imsso serve exited {self.proc.returncode}:\n{self.log_tail()}")
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "serve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def token(self, tenant: str, ttl: int | None = None) -> str:
        args = [sys.executable, "-m", "imsso", "token", "issue", "--tenant", tenant]
        if ttl:
            args += ["--ttl", str(ttl)]
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def api(self, tenant: str, token: str | None = None) -> Api:
        return Api(self.url, token or self.token(tenant), tenant)

    def unit_processes(self) -> list[psutil.Process]:
        marker = str(self.data_dir / "instances")
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                    marker in part for part in proc.info["cmdline"] or ()
                ):
                    found.append(proc)
            except psutil.NoSuchProcess:
                continue
        return found

    def kill_units(self) -> int:
        procs = self.unit_processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
        return len(procs)


class Api:
    """The JSON API with a tenant's token."""

    def __init__(self, url: str, token: str, tenant: str):
        self.client = httpx.Client(base_url=url, timeout=30, headers={"X-Auth-Token": token, "X-Tenant-Name": tenant})
        self.token, self.tenant = token, tenant

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def wait_operation(self, op_id: str, timeout: float = 120, follow: bool = True) -> dict[str, Any]:
        """Wait for the operation (and those chained after it) to end; return the last one."""
        while True:
            op = wait_for(lambda: self._ended(op_id), timeout, f"operation {op_id}")
            nxt = op["params"].get("followed_by")
            if not (follow and nxt and op["state"] == "succeeded"):
                return op
            op_id = nxt

    def _ended(self, op_id: str) -> dict[str, Any] | None:
        op = self.client.get(f"/v1/operations/{op_id}").json()
        return op if op["state"] in ("succeeded", "failed") else None

    def create(self, name: str, timeout: float = 120, **body) -> dict[str, Any]:
        """Create, deploy and provision; assert it succeeded; return the instance."""
        response = self.client.post("/v1/instances", json={"name": name, **body})
        assert response.status_code == 202, response.text
        op = self.wait_operation(response.json()["operation"]["id"], timeout)
        assert op["state"] == "succeeded", op
        return self.client.get(f"/v1/instances/{name}").json()

    def subscribers(self, name: str) -> list[dict[str, Any]]:
        """The instance's digest subscribers, each with a password set here through PUT (as
        `imsso up` does: the API never gives a password back)."""
        subs = []
        for sub in self.client.get(f"/v1/instances/{name}/subscribers").json():
            if sub["auth"] == ["digest"]:
                password = f"pw-{sub['user']}-{secrets.token_hex(4)}"
                put = self.client.put(f"/v1/instances/{name}/subscribers/{sub['user']}", json={"password": password})
                assert put.status_code == 200, put.text
                subs.append({**put.json(), "password": password})
        return subs


class Sipp:
    """One sipp process for one user (digest credentials come from -au/-ap), on a client address."""

    def __init__(
        self,
        workdir: Path,
        proxy: str,
        scenario: str,
        user: str,
        password: str,
        domain: str,
        client_ip: str,
        port: int,
        *extra: str,
    ):
        self.workdir = workdir
        self.user = user
        self.name = f"{user}-{port}"
        self.argv = [
            "sipp",
            f"{proxy}:5060",
            "-sf",
            str(SCENARIOS / scenario),
            "-t",
            "u1",
            "-i",
            client_ip,
            "-p",
            str(port),
            "-mp",
            str(port + 1000),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-key",
            "domain",
            domain,
            "-auth_uri",
            domain,
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(workdir / f"{self.name}-errors.log"),
            *extra,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.workdir / f"{self.name}.out", "wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        return self

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"sipp for {self.user} still running after {timeout:.0f} s:\n{self.output()}"
            ) from None
        finally:
            self.log.close()

    def run(self, timeout: float = 60) -> int:
        return self.start().wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        text = (self.workdir / f"{self.name}.out").read_text(errors="replace")
        errors = self.workdir / f"{self.name}-errors.log"
        if errors.exists():
            text += "\n--- errors ---\n" + errors.read_text(errors="replace")[-3000:]
        return text[-6000:]


def in_location(scscf_address: str, text: str) -> bool:
    """Whether the S-CSCF's location table (ul.dump over its JSON-RPC) mentions `text`."""
    try:
        dump = unit_rpc(scscf_address).call("ul.dump")
    except RpcError:
        return False
    return text in json.dumps(dump)


def unit_rpc(address: str) -> KamailioRpc:
    """The management RPC of the local unit on `address`, with its key (read from its folder)."""
    return KamailioRpc(address, key=local_key(address))
