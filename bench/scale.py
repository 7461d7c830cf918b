#!/usr/bin/env python3
"""Reaction times of the runtime loop, next to the policy's own evaluation window.

Usage: .venv/bin/python bench/scale.py [--runs N]

What is measured, and how (figures are printed, never asserted):

1. scale-out: an `imsso serve` of its own (temporary IMSSO_DATA_DIR, 127.0.0.1:8063, units in
   127.123.0.0/16, runtime loop every second as by default) and an instance whose scscf-out
   policy scales above 4 REGISTER/s per S-CSCF held for WINDOW seconds (cooldown 5 s, at most
   2 S-CSCFs). Four sipp processes start registering (about 24 REGISTER/s in all) at t0: the load
   crosses the threshold then. Printed: t0 to the scale decision (the decision event), and t0 to
   the new S-CSCF taking registrations (its own `core.rcv_requests_register` counter, read over
   its JSON-RPC every 20 ms, goes above zero). The floor is the window itself: no policy that
   waits for a window can decide sooner. Between runs the load stops and the loop scales back in.
2. healing: SIGKILL of scscf-1's main process at t0; printed: t0 to a new process of scscf-1
   answering SIP OPTIONS at its address (polled every 20 ms). Next to it: the observer's interval
   (2 s, which shows the unit failed) and the loop's (1 s).

Everything is cleaned up at the end: the instance disposed, the server stopped, sipp killed, the
temporary folder removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from imsso.drivers.local import probes
from imsso.drivers.local.kamrpc import KamailioRpc, RpcError, local_key

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "e2e" / "scenarios" / "register.xml"
LISTEN = "127.0.0.1:8063"
WINDOW = 3.0
USERS = [f"bench{n}" for n in range(1, 5)]
POLICY = {
    "imsso.policy.scscf-out.above": "4",
    "imsso.policy.scscf-out.window": str(WINDOW),
    "imsso.policy.scscf-out.cooldown": "5",
    "imsso.policy.scscf-in.below": "1",
    "imsso.policy.scscf-in.window": "3",
    "imsso.policy.scscf-in.cooldown": "5",
    "imsso.scale.scscf.max": "2",
}


def poll(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


class Bench:
    def __init__(self, folder: Path):
        self.folder = folder
        env = {
            **os.environ,
            "IMSSO_DATA_DIR": str(folder / "data"),
            "IMSSO_LISTEN": LISTEN,
            "IMSSO_ADDRESS_POOL": "127.123.0.0/16",
            "IMSSO_RUNTIME_INTERVAL": "1",
        }
        if os.geteuid() != 0:
            env["IMSSO_DNS_PORT"] = "5353"
        self.env = env
        self.server = subprocess.Popen(
            [sys.executable, "-m", "imsso", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://{LISTEN}", timeout=30)
        poll(self._healthy, 30, "imsso serve")
        token = subprocess.run(
            [sys.executable, "-m", "imsso", "token", "issue", "--tenant", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.http.headers.update({"X-Auth-Token": token, "X-Tenant-Name": "bench"})
        self.sipps: list[subprocess.Popen] = []

    def _healthy(self) -> bool:
        try:
            return self.http.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def op(self, op_id: str) -> dict:
        return poll(
            lambda: (o := self.http.get(f"/v1/operations/{op_id}").json())["state"] in ("succeeded", "failed") and o,
            120,
            f"operation {op_id}",
        )

    def instance(self) -> dict:
        return self.http.get("/v1/instances/bench").json()

    def units(self, role: str) -> list[dict]:
        return sorted((u for u in self.instance()["units"] if u["role"] == role), key=lambda u: u["index"])

    def create(self) -> None:
        response = self.http.post("/v1/instances", json={"name": "bench", "attributes": POLICY})
        op = self.op(response.json()["operation"]["id"])
        while op["params"].get("followed_by"):
            op = self.op(op["params"]["followed_by"])
        for user in USERS:
            self.http.post("/v1/instances/bench/subscribers", json={"user": user, "password": f"pw-{user}-1"})

    def load(self) -> None:
        pcscf = self.units("pcscf")[0]["address"]
        for n, user in enumerate(USERS):
            self.sipps.append(
                subprocess.Popen(
                    [
                        "sipp",
                        f"{pcscf}:5060",
                        "-sf",
                        str(SCENARIO),
                        "-t",
                        "u1",
                        "-i",
                        "127.159.0.1",
                        "-p",
                        str(5500 + 10 * n),
                        "-mp",
                        str(6500 + 10 * n),
                        "-s",
                        user,
                        "-au",
                        user,
                        "-ap",
                        f"pw-{user}-1",
                        "-key",
                        "domain",
                        "ims.test",
                        "-key",
                        "expires",
                        "60",
                        "-r",
                        "3",
                        "-m",
                        "100000",
                        "-nostdin",
                        "-recv_timeout",
                        "5000",
                    ],
                    cwd=self.folder,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop_load(self) -> None:
        for proc in self.sipps:
            proc.kill()
            proc.wait()
        self.sipps = []

    def decision_after(self, since: int, action: str) -> dict | None:
        events = self.http.get("/v1/instances/bench/events", params={"since": since, "kind": "decision"}).json()
        return next((e for e in events if e["data"].get("action") == action or e["message"].startswith(action)), None)

    def last_event(self) -> int:
        events = self.http.get("/v1/instances/bench/events").json()
        return events[-1]["id"] if events else 0

    def close(self) -> None:
        self.stop_load()
        try:
            response = self.http.delete("/v1/instances/bench")
            if response.status_code == 202:
                self.op(response.json()["id"])
        finally:
            self.server.terminate()
            self.server.wait(timeout=30)


def registers(address: str) -> float:
    try:
        stats = KamailioRpc(address, key=local_key(address)).call("stats.fetch", "all")
        return float(stats.get("core.rcv_requests_register", 0))
    except (RpcError, ValueError, AttributeError):
        return 0.0


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def scale_out(bench: Bench) -> tuple[float, float]:
    since = bench.last_event()
    t0, wall0 = time.monotonic(), time.time()
    bench.load()
    decided = poll(lambda: bench.decision_after(since, "scale"), 60, "the scale decision", 0.05)
    second = poll(lambda: len(bench.units("scscf")) == 2 and bench.units("scscf")[1], 60, "scscf-2")
    poll(lambda: registers(second["address"]) > 0, 60, "scscf-2 taking registrations")
    taking = time.monotonic() - t0
    bench.stop_load()
    poll(
        lambda: len(bench.units("scscf")) == 1 and not bench.instance()["current_operation"],
        90,
        "the loop scaling back in",
    )
    return event_time(decided) - wall0, taking


def heal(bench: Bench) -> float:
    victim = bench.units("scscf")[0]
    t0 = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)

    def answering() -> bool:
        unit = bench.units("scscf")[0]
        return (
            unit["pid"] != victim["pid"]
            and unit["state"] == "running"
            and probes.sip_options(unit["address"], 5060, timeout=0.2) is not None
        )

    poll(answering, 60, "scscf-1 replaced and answering")
    took = time.monotonic() - t0
    poll(lambda: not bench.instance()["current_operation"], 60, "the heal to end")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="imsso-bench-scale-"))
    bench = Bench(folder)
    decide, take, healed = [], [], []
    try:
        bench.create()
        for run in range(args.runs):
            d, t = scale_out(bench)
            h = heal(bench)
            decide.append(d)
            take.append(t)
            healed.append(h)
            print(
                f"run {run + 1}: decision {d:.2f} s, new S-CSCF taking registrations {t:.2f} s, "
                f"killed S-CSCF answering again {h:.2f} s",
                flush=True,
            )
    finally:
        bench.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"scale-out: load over the threshold -> decision {statistics.median(decide):.2f} s, -> new "
        f"S-CSCF taking registrations {statistics.median(take):.2f} s (min {min(take):.2f}); the "
        f"policy's window is {WINDOW:.1f} s (ratio {statistics.median(take) / WINDOW:.2f}x), the loop "
        "observes every 1.0 s"
    )
    print(
        f"healing: SIGKILL -> replacement answering {statistics.median(healed):.2f} s "
        f"(min {min(healed):.2f}); the observer looks every 2.0 s, the loop every 1.0 s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
