"""A fault campaign: SIGKILL `imsso serve` at random moments of deploys, scales and disposes, start
it again, let it settle, and hold what it then shows against what runs on the machine.

Shared by tests/e2e/test_chaos.py (a few kills, in CI) and bench/chaos.py (many, with times).
Every random choice comes from one seeded generator: the seed replays a campaign.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from harness import Server

ENDED = ("succeeded", "failed")
# Typical seconds of each request's operations on sip-core, before any is measured: the kill comes
# at a random moment within them (and now and then just after).
TYPICAL = {"deploy": 1.5, "scale": 1.0, "dispose": 0.5, "deploy+dispose": 1.0}


@dataclass
class Counts:
    seed: int
    kills: int = 0
    refused: int = 0  # requests answered 4xx (e.g. 409 while a dispose waits): not a defect
    operations: int = 0  # operations seen to end after the restarts
    resumed: int = 0  # of which a kill interrupted (resumed after a restart)
    failures: dict[str, int] = field(default_factory=dict)  # expected failures, by reason
    instances: int = 0  # instances created
    leftovers: list[str] = field(default_factory=list)  # processes, folders, records left behind
    problems: list[str] = field(default_factory=list)  # stuck operations, forgotten instances
    settle_seconds: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def summary(self) -> str:
        per_kill = sum(self.settle_seconds) / len(self.settle_seconds) if self.settle_seconds else 0.0
        failed = ", ".join(f"{n} {reason}" for reason, n in sorted(self.failures.items())) or "none"
        return (
            f"chaos seed={self.seed}: {self.kills} kills, {self.operations} operations checked "
            f"({self.resumed} resumed after a kill; failed as expected: {failed}), "
            f"{self.instances} instances, {self.refused} requests refused, "
            f"{len(self.leftovers)} leftovers, {len(self.problems)} problems, "
            f"{per_kill:.1f} s from kill to settled on average"
        )

    def report(self) -> str:
        lines = [
            self.summary(),
            *("leftover: " + x for x in self.leftovers),
            *("problem: " + x for x in self.problems),
            "rounds:",
            *self.log[-40:],
        ]
        return "\n".join(lines)


class Campaign:
    def __init__(
        self,
        server: Server,
        seed: int,
        tenant: str = "chaos",
        max_instances: int = 2,
        settle_timeout: float = 90.0,
        profile: str = "sip-core",
    ):
        self.server, self.tenant, self.profile = server, tenant, profile
        self.rng = random.Random(seed)
        self.counts = Counts(seed)
        self.max_instances = max_instances
        self.settle_timeout = settle_timeout
        self.typical = dict(TYPICAL)
        self.names: set[str] = set()  # every name a create was sent for
        self.accepted: set[str] = set()  # names whose create was answered 202
        self.serial = 0
        self.api = None
        self.token = ""

    # the campaign
    def run(self, kills: int) -> Counts:
        self._connect()
        while self.counts.kills < kills:
            self.round(kills - self.counts.kills)
        self.dispose_all()
        return self.counts

    def round(self, kills_left: int = 1) -> None:
        action, name = self._choose()
        typical = self.typical[action]  # mostly within the operations, now and then just after
        delay = self.rng.uniform(0.0, typical) if self.rng.random() < 0.85 else self.rng.uniform(typical, 1.5 * typical)
        status = self._send(action, name)
        self.counts.log.append(f"{action} {name}: {status}, SIGKILL after {delay:.2f} s")
        time.sleep(delay)  # the fault's random moment, not a wait for anything
        self.server.kill()
        self.counts.kills += 1
        killed = time.monotonic()
        self.server.start()
        if kills_left > 1 and self.rng.random() < 0.3:  # again, while it resumes what it interrupted
            again = self.rng.uniform(0.0, 1.5)
            self.counts.log.append(f"  and again {again:.2f} s after the restart")
            time.sleep(again)
            self.server.kill()
            self.counts.kills += 1
            self.server.start()
        self._connect()
        self.settle()
        self.counts.settle_seconds.append(time.monotonic() - killed)
        self.check()

    def _choose(self) -> tuple[str, str]:
        live = self._live_names()
        if len(live) < self.max_instances and (not live or self.rng.random() < 0.6):
            self.serial += 1
            return self.rng.choice(["deploy", "deploy", "deploy+dispose"]), f"c{self.serial}"
        return self.rng.choice(["scale", "scale", "dispose"]), self.rng.choice(sorted(live))

    def _send(self, action: str, name: str) -> int:
        if action.startswith("deploy"):
            self.names.add(name)
            response = self.api.post("/v1/instances", json={"name": name, "profile": self.profile})
            if response.status_code == 202:
                self.accepted.add(name)
                self.counts.instances += 1
            if action == "deploy+dispose" and response.status_code == 202:
                response = self.api.delete(f"/v1/instances/{name}")  # at once, while it deploys
        elif action == "scale":
            shown = self.api.get(f"/v1/instances/{name}").json()
            size = 1 if shown.get("sizes", {}).get("scscf", 1) > 1 else self.rng.choice([2, 3])
            response = self.api.patch(f"/v1/instances/{name}", json={"sizes": {"scscf": size}})
        else:
            response = self.api.delete(f"/v1/instances/{name}")
        if 400 <= response.status_code < 500:
            self.counts.refused += 1
        return response.status_code

    def dispose_all(self) -> None:
        """Dispose of every instance left (no kill now), then nothing may remain."""
        for name in self._live_names():
            response = self.api.delete(f"/v1/instances/{name}")
            if response.status_code not in (200, 202):
                self.counts.problems.append(f"final DELETE of {name}: {response.status_code} {response.text}")
        self.settle()
        for name, state in self._rows("SELECT name, state FROM instances WHERE state <> 'disposed'"):
            self.counts.leftovers.append(f"instance {name} still {state} after its dispose")
        for table in ("units", "subscribers"):
            for (instance_id,) in self._rows(f"SELECT instance_id FROM {table}"):
                self.counts.leftovers.append(f"a row of {table} of disposed instance {instance_id}")
        for proc in self._unit_processes():
            self.counts.leftovers.append(f"process {proc.pid} {' '.join(proc.cmdline())[:120]}")
        folder = self.server.data_dir / "instances"
        for path in sorted(folder.iterdir()) if folder.exists() else ():
            self.counts.leftovers.append(f"folder {path}")

    # settle and check
    def settle(self) -> None:
        """Wait until no operation is queued or running; name the ones still so at the deadline."""
        deadline = time.monotonic() + self.settle_timeout
        while time.monotonic() < deadline:
            if not self._rows("SELECT id FROM operations WHERE state NOT IN ('succeeded', 'failed')"):
                break
            time.sleep(0.05)
        for op_id, kind, state, steps in self._rows(
            "SELECT id, kind, state, steps FROM operations WHERE state NOT IN ('succeeded', 'failed')"
        ):
            self.counts.problems.append(
                f"{kind} {op_id} still {state} {self.settle_timeout:.0f} s after a restart; steps: {steps[-300:]}"
            )
        self._learn()

    def check(self) -> None:
        listed = {i["name"] for i in self.api.get("/v1/instances").json()}
        live = self._rows("SELECT id, name FROM instances WHERE state <> 'disposed'")
        for _id, name in live:
            if name not in listed:
                self.counts.problems.append(f"instance {name} is live in the store but not listed")
        known = {name for _id, name in self._rows("SELECT id, name FROM instances")}
        for name in self.accepted - known:
            self.counts.problems.append(f"instance {name} was accepted (202) and is forgotten")
        self.counts.leftovers += self._process_mismatches({i for i, _ in live})

    def _process_mismatches(self, live: set[str]) -> list[str]:
        """Processes the store does not know, and units it shows running that are dead."""
        units = {
            (iid, name): (state, pid)
            for iid, name, state, pid in self._rows("SELECT instance_id, name, state, pid FROM units")
        }
        found: list[str] = []
        groups: dict[tuple[str, str], list[psutil.Process]] = {}
        for proc in self._unit_processes():
            key = self._unit_of(proc)
            if key is None or key[0] not in live or key not in units:
                found.append(f"process {proc.pid} of {key} unknown to the store")
                continue
            groups.setdefault(key, []).append(proc)
        for key, procs in groups.items():
            pids = {p.pid for p in procs}
            leaders = {p.pid for p in procs if _ppid(p) not in pids}
            if leaders != {units[key][1]}:
                found.append(
                    f"unit {key[1]} of {key[0][:8]}: main process(es) {sorted(leaders)}, the store "
                    f"says pid {units[key][1]} ({units[key][0]})"
                )
        for key, (state, pid) in units.items():
            if state == "running" and key[0] in live and (not pid or not _alive(pid) or key not in groups):
                found.append(f"unit {key[1]} of {key[0][:8]} shown running, pid {pid} is dead")
        return found

    # helpers
    def _connect(self) -> None:
        if not self.token:
            self.token = self.server.token(self.tenant)
        self.api = self.server.api(self.tenant, self.token)

    def _live_names(self) -> list[str]:
        return sorted(name for (name,) in self._rows("SELECT name FROM instances WHERE state <> 'disposed'"))

    def _rows(self, query: str) -> list[tuple]:
        path = self.server.data_dir / "imsso.sqlite"
        if not path.exists():
            return []
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute(query).fetchall()

    def _learn(self) -> None:
        """Count the operations that ended; learn how long each request's operations take."""
        rows = self._rows("SELECT kind, state, started_at, finished_at, attempts FROM operations")
        self.counts.operations = sum(1 for row in rows if row[1] in ENDED)
        self.counts.resumed = len(self._rows("SELECT id FROM operations WHERE steps LIKE '%resumed after a restart%'"))
        self._judge_failures()
        took: dict[str, list[float]] = {}
        for kind, state, started, finished, attempts in rows:
            if state == "succeeded" and attempts == 1 and started and finished:
                took.setdefault(kind, []).append(_seconds(started, finished))
        median = {k: sorted(v)[len(v) // 2] for k, v in took.items()}
        if "deploy" in median:
            self.typical["deploy"] = median["deploy"] + median.get("provision", 0.0)
            self.typical["deploy+dispose"] = median["deploy"]
        for kind in ("scale", "dispose"):
            self.typical[kind] = median.get(kind, self.typical[kind])

    def _judge_failures(self) -> None:
        """A kill may fail an operation in two ways only: cancelled by a dispose, or interrupted
        too often. Any other failure is the kill's harm, and a defect."""
        self.counts.failures = {}
        for op_id, kind, error in self._rows("SELECT id, kind, error FROM operations WHERE state = 'failed'"):
            err = json.loads(error or "{}")
            if err.get("step") == "cancelled":
                reason = "cancelled by a dispose"
            elif err.get("step") == "resume" and "interrupted" in err.get("message", ""):
                reason = "interrupted too often"
            else:
                problem = f"{kind} {op_id} failed at '{err.get('step')}': {err.get('message')} ({err.get('cause')})"
                if problem not in self.counts.problems:
                    self.counts.problems.append(problem)
                continue
            self.counts.failures[reason] = self.counts.failures.get(reason, 0) + 1

    def _unit_processes(self) -> list[psutil.Process]:
        return self.server.unit_processes()

    def _unit_of(self, proc: psutil.Process) -> tuple[str, str] | None:
        marker = f"{self.server.data_dir / 'instances'}/"
        try:
            for part in proc.cmdline():
                if marker in part and "/units/" in part:
                    rest = part.split(marker, 1)[1].split("/")
                    return rest[0], rest[2]
        except psutil.NoSuchProcess:
            return None
        return None


def _ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.NoSuchProcess:
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _seconds(started: str, finished: str) -> float:
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
