#!/usr/bin/env python3
"""A deploy through imsso on Heat, against `openstack stack create --wait` of the same template.

Usage: .venv/bin/python bench/openstack.py [--runs N]
Needs Keystone and Heat from scripts/openstack/start.sh (state in IMSSO_OPENSTACK_DIR).

What is measured, and how (figures are printed, never asserted):

1. imsso: an `imsso serve` of its own (temporary IMSSO_DATA_DIR, 127.0.0.1:8062), validating
   tokens with Keystone and deploying with the openstack driver and the test environment
   (tests/openstack/environments/no-compute.yaml: Nova and Neutron types as OS::Heat::None).
   The clock starts before POST /v1/instances (sip-core, default sizes, actions [deploy]) with
   alice's Keystone token and stops when GET /v1/operations/{id} says succeeded (polled every
   20 ms): token validation, reservation, rendering, stack create, Heat's work, outputs read back.
2. floor: the template and environment of the same instance, taken from imsso's plan
   (POST /v1/instances/{name}/plan on an instance that is only initialised) and written to files,
   then `openstack stack create --wait --poll 1 -t template.yaml -e environment.yaml` as alice
   (the openstack client of .venv-openstack; its default poll is 5 s). The clock covers the whole command, client start
   included; the client's own start is timed apart (`openstack --version`) and printed.
3. the ratio of the medians. Each run's stacks are deleted (and waited for) before the next.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("IMSSO_OPENSTACK_DIR", "/var/tmp/imsso-openstack"))
ENVIRONMENTS = ROOT / "tests" / "openstack" / "environments"
OPENSTACK = ROOT / ".venv-openstack" / "bin" / "openstack"
LISTEN = "127.0.0.1:8062"


def token(env: dict, user: str) -> str:
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    u = env["users"][user]
    auth = v3.Password(
        auth_url=env["keystone_url"],
        username=user,
        password=u["password"],
        project_name=u["project"],
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return session.Session(auth=auth).get_token()


def wait_op(client: httpx.Client, op_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = client.get(f"/v1/operations/{op_id}").json()
        if op["state"] in ("succeeded", "failed"):
            return op
        time.sleep(0.02)
    raise RuntimeError(f"operation {op_id} did not finish in {timeout} s")


def imsso_deploy(client: httpx.Client, name: str) -> float:
    started = time.monotonic()
    response = client.post("/v1/instances", json={"name": name, "driver": "openstack", "actions": ["deploy"]})
    response.raise_for_status()
    op = wait_op(client, response.json()["operation"]["id"])
    took = time.monotonic() - started
    if op["state"] != "succeeded":
        raise RuntimeError(f"deploy failed: {op['error']}")
    return took


def dispose(client: httpx.Client, name: str) -> None:
    response = client.delete(f"/v1/instances/{name}")
    if response.status_code == 202:
        wait_op(client, response.json()["id"])


def floor_deploy(client: httpx.Client, name: str, folder: Path, os_env: dict) -> float:
    response = client.post("/v1/instances", json={"name": name, "driver": "openstack", "actions": []})
    response.raise_for_status()
    plan = client.post(f"/v1/instances/{name}/plan", json={}).json()
    client.delete(f"/v1/instances/{name}")
    (folder / "template.yaml").write_text(yaml.safe_dump(plan["template"], sort_keys=False))
    (folder / "environment.yaml").write_text(yaml.safe_dump(plan["environment"], sort_keys=False))
    started = time.monotonic()
    subprocess.run(
        [
            str(OPENSTACK),
            "stack",
            "create",
            "--wait",
            "--poll",
            "1",
            "-t",
            str(folder / "template.yaml"),
            "-e",
            str(folder / "environment.yaml"),
            f"floor-{name}",
        ],
        env=os_env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    took = time.monotonic() - started
    subprocess.run(
        [str(OPENSTACK), "stack", "delete", "--yes", "--wait", f"floor-{name}"],
        env=os_env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (STATE / "env.json").exists() or not OPENSTACK.exists():
        print(
            "Keystone and Heat are not running here: bash scripts/openstack/install.sh && "
            "bash scripts/openstack/start.sh",
            file=sys.stderr,
        )
        return 2
    env = json.loads((STATE / "env.json").read_text())
    folder = Path(tempfile.mkdtemp(prefix="imsso-bench-os-"))
    server_env = {
        **os.environ,
        "IMSSO_DATA_DIR": str(folder / "data"),
        "IMSSO_LISTEN": LISTEN,
        "IMSSO_ADDRESS_POOL": "127.122.0.0/16",
        "DESIGN_URI": env["keystone_url"],
        "IMSSO_OS_REGION": env["region"],
        "IMSSO_HEAT_ENVIRONMENT": str(ENVIRONMENTS / "no-compute.yaml"),
    }
    os_env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(STATE / "clouds.yaml"), "OS_CLOUD": "imsso-alice"}
    server = subprocess.Popen(
        [sys.executable, "-m", "imsso", "serve"], env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ours, floor = [], []
    try:
        alice = env["users"]["alice"]
        client = httpx.Client(
            base_url=f"http://{LISTEN}",
            timeout=60,
            headers={"X-Auth-Token": token(env, "alice"), "X-Tenant-Name": alice["project"]},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("imsso serve did not start")
            time.sleep(0.05)
        started = time.monotonic()
        subprocess.run([str(OPENSTACK), "--version"], env=os_env, check=True, capture_output=True)
        client_start = time.monotonic() - started
        for run in range(args.runs):
            ours.append(imsso_deploy(client, f"bench-{run}"))
            dispose(client, f"bench-{run}")
            floor.append(floor_deploy(client, f"plain-{run}", folder, os_env))
            print(f"run {run + 1}: imsso {ours[-1]:.2f} s, openstack stack create --wait {floor[-1]:.2f} s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    med_ours, med_floor = statistics.median(ours), statistics.median(floor)
    print(
        f"deploy on Heat: imsso {med_ours:.2f} s (min {min(ours):.2f}), "
        f"openstack stack create --wait {med_floor:.2f} s (min {min(floor):.2f}), "
        f"ratio {med_ours / med_floor:.2f}x"
    )
    print(f"(the openstack client alone starts in {client_start:.2f} s, inside the floor's figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
