"""`imsso serve` as an unprivileged user: it starts, serves, deploys real units as that user, keeps
its data folder 0700, and needs root for nothing when the DNS unit listens above port 1024."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from harness import Api, Server
from polling import wait_for

USER = "imsso-e2e"
LISTEN = "127.0.0.1:8054"


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


class UnprivilegedServer(Server):
    """The harness's server, every command run through `runuser` as USER."""

    def __init__(self, base: Path):
        super().__init__(
            base / "state" / "imsso",
            LISTEN,
            "127.104.0.0/16",
            {"IMSSO_DNS_PORT": "5353", "HOME": str(base), **self.extra_env},
        )

    def start(self, timeout: float = 30) -> UnprivilegedServer:
        log = open(self.data_dir.parent.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            self._as_user("serve"), env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        wait_for(lambda: self._healthy() or self._exited(), timeout, f"imsso serve on {self.listen}")
        if self.proc.poll() is not None:
            raise AssertionError(f"imsso serve exited {self.proc.returncode}:\n{self.log_tail()}")
        return self

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir.parent.parent / "serve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def token(self, tenant: str, ttl: int | None = None) -> str:
        done = subprocess.run(
            self._as_user("token", "issue", "--tenant", tenant),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    python: list[str] = [sys.executable]
    extra_env: dict[str, str] = {}

    def _as_user(self, *args: str) -> list[str]:
        return ["runuser", "-u", USER, "--", *self.python, "-m", "imsso", *args]


def _runs_as_user(argv: list[str]) -> bool:
    return (
        subprocess.run(
            ["runuser", "-u", USER, "--", *argv, "-c", "import imsso, fastapi"], capture_output=True, timeout=30
        ).returncode
        == 0
    )


def _interpreter() -> tuple[str, dict[str, str]]:
    """This interpreter when the user may run it; else the system's of the same version, given this
    environment's packages (a Python installed in root's home is out of other users' reach)."""
    if _runs_as_user([sys.executable]):
        return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin")
    paths = os.pathsep.join(
        [str(Path(__file__).parents[2] / "src"), *(p for p in sys.path if p.endswith("site-packages"))]
    )
    if (
        system
        and subprocess.run(
            ["runuser", "-u", USER, "--", "env", f"PYTHONPATH={paths}", system, "-c", "import imsso, fastapi"],
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    ):
        return system, {"PYTHONPATH": paths}
    pytest.skip(
        f"no Python {version} that user {USER} may run with imsso's packages: {sys.executable} "
        "is not reachable by other users"
    )


@pytest.fixture
def base():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and run imsso serve as it (runuser)")
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        pytest.skip("needs runuser and useradd (util-linux, passwd)")
    user = _user()
    python, env = _interpreter()
    UnprivilegedServer.python = [python]
    UnprivilegedServer.extra_env = env
    folder = Path(tempfile.mkdtemp(prefix="imsso-unprivileged-"))
    os.chown(folder, user.pw_uid, user.pw_gid)  # the user's own folder; imsso makes state/imsso in it
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_serve_runs_and_deploys_as_an_unprivileged_user(base: Path):
    server = UnprivilegedServer(base).start()
    try:
        user = _user()
        owner = psutil.Process(server.proc.pid)
        children = [p for p in owner.children(recursive=True) if "imsso" in " ".join(p.cmdline())]
        assert children and all(p.uids().effective == user.pw_uid for p in children)
        for folder in (base / "state", server.data_dir):  # made by imsso, private from the start
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
            assert os.stat(folder).st_uid == user.pw_uid
        assert stat.S_IMODE(os.stat(server.data_dir / "admin.token").st_mode) == 0o600
        assert httpx.get(server.url + "/v1/health", timeout=5).json() == {"status": "ok"}

        api: Api = server.api("acme")
        created = api.post("/v1/instances", json={"name": "plain", "actions": ["deploy"]})
        assert created.status_code == 202, created.text
        op = api.wait_operation(created.json()["operation"]["id"], timeout=60)
        assert op["state"] == "succeeded", op
        units = server.unit_processes()
        assert units, "the deployed units run"
        assert {p.uids().effective for p in units} == {user.pw_uid}  # as the user, not as root
        gone = api.wait_operation(api.delete("/v1/instances/plain").json()["id"], timeout=60)
        assert gone["state"] == "succeeded", gone
    finally:
        server.stop()
        server.kill_units()


def test_a_data_folder_others_may_write_stops_serve_with_the_reason(base: Path):
    server = UnprivilegedServer(base)
    server.data_dir.mkdir(parents=True)
    for folder in (server.data_dir, server.data_dir.parent):
        os.chown(folder, _user().pw_uid, _user().pw_gid)
    os.chmod(server.data_dir, 0o777)
    done = subprocess.run(server._as_user("serve"), env=server.env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())  # the CLI wraps its lines
    assert "writable by its group or by others (mode 777)" in said and "chmod go-w" in said
    assert not (server.data_dir / "imsso.sqlite").exists()
