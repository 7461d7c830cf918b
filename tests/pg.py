"""PostgreSQL for the tests: the server IMSSO_TEST_POSTGRES_URL names, or a private one started here.

The private server is initdb'd into a new temporary folder, listens only on 127.0.0.1 at a free
port (its unix socket stays in that folder), trusts every connection, and is stopped and removed
at the end. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user
when there is one, else as a system user `imsso-test`, created for it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ENV_URL = "IMSSO_TEST_POSTGRES_URL"
SUPERUSER = "imsso"
DATABASE = "imsso"
SERVICE_USER = "imsso-test"
INSTALL_HINT = (
    "install it with: apt-get install postgresql (or point "
    f"{ENV_URL} at a server, e.g. postgresql+psycopg://user@host:5432/db)"
)

log = logging.getLogger(__name__)


class PostgresUnavailable(RuntimeError):
    """No server could be found or started; the message says why and what to do."""


def find_bindir() -> Path:
    """The folder of the newest PostgreSQL server programs (initdb, pg_ctl, postgres)."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):  # Debian: one folder a version
        version = tuple(int(n) for n in re.findall(r"\d+", Path(initdb).parents[1].name))
        found.append((version, Path(initdb).parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    raise PostgresUnavailable(f"PostgreSQL server programs (initdb, pg_ctl) not found: {INSTALL_HINT}")


def server_user() -> str | None:
    """The user to run the server as; None to run it as ourselves (when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    done = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 9):  # 9: created meanwhile by another test run
        raise PostgresUnavailable(
            f"PostgreSQL does not run as root, and creating the user {SERVICE_USER} failed: {done.stderr.strip()}"
        )
    return SERVICE_USER


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """A throw-away PostgreSQL cluster. `start()` it, use `.url`, `stop()` it (idempotent)."""

    def __init__(self, bindir: Path | None = None, user: str | None = None):
        self.bindir = bindir or find_bindir()
        self.user = user
        self.root: Path | None = None
        self.port: int | None = None
        self.startup_seconds: float | None = None

    @classmethod
    def start_new(cls) -> PrivateServer:
        server = cls(find_bindir(), server_user())
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def start(self, attempts: int = 3) -> None:
        began = time.monotonic()
        # A short path without spaces: the unix socket lives here (paths are limited to ~100 bytes).
        parent = tempfile.gettempdir()
        if len(parent) > 60 or " " in parent:
            parent = "/tmp"
        self.root = Path(tempfile.mkdtemp(prefix="imsso-pg-", dir=parent))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# imsso tests: private, local only, fast rather than durable\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
                "start",
                check=False,
            )
            if done.returncode == 0:
                break
            if attempt == attempts or "already in use" not in self._log_tail():
                raise PostgresUnavailable(
                    f"pg_ctl start failed ({done.returncode}): {done.stdout}{done.stderr}\n{self._log_tail()}"
                )
            # Someone took the port between free_port() and the bind: try another one.
        admin = sa.create_engine(
            self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        try:
            with admin.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
        finally:
            admin.dispose()
        self.startup_seconds = time.monotonic() - began
        log.info(
            "PostgreSQL (%s) ready at 127.0.0.1:%s in %.2fs, data in %s",
            self.bindir,
            self.port,
            self.startup_seconds,
            self.root,
        )

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False)
            if done.returncode != 0:
                self._kill()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its children
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        # cwd: the server user may not enter ours (root's home, say).
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if check and done.returncode != 0:
            raise PostgresUnavailable(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server of `server_url`, dropped afterwards.

    Where we may not create databases, a new schema in `server_url`'s database instead (the URL
    then sets the search_path to it).
    """
    base = sa.make_url(server_url)
    name = f"imsso_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            with admin.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            kind, url = "database", base.set(database=name)
        except sa.exc.ProgrammingError:  # no CREATEDB privilege
            with admin.connect() as c:
                c.exec_driver_sql(f'CREATE SCHEMA "{name}"')
            kind, url = "schema", base.update_query_dict({"options": f"-csearch_path={name}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                if kind == "schema":
                    c.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
                elif c.dialect.server_version_info >= (13,):
                    c.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
                else:
                    c.exec_driver_sql(f'DROP DATABASE "{name}"')
    finally:
        admin.dispose()
