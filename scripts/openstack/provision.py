"""Keystone objects for Heat and the tests, and the readiness wait; run by start.sh (venv Python).

    provision.py provision STATE   create what is missing (idempotent), then write env.json and
                                   clouds.yaml into STATE
    provision.py wait STATE SECS   poll until alice gets a token and Heat lists her stacks

The settings come from start.sh's environment (KEYSTONE_URL, HEAT_URL, REGION) and the passwords
from STATE/secrets.env.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

KEYSTONE_URL = os.environ["KEYSTONE_URL"]  # http://127.0.0.1:5000/v3
HEAT_URL = os.environ["HEAT_URL"]  # http://127.0.0.1:8004/v1/%(tenant_id)s, catalog form
REGION = os.environ["REGION"]
DEFAULT_DOMAIN = "default"

# user -> (project, roles); in domain Default. The service user `imsso` is for the orchestrator
# itself: `service` lets it validate users' tokens, `admin` lets it act on any project.
TEST_USERS = {
    "alice": ("tenant-a", ["member", "heat_stack_owner"]),
    "bob": ("tenant-b", ["member", "heat_stack_owner"]),
    "imsso": ("service", ["admin", "service"]),
}
SECRET_OF_USER = {"admin": "ADMIN_PASSWORD", "heat": "HEAT_PASSWORD",
                  "heat_domain_admin": "HEAT_DOMAIN_ADMIN_PASSWORD",
                  "alice": "ALICE_PASSWORD", "bob": "BOB_PASSWORD", "imsso": "IMSSO_PASSWORD"}


def read_secrets(state: Path) -> dict[str, str]:
    secrets = {}
    for line in (state / "secrets.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            secrets[key.strip()] = value.strip()
    return secrets


def password_session(user: str, password: str, project: str) -> ks_session.Session:
    auth = v3.Password(auth_url=KEYSTONE_URL, username=user, password=password,
                       project_name=project, user_domain_id=DEFAULT_DOMAIN,
                       project_domain_id=DEFAULT_DOMAIN)
    return ks_session.Session(auth=auth)


class Keystone:
    """The few admin calls needed, each a find-or-create."""

    def __init__(self, sess: ks_session.Session):
        self.sess = sess

    def _get(self, path: str, key: str, **query: str) -> list[dict]:
        return self.sess.get(KEYSTONE_URL + path, params=query).json()[key]

    def _post(self, path: str, key: str, body: dict) -> dict:
        return self.sess.post(KEYSTONE_URL + path, json={key: body}).json()[key]

    def _find_or_create(self, path: str, key: str, query: dict, body: dict) -> str:
        found = self._get(path, key + "s", **query)
        if found:
            return found[0]["id"]
        return self._post(path, key, body)["id"]

    def domain(self, name: str, description: str = "") -> str:
        return self._find_or_create("/domains", "domain", {"name": name},
                                    {"name": name, "description": description})

    def project(self, name: str, domain_id: str = DEFAULT_DOMAIN) -> str:
        return self._find_or_create("/projects", "project",
                                    {"name": name, "domain_id": domain_id},
                                    {"name": name, "domain_id": domain_id})

    def role(self, name: str) -> str:
        return self._find_or_create("/roles", "role", {"name": name}, {"name": name})

    def user(self, name: str, password: str, domain_id: str = DEFAULT_DOMAIN) -> str:
        found = self._get("/users", "users", name=name, domain_id=domain_id)
        if found:
            # Keep Keystone in step with secrets.env (cheap: password_hash_rounds is low).
            self.sess.patch(f"{KEYSTONE_URL}/users/{found[0]['id']}",
                            json={"user": {"password": password}})
            return found[0]["id"]
        return self._post("/users", "user",
                          {"name": name, "password": password, "domain_id": domain_id})["id"]

    def grant(self, user_id: str, role_id: str, *, project_id: str = "",
              domain_id: str = "") -> None:
        target = f"projects/{project_id}" if project_id else f"domains/{domain_id}"
        self.sess.put(f"{KEYSTONE_URL}/{target}/users/{user_id}/roles/{role_id}")

    def service(self, name: str, type_: str, description: str) -> str:
        return self._find_or_create("/services", "service", {"type": type_},
                                    {"name": name, "type": type_, "description": description})

    def endpoints(self, service_id: str, url: str) -> None:
        existing = {e["interface"]: e for e in
                    self._get("/endpoints", "endpoints", service_id=service_id)}
        for interface in ("public", "internal", "admin"):
            endpoint = existing.get(interface)
            if endpoint is None:
                self._post("/endpoints", "endpoint",
                           {"service_id": service_id, "interface": interface, "url": url,
                            "region_id": REGION})
            elif endpoint["url"] != url:
                self.sess.patch(f"{KEYSTONE_URL}/endpoints/{endpoint['id']}",
                                json={"endpoint": {"url": url, "region_id": REGION}})


def provision(state: Path) -> None:
    secrets = read_secrets(state)
    ks = Keystone(password_session("admin", secrets["ADMIN_PASSWORD"], "admin"))

    roles = {name: ks.role(name) for name in
             ("admin", "member", "reader", "service", "heat_stack_owner", "heat_stack_user")}

    # Heat's service user and catalog entry.
    service_project = ks.project("service")
    heat_user = ks.user("heat", secrets["HEAT_PASSWORD"])
    ks.grant(heat_user, roles["admin"], project_id=service_project)
    ks.grant(heat_user, roles["service"], project_id=service_project)
    ks.endpoints(ks.service("heat", "orchestration", "Orchestration"), HEAT_URL)

    # The domain where Heat creates the users of its stacks, and its admin (heat.conf).
    heat_domain = ks.domain("heat", "Owns users and projects created by heat")
    domain_admin = ks.user("heat_domain_admin", secrets["HEAT_DOMAIN_ADMIN_PASSWORD"],
                           heat_domain)
    ks.grant(domain_admin, roles["admin"], domain_id=heat_domain)

    users = {}
    for name, (project, role_names) in TEST_USERS.items():
        project_id = ks.project(project)
        user_id = ks.user(name, secrets[SECRET_OF_USER[name]])
        for role in role_names:
            ks.grant(user_id, roles[role], project_id=project_id)
        users[name] = {"password": secrets[SECRET_OF_USER[name]], "project": project,
                       "project_id": project_id, "user_id": user_id, "roles": role_names}
    write_env(state, secrets, users)


def write_env(state: Path, secrets: dict[str, str], users: dict[str, dict]) -> None:
    heat_base = HEAT_URL.replace("%(tenant_id)s", "{project_id}")
    env = {
        "keystone_url": KEYSTONE_URL,
        "region": REGION,
        "heat_url": heat_base,  # str.format(project_id=...)
        "user_domain": "Default",
        "project_domain": "Default",
        "admin": {"user": "admin", "password": secrets["ADMIN_PASSWORD"], "project": "admin"},
        "users": users,
    }
    write_private(state / "env.json", json.dumps(env, indent=2) + "\n")

    def cloud(user: str, password: str, project: str) -> dict:
        return {"auth": {"auth_url": KEYSTONE_URL, "username": user, "password": password,
                         "project_name": project, "user_domain_name": "Default",
                         "project_domain_name": "Default"},
                "region_name": REGION, "identity_api_version": 3, "interface": "public"}

    clouds = {"imsso-admin": cloud("admin", secrets["ADMIN_PASSWORD"], "admin")}
    for name in ("alice", "bob"):
        clouds[f"imsso-{name}"] = cloud(name, users[name]["password"], users[name]["project"])
    write_private(state / "clouds.yaml", yaml.safe_dump({"clouds": clouds}, sort_keys=False))


def write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def wait(state: Path, seconds: float) -> None:
    """Until alice gets a token from Keystone and Heat (API and engine) lists her stacks."""
    deadline = time.monotonic() + seconds
    secrets = read_secrets(state)
    last = "nothing tried"
    stage = "keystone"
    while time.monotonic() < deadline:
        try:
            sess = password_session("alice", secrets["ALICE_PASSWORD"], "tenant-a")
            token = sess.get_token()
            stage = "heat"
            project_id = sess.get_project_id()
            url = HEAT_URL.replace("%(tenant_id)s", project_id) + "/stacks"
            resp = sess.get(url, headers={"X-Auth-Token": token}, authenticated=False,
                            raise_exc=False, timeout=5)
            if resp.status_code == 200:
                return
            last = f"GET {url}: {resp.status_code} {resp.text[:200]}"
        except (ks_exc.ClientException, OSError) as exc:
            last = f"{stage}: {type(exc).__name__}: {exc}"
        time.sleep(0.3)
    sys.exit(f"not ready after {seconds:.0f}s: {last}")


def main() -> None:
    command, state = sys.argv[1], Path(sys.argv[2])
    if command == "provision":
        provision(state)
    elif command == "wait":
        wait(state, float(sys.argv[3]))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
