#!/usr/bin/env python3
"""sip-core demo: the Kamailio templates of the sip-core profile, proven with real processes.

Renders src/imsso/profiles/sip-core/templates for one P-CSCF and up to three S-CSCFs on
loopback addresses (PREFIX.10 = P-CSCF, PREFIX.20.. = S-CSCFs, PREFIX.101.. = UEs), creates
the subscribers SQLite file, starts every Kamailio in the foreground (-DD -E, own session,
log to a file, absolute -P), waits until each answers a SIP OPTIONS, then with sipp:

  1. registers alice and bob (401, then 200 with digest), checks a wrong password fails;
  2. calls alice -> bob (INVITE, 407, INVITE with auth, 180, 200, ACK, BYE, 200);
  3. adds subscribers while Kamailio runs and starts a steady registration load with them;
  4. scales the S-CSCFs 1 -> 3 (start, DMQ sync, dispatcher.list rewrite + dispatcher.reload)
     and 3 -> 1 (dispatcher.set_state d, wait until tmx active_transactions is 0, remove
     from dispatcher.list + reload, stop), checking after each step that every user is in
     the location table (ul.dump) of every S-CSCF;
  5. starts an S-CSCF again and kills it (SIGKILL) while it is in the dispatcher set: the
     P-CSCF fails over (tm timeout -> ds_next_dst) and marks it down;
  6. calls again, stops the load and checks that no REGISTER failed;
  7. kills every process group and checks that no kamailio of the demo remains.

Prints PASS/FAIL per check, the JSON-RPC calls and metrics that worked, start-up time and
PSS memory per unit. Exit status 0 only if every check passed.

Needs: kamailio (+ sqlite, json, utils modules), sipp, python3 with jinja2.
Usage: scripts/sip-core-demo.py [--prefix 127.100.0] [--keep] [--load-users 6] [--no-failover]
                               [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[1]
PROFILE_DIR = REPO / "src" / "imsso" / "profiles" / "sip-core"
SCENARIOS = REPO / "tests" / "e2e" / "scenarios"

DOMAIN = "ims.test"
SIP_PORT = 5060
HTTP_PORT = 5080
SHM_MB = {"pcscf": 64, "scscf": 32}
CHILDREN = 2

# -------------------------------------------------------------------------------- reporting

RESULTS: list[tuple[str, bool, str]] = []
RPC_SEEN: dict[str, str] = {}        # method -> example params (JSON) that worked
VERBOSE = False


def check(name: str, ok: bool, detail: str = "") -> bool:
    RESULTS.append((name, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)
    return bool(ok)


def info(msg: str) -> None:
    print(f"      {msg}", flush=True)


def debug(msg: str) -> None:
    if VERBOSE:
        print(f"      . {msg}", flush=True)


# -------------------------------------------------------------------------------- units

@dataclass
class Unit:
    name: str
    role: str
    index: int
    address: str
    dir: Path = Path()
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_after: float | None = None
    log: Path = Path()

    @property
    def pid_file(self) -> Path:
        return self.dir / "kamailio.pid"

    @property
    def cfg(self) -> Path:
        return self.dir / "kamailio.cfg"

    def command(self) -> list[str]:
        return ["kamailio", "-f", str(self.cfg), "-P", str(self.pid_file), "-Y", str(self.dir),
                "-m", str(SHM_MB[self.role]), "-DD", "-E"]


@dataclass
class SCSCFRef:          # what the templates see in `scscfs`
    name: str
    address: str


@dataclass
class Demo:
    base: Path
    prefix: str
    auth_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    pcscf: Unit | None = None
    scscfs: list[Unit] = field(default_factory=list)      # running S-CSCFs
    in_dispatcher: list[Unit] = field(default_factory=list)
    all_units: list[Unit] = field(default_factory=list)
    subscribers: dict[str, str] = field(default_factory=dict)
    sipps: list[subprocess.Popen] = field(default_factory=list)

    def addr(self, host: int) -> str:
        return f"{self.prefix}.{host}"

    @property
    def db(self) -> Path:
        return self.base / "subscribers.sqlite"


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROFILE_DIR / "templates")),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(demo: Demo, unit: Unit, dmq_peers: list[str]) -> None:
    unit.dir.mkdir(parents=True, exist_ok=True)
    ctx = dict(
        unit=unit, sip_port=SIP_PORT, http_port=HTTP_PORT, domain=DOMAIN,
        unit_dir=str(unit.dir), subscribers_db=str(demo.db), auth_secret=demo.auth_secret,
        shm_mb=SHM_MB[unit.role], children=CHILDREN,
        scscfs=[SCSCFRef(u.name, u.address) for u in demo.in_dispatcher],
        dmq_peers=dmq_peers, pcscf=demo.pcscf)
    env = _env()
    if unit.role == "pcscf":
        unit.cfg.write_text(env.get_template("pcscf.cfg.j2").render(**ctx))
        write_dispatcher_list(demo)
    else:
        unit.cfg.write_text(env.get_template("scscf.cfg.j2").render(**ctx))


def write_dispatcher_list(demo: Demo) -> None:
    unit = demo.pcscf
    ctx = dict(unit=unit, sip_port=SIP_PORT, http_port=HTTP_PORT, domain=DOMAIN,
               unit_dir=str(unit.dir), scscfs=[SCSCFRef(u.name, u.address) for u in demo.in_dispatcher])
    text = _env().get_template("dispatcher.list.j2").render(**ctx)
    tmp = unit.dir / "dispatcher.list.tmp"
    tmp.write_text(text)
    os.replace(tmp, unit.dir / "dispatcher.list")     # atomic for the reader


def syntax_ok(unit: Unit) -> tuple[bool, str]:
    r = subprocess.run(["kamailio", "-c", "-f", str(unit.cfg)], capture_output=True, text=True)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "config file ok" in out, out.strip().splitlines()[-1] if out else ""


def _no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start(unit: Unit) -> None:
    unit.log = unit.dir / "kamailio.log"
    logf = open(unit.log, "ab")
    unit.started_at = time.monotonic()
    unit.proc = subprocess.Popen(unit.command(), stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_no_core, cwd=str(unit.dir))
    logf.close()


def stop(unit: Unit, timeout: float = 10.0) -> bool:
    """SIGTERM to the unit's process group, SIGKILL after timeout. True if it ended in time."""
    if unit.proc is None:
        return True
    pgid = unit.proc.pid        # own session: pgid == pid of the kamailio main process
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    clean = True
    try:
        unit.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        clean = False
    deadline = time.monotonic() + timeout
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_pids(pgid):
        clean = False
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            unit.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    return clean


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d))
    return pids


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def db_open_modes(pids: list[int], path: Path) -> set[str]:
    """How the processes hold `path` open: {"ro"}, {"rw"}, ... (from /proc/PID/fdinfo)."""
    modes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != str(path):
                    continue
                flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            except (OSError, IndexError):
                continue
            modes.add({0: "ro", 1: "wo", 2: "rw"}[int(flags, 8) & 3])
    return modes


def demo_kamailios(base: Path) -> list[int]:
    """kamailio processes whose command line names a file of this demo."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2:].split()[0]
        if cmd.startswith("kamailio") and str(base) in cmd and state != "Z":
            found.append(int(d))
    return found


# -------------------------------------------------------------------------------- SIP probe

def sip_options(target: str, local: str, timeout: float = 0.5) -> int | None:
    """Send one OPTIONS sip:target:5060 over UDP from `local`; the reply code or None."""
    tag = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((local, 0))
        lport = s.getsockname()[1]
        msg = (f"OPTIONS sip:{target}:{SIP_PORT} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {local}:{lport};branch=z9hG4bK{tag};rport\r\n"
               f"Max-Forwards: 70\r\n"
               f"From: <sip:probe@{local}>;tag={tag}\r\n"
               f"To: <sip:{target}:{SIP_PORT}>\r\n"
               f"Call-ID: {tag}@{local}\r\n"
               f"CSeq: 1 OPTIONS\r\n"
               f"Content-Length: 0\r\n\r\n")
        s.settimeout(timeout)
        s.sendto(msg.encode(), (target, SIP_PORT))
        try:
            data, _ = s.recvfrom(65535)
        except (socket.timeout, ConnectionRefusedError, OSError):
            return None
    m = re.match(rb"SIP/2\.0 (\d{3})", data)
    return int(m.group(1)) if m else None


def wait_options(unit: Unit, local: str, timeout: float = 20.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if unit.proc and unit.proc.poll() is not None:
            return None
        if sip_options(unit.address, local, 0.2) == 200:
            unit.ready_after = time.monotonic() - unit.started_at
            return unit.ready_after
        time.sleep(0.05)
    return None


# -------------------------------------------------------------------------------- management

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via a proxy
_RPC_ID = 0


class RpcError(Exception):
    pass


def rpc(addr: str, method: str, *params):
    global _RPC_ID
    _RPC_ID += 1
    body = {"jsonrpc": "2.0", "method": method, "id": _RPC_ID}
    if params:
        body["params"] = list(params)
    req = urllib.request.Request(f"http://{addr}:{HTTP_PORT}/RPC", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _OPENER.open(req, timeout=5) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:          # JSON-RPC errors come with an HTTP error status
        raw = e.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise RpcError(f"{method}{list(params)} -> HTTP {e.code} {raw[:200]!r}") from None
    if "error" in doc:
        raise RpcError(f"{method}{list(params)} -> {doc['error']}")
    RPC_SEEN.setdefault(method, json.dumps(body))
    debug(f"rpc {addr} {method} {list(params)}")
    return doc.get("result")


def http_get(addr: str, port: int, path: str) -> tuple[int, str]:
    try:
        with _OPENER.open(f"http://{addr}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def stat(addr: str, name: str) -> int:
    """One statistic by name (e.g. 'active_transactions'), via stats.get_statistics."""
    for line in rpc(addr, "stats.get_statistics", name):
        k, _, v = line.partition(" = ")
        if k.split(":", 1)[-1] == name:
            return int(v)
    raise RpcError(f"no statistic {name}")


def aors(addr: str) -> set[str]:
    res = rpc(addr, "ul.dump", "brief")
    out = set()
    for d in res.get("Domains", []):
        for a in d["Domain"].get("AoRs", []) or []:
            out.add(a["AoR"] if "AoR" in a else a["Info"]["AoR"])
    return out


def dispatcher_targets(pcscf: str) -> dict[str, str]:
    res = rpc(pcscf, "dispatcher.list")
    out = {}
    for rec in res.get("RECORDS", []):
        for t in rec["SET"].get("TARGETS", []):
            out[t["DEST"]["URI"]] = t["DEST"]["FLAGS"]
    return out


def everyone_everywhere(demo: Demo, users: list[str], timeout: float = 15.0) -> tuple[bool, str]:
    want = {f"{u}@{DOMAIN}" for u in users}
    deadline = time.monotonic() + timeout
    missing: dict[str, set[str]] = {}
    while True:
        missing = {}
        for u in demo.scscfs:
            try:
                have = aors(u.address)
            except Exception as e:       # noqa: BLE001 - report, retry
                have = set()
                debug(f"ul.dump {u.name}: {e}")
            if want - have:
                missing[u.name] = want - have
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing:
        return False, "missing: " + "; ".join(f"{k}: {sorted(v)}" for k, v in missing.items())
    return True, f"{len(want)} AORs on {', '.join(u.name for u in demo.scscfs)}"


# -------------------------------------------------------------------------------- sipp

@dataclass
class Sipp:
    name: str
    cmd: list[str]
    out: Path
    proc: subprocess.Popen

    def result(self, timeout: float) -> tuple[int | None, int, int]:
        """(exit code, successful calls, failed calls) after the process ends."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        text = self.out.read_text(errors="replace")
        ok = _last_counter(text, "Successful call")
        failed = _last_counter(text, "Failed call")
        return rc, ok, failed


def _last_counter(text: str, label: str) -> int:
    vals = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(vals[-1]) if vals else -1


def sipp(demo: Demo, name: str, scenario: str, user: str, password: str, host: int,
         extra: list[str], ooc: bool = False, expires: int = 3600, recv_timeout: int = 20000) -> Sipp:
    wd = demo.base / "sipp"
    wd.mkdir(exist_ok=True)
    port = 5100 + host
    cmd = ["sipp", f"{demo.pcscf.address}:{SIP_PORT}", "-sf", str(SCENARIOS / scenario)]
    if ooc:
        cmd += ["-oocsf", str(SCENARIOS / scenario)]
    cmd += ["-t", "u1", "-i", demo.addr(host), "-p", str(port), "-mp", str(port + 1000),
            "-s", user, "-au", user, "-ap", password,
            "-key", "domain", DOMAIN, "-key", "expires", str(expires), "-auth_uri", DOMAIN,
            "-nostdin", "-recv_timeout", str(recv_timeout),
            "-trace_err", "-error_file", str(wd / f"{name}.errors.log")] + extra
    out = wd / f"{name}.out"
    debug(" ".join(cmd))
    with open(out, "wb") as outf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=outf,
                                stderr=subprocess.STDOUT, cwd=str(wd), start_new_session=True)
    s = Sipp(name, cmd, out, proc)
    demo.sipps.append(proc)
    return s


def shown(cmd: list[str], demo: Demo) -> str:
    return " ".join(cmd).replace(str(demo.base), "$DEMO").replace(str(SCENARIOS), "tests/e2e/scenarios")


# -------------------------------------------------------------------------------- steps

def add_subscribers(demo: Demo, names: list[str]) -> None:
    con = sqlite3.connect(demo.db)
    with con:
        for n in names:
            pw = secrets.token_urlsafe(12)
            con.execute("INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
                        (n, DOMAIN, pw))
            demo.subscribers[n] = pw
    con.close()


def churn_subscribers(demo: Demo, seconds: float) -> int:
    """Insert and delete subscribers for `seconds` (the orchestrator writing while Kamailio reads)."""
    con = sqlite3.connect(demo.db)
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with con:
            con.execute("INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
                        (f"churn{n}", DOMAIN, secrets.token_hex(8)))
        with con:
            con.execute("DELETE FROM subscriber WHERE username = ?", (f"churn{n}",))
        n += 1
        time.sleep(0.01)
    con.close()
    return n


def start_scscf(demo: Demo, index: int) -> Unit | None:
    unit = Unit(name=f"scscf-{index}", role="scscf", index=index, address=demo.addr(19 + index))
    unit.dir = demo.base / unit.name
    peers = [u.address for u in demo.scscfs]
    render(demo, unit, peers)
    ok, last = syntax_ok(unit)
    check(f"{unit.name}: kamailio -c", ok, last)
    if not ok:
        return None
    start(unit)
    demo.all_units.append(unit)
    t = wait_options(unit, demo.addr(250))
    check(f"{unit.name}: answers OPTIONS", t is not None,
          f"{t * 1000:.0f} ms after start" if t is not None else f"see {unit.log}")
    if t is None:
        return None
    demo.scscfs.append(unit)
    return unit


def reload_dispatcher(demo: Demo, label: str) -> bool:
    write_dispatcher_list(demo)
    deadline = time.monotonic() + 8
    while True:         # reload_delta: one reload a second at most ("Ongoing reload")
        try:
            rpc(demo.pcscf.address, "dispatcher.reload")
            break
        except RpcError as e:
            if "Ongoing reload" not in str(e) or time.monotonic() > deadline:
                raise
            info(f"dispatcher.reload: {e}; again in 0.5 s")
            time.sleep(0.5)
    want = {f"sip:{u.address}:{SIP_PORT}" for u in demo.in_dispatcher}
    deadline = time.monotonic() + 10
    targets: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = dispatcher_targets(demo.pcscf.address)
        if set(targets) == want and all(f.startswith("A") for f in targets.values()):
            break
        time.sleep(0.3)
    return check(f"{label}: dispatcher.reload -> {len(want)} active S-CSCF(s)",
                 set(targets) == want and all(f.startswith("A") for f in targets.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(targets.items())))


def hashed_to(demo: Demo, users: list[str]) -> dict[str, str]:
    """user -> S-CSCF name the P-CSCF hashes the AOR to (dispatcher.hash + dispatcher.list order)."""
    order = [uri for uri in dispatcher_targets(demo.pcscf.address)]
    by_uri = {f"sip:{u.address}:{SIP_PORT}": u.name for u in demo.in_dispatcher}
    out = {}
    try:
        for user in users:
            res = rpc(demo.pcscf.address, "dispatcher.hash", len(order), user, DOMAIN)
            out[user] = by_uri.get(order[int(res["slot"])], "?")
    except Exception as e:      # noqa: BLE001 - informational
        info(f"dispatcher.hash: {e}")
        return {}
    return out


def registers(addr: str) -> int:
    return stat(addr, "accepted_regs")


def scale_in(demo: Demo, unit: Unit) -> None:
    p = demo.pcscf.address
    uri = f"sip:{unit.address}:{SIP_PORT}"
    # "d" (disabled): with ds_probing_mode 1 an "i"/"ip" state is undone by the next good keepalive
    rpc(p, "dispatcher.set_state", "d", 1, uri)
    t0 = time.monotonic()
    first = active = stat(unit.address, "active_transactions")
    while active != 0 and time.monotonic() - t0 < 30:
        time.sleep(0.1)
        active = stat(unit.address, "active_transactions")
    tm = rpc(unit.address, "tm.stats")
    check(f"scale-in {unit.name}: drained (tmx active_transactions = 0)", active == 0,
          f"{first} at disable, 0 after {time.monotonic() - t0:.1f} s; "
          f"tm.stats current {tm.get('current')}, total {tm.get('total')}")
    before = registers(unit.address)
    time.sleep(4)           # longer than ds_ping_interval (3 s): the state must survive a keepalive
    after = registers(unit.address)
    flags = dispatcher_targets(p).get(uri, "?")
    check(f"scale-in {unit.name}: dispatcher.set_state d holds", flags.startswith("D"), f"flags {flags}")
    check(f"scale-in {unit.name}: no new REGISTER once disabled", after == before,
          f"accepted_regs {before} -> {after}")
    demo.in_dispatcher.remove(unit)
    reload_dispatcher(demo, f"scale-in {unit.name}")
    clean = stop(unit)
    demo.scscfs.remove(unit)
    check(f"scale-in {unit.name}: stopped", clean and not group_pids(unit.proc.pid))
    # the other S-CSCFs would replicate to it (and time out) until DMQ notices: tell them now
    gone = f"sip:{unit.address}:{SIP_PORT}"
    for u in demo.scscfs:
        seen = {(n["host"], n.get("status")) for n in rpc(u.address, "dmq.list_nodes") if not n.get("local")}
        debug(f"{u.name} dmq nodes before dmq.remove: {sorted(seen)}")
        rpc(u.address, "dmq.remove", gone)
        left = {n["host"] for n in rpc(u.address, "dmq.list_nodes")}
        check(f"scale-in {unit.name}: dmq.remove on {u.name}", unit.address not in left,
              f"DMQ nodes now: {', '.join(sorted(left))}")


def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="imsso-sip-core-demo-"))
    demo = Demo(base=base, prefix=args.prefix)
    info(f"work folder {base}")
    load: list[Sipp] = []
    try:
        _run(demo, args, load)
    finally:
        # ----- teardown: every sipp, every kamailio process group -----
        for s in load:
            if s.proc.poll() is None:
                s.proc.kill()
        for p in demo.sipps:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for u in demo.all_units:
            if u.proc is not None and (u.proc.poll() is None or group_pids(u.proc.pid)):
                stop(u, timeout=5)
        time.sleep(0.3)
        left = demo_kamailios(base)
        groups = [u.name for u in demo.all_units if u.proc is not None and group_pids(u.proc.pid)]
        check("teardown: no kamailio process of the demo remains", not left and not groups,
              f"left: {left} {groups}" if left or groups else f"{len(demo.all_units)} units stopped")
        if args.keep:
            info(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _run(demo: Demo, args: argparse.Namespace, load: list[Sipp]) -> None:
    for tool in ("kamailio", "sipp"):
        if not check(f"{tool} on PATH", shutil.which(tool) is not None):
            return
    probe = demo.addr(250)

    # the addresses must be free (no other demo running)
    for host in (10, 20, 21, 22):
        busy = sip_options(demo.addr(host), probe, 0.2) is not None
        if not check(f"{demo.addr(host)}:{SIP_PORT} is free", not busy):
            return

    # ----- subscribers -----
    con = sqlite3.connect(demo.db)
    con.executescript((PROFILE_DIR / "subscribers.sql").read_text())
    con.executescript((PROFILE_DIR / "subscribers.sql").read_text())     # idempotent
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.close()
    info(f"subscribers database journal_mode={mode}")
    add_subscribers(demo, ["alice", "bob"])
    check("subscribers.sql applied twice, alice and bob added", True, str(demo.db))

    # ----- S-CSCF 1, then the P-CSCF -----
    demo.pcscf = Unit(name="pcscf-1", role="pcscf", index=1, address=demo.addr(10))
    demo.pcscf.dir = demo.base / demo.pcscf.name
    if start_scscf(demo, 1) is None:
        return
    demo.in_dispatcher = list(demo.scscfs)
    pc = demo.pcscf
    render(demo, pc, [])
    ok, last = syntax_ok(pc)
    if not check("pcscf-1: kamailio -c", ok, last):
        return
    start(pc)
    demo.all_units.append(pc)
    t = wait_options(pc, probe)
    if not check("pcscf-1: answers OPTIONS", t is not None,
                 f"{t * 1000:.0f} ms after start" if t is not None else f"see {pc.log}"):
        return
    info("command: " + shown(pc.command(), demo))

    # ----- management endpoints -----
    up = rpc(pc.address, "core.uptime")
    check("HTTP POST /RPC core.uptime", isinstance(up, dict) and "uptime" in up, json.dumps(up))
    code, text = http_get(pc.address, HTTP_PORT, "/metrics")
    metrics = sorted({ln.split()[0] for ln in text.splitlines() if ln.startswith("kamailio_")})
    check("HTTP GET /metrics (Prometheus text)", code == 200 and len(metrics) > 20, f"{len(metrics)} metrics")
    code, _ = http_get(pc.address, HTTP_PORT, "/nothing")
    check("HTTP GET /nothing -> 404", code == 404, str(code))
    code, _ = http_get(pc.address, SIP_PORT, "/RPC")
    check(f"HTTP on the SIP port {SIP_PORT} refused", code == 403, str(code))
    ds = dispatcher_targets(pc.address)
    check("dispatcher.list: scscf-1 active", ds.get(f"sip:{demo.scscfs[0].address}:{SIP_PORT}", "").startswith("A"),
          json.dumps(ds))

    # ----- registrations -----
    regs = {u: sipp(demo, f"register-{u}", "register.xml", u, demo.subscribers[u], 101 + i,
                    ["-m", "1", "-timeout", "30s"]) for i, u in enumerate(["alice", "bob"])}
    for u, s in regs.items():
        rc, ok, failed = s.result(40)
        check(f"REGISTER {u} (401, then 200 with digest)", rc == 0 and ok == 1 and failed == 0,
              f"exit {rc}, {ok} ok, {failed} failed")
    info("sipp: " + shown(regs["alice"].cmd, demo))
    bad = sipp(demo, "register-wrong-password", "register.xml", "alice", "not-" + demo.subscribers["alice"],
               109, ["-m", "1", "-timeout", "15s"], recv_timeout=3000)
    rc, ok, failed = bad.result(30)
    check("REGISTER with a wrong password fails", rc not in (0, None) and ok == 0, f"exit {rc}")
    ok_, detail = everyone_everywhere(demo, ["alice", "bob"])
    check("ul.dump: alice and bob registered", ok_, detail)

    # ----- a call -----
    call(demo, "call alice -> bob", 111, 112)

    # ----- subscribers added while running + steady registration load -----
    load_users = [f"load{i}" for i in range(1, args.load_users + 1)]
    add_subscribers(demo, load_users)
    for i, u in enumerate(load_users):
        load.append(sipp(demo, f"load-{u}", "register.xml", u, demo.subscribers[u], 121 + i,
                         ["-m", "1000000", "-r", str(args.rate), "-rp", "1000", "-l", "1"],
                         expires=60, recv_timeout=10000))
    info("load: " + shown(load[0].cmd, demo))
    users = ["alice", "bob"] + load_users
    ok_, detail = everyone_everywhere(demo, users)
    check("subscribers added live: load users registered", ok_, detail)

    # ----- scale out 1 -> 3 -----
    for idx in (2, 3):
        unit = start_scscf(demo, idx)
        if unit is None:
            return
        ok_, detail = everyone_everywhere(demo, users, timeout=20)
        check(f"scale-out {unit.name}: DMQ full sync on join", ok_, detail)
    before = {u.name: registers(u.address) for u in demo.scscfs}
    demo.in_dispatcher = list(demo.scscfs)
    if not reload_dispatcher(demo, "scale-out 1 -> 3"):
        return
    expected = hashed_to(demo, load_users)
    churn = churn_subscribers(demo, args.settle)       # writes to the DB under load
    after = {u.name: registers(u.address) for u in demo.scscfs}
    new = {n: after[n] - before[n] for n in after}
    info(f"meanwhile {churn} subscriber insert+delete pairs written to {demo.db.name}")
    check("scale-out: the new S-CSCFs take REGISTERs", new["scscf-2"] + new["scscf-3"] > 0,
          "REGISTERs accepted since reload: " + ", ".join(f"{k} {v}" for k, v in new.items()))
    if expected:
        busy = {n for n, v in new.items() if v > 0}
        check("scale-out: REGISTERs land where dispatcher.hash says", busy == set(expected.values()),
              ", ".join(f"{u}->{n}" for u, n in sorted(expected.items())))
    nodes = rpc(demo.scscfs[0].address, "dmq.list_nodes")
    peers = {n["host"] for n in nodes if n.get("status") == "active"}
    check("scale-out: dmq.list_nodes on scscf-1 shows the 3 S-CSCFs",
          {u.address for u in demo.scscfs} <= peers, ", ".join(sorted(peers)))
    modes = set()
    for u in demo.scscfs:
        modes |= db_open_modes(group_pids(u.proc.pid), demo.db)
    check("S-CSCFs hold the subscribers database read-only", modes == {"ro"}, f"open modes {sorted(modes)}")
    for u in [demo.pcscf] + demo.scscfs:
        pids = group_pids(u.proc.pid)
        info(f"{u.name}: PSS {pss_kb(pids) / 1024:.1f} MiB over {len(pids)} processes (under load, 3 S-CSCFs)")
    ok_, detail = everyone_everywhere(demo, users)
    check("scale-out 1 -> 3: every user on every S-CSCF", ok_, detail)
    check_load_running(load)

    # ----- scale in 3 -> 1 -----
    for unit in (demo.scscfs[2], demo.scscfs[1]):
        scale_in(demo, unit)
        time.sleep(args.settle)
        ok_, detail = everyone_everywhere(demo, users)
        check(f"scale-in {unit.name}: every user on every remaining S-CSCF", ok_, detail)
        check_load_running(load)

    # ----- unplanned loss: an S-CSCF killed while in the dispatcher set -----
    if args.failover:
        unit = start_scscf(demo, 2)
        if unit is None:
            return
        ok_, detail = everyone_everywhere(demo, users, timeout=20)
        check(f"failover: {unit.name} back, DMQ full sync on join", ok_, detail)
        demo.in_dispatcher = list(demo.scscfs)
        reload_dispatcher(demo, "failover: 1 -> 2")
        expected = hashed_to(demo, load_users)
        time.sleep(2)
        before = registers(unit.address)
        os.killpg(unit.proc.pid, signal.SIGKILL)
        unit.proc.wait()
        info(f"{unit.name} killed (SIGKILL) while active; its users: "
             + ", ".join(sorted(u for u, n in expected.items() if n == unit.name)))
        demo.scscfs.remove(unit)
        time.sleep(max(args.settle, 8.0))      # > fr_timer (3 s) + a keepalive round
        uri = f"sip:{unit.address}:{SIP_PORT}"
        flags = dispatcher_targets(demo.pcscf.address).get(uri, "?")
        check(f"failover: {unit.name} marked down by the P-CSCF", flags.startswith(("I", "T")), f"flags {flags}")
        check_load_running(load)
        ok_, detail = everyone_everywhere(demo, users)
        check("failover: every user on the remaining S-CSCF", ok_, detail)
        info(f"{unit.name} had accepted {before} REGISTERs before the kill")
        demo.in_dispatcher.remove(unit)
        reload_dispatcher(demo, f"failover: {unit.name} removed")
        for u in demo.scscfs:
            rpc(u.address, "dmq.remove", f"sip:{unit.address}:{SIP_PORT}")

    # ----- a call after scaling -----
    call(demo, "call alice -> bob after scaling", 113, 114)

    # ----- stop the load: no REGISTER may have failed -----
    total_ok = total_failed = 0
    all_ok = True
    for s in load:
        s.proc.send_signal(signal.SIGUSR1)       # sipp: stop making calls, finish, exit
    for s in load:
        rc, ok, failed = s.result(60)
        total_ok += max(ok, 0)
        total_failed += max(failed, 0)
        all_ok &= rc == 0 and failed == 0 and ok > 0
        if rc != 0 or failed != 0:
            info(f"{s.name}: exit {rc}, {ok} ok, {failed} failed; see {s.out}")
    check("registration load: no REGISTER failed", all_ok,
          f"{len(load)} users, {total_ok} registrations, {total_failed} failed")

    # ----- figures -----
    for u in [demo.pcscf] + demo.scscfs:
        info(f"{u.name}: OPTIONS answered {u.ready_after * 1000:.0f} ms after start, "
             f"PSS {pss_kb(group_pids(u.proc.pid)) / 1024:.1f} MiB over {len(group_pids(u.proc.pid))} processes")
    code, text = http_get(demo.pcscf.address, HTTP_PORT, "/metrics")
    p_metrics = sorted({ln.split()[0] for ln in text.splitlines() if ln.startswith("kamailio_")})
    code, text = http_get(demo.scscfs[0].address, HTTP_PORT, "/metrics")
    s_metrics = sorted({ln.split()[0] for ln in text.splitlines() if ln.startswith("kamailio_")})
    interesting = re.compile(r"(active_transactions|inuse_transactions|registered_users|location_contacts|"
                             r"accepted_regs|rejected_regs|rcv_requests_(register|invite)|shmem_(used|real_used|free)_size|"
                             r"dmq|dispatcher|2xx_transactions|4xx_transactions|5xx_transactions|sent_replies)")
    info("metrics (P-CSCF): " + ", ".join(m for m in p_metrics if interesting.search(m)))
    info("metrics (S-CSCF): " + ", ".join(m for m in s_metrics if interesting.search(m)))
    info(f"metrics count: P-CSCF {len(p_metrics)}, S-CSCF {len(s_metrics)}")
    info("JSON-RPC calls that worked (POST http://ADDR:5080/RPC):")
    for m, body in sorted(RPC_SEEN.items()):
        info(f"  {body}")


def call(demo: Demo, label: str, caller_host: int, callee_host: int) -> None:
    bob = sipp(demo, f"{label.replace(' ', '_').replace('>', '')}-bob", "uas_call.xml", "bob",
               demo.subscribers["bob"], callee_host, ["-m", "1", "-timeout", "60s"], ooc=True)
    want = f"{demo.addr(callee_host)}:{5100 + callee_host}"
    deadline = time.monotonic() + 15
    registered = False
    while time.monotonic() < deadline and not registered:
        try:
            res = rpc(demo.scscfs[0].address, "ul.lookup", "location", f"bob@{DOMAIN}")
            registered = any(want in c["Contact"]["Address"] for c in res.get("Contacts", []))
        except Exception:       # noqa: BLE001 - not yet there
            pass
        time.sleep(0.2)
    if not check(f"{label}: callee registered (ul.lookup)", registered, want):
        return
    alice = sipp(demo, f"{label.replace(' ', '_').replace('>', '')}-alice", "uac_call.xml", "alice",
                 demo.subscribers["alice"], caller_host,
                 ["-m", "1", "-timeout", "60s", "-key", "callee", "bob", "-d", "1000"])
    rc_a, ok_a, f_a = alice.result(70)
    rc_b, ok_b, f_b = bob.result(70)
    check(f"{label}: caller (407, 180, 200, ACK, BYE, 200)", rc_a == 0 and ok_a == 1, f"exit {rc_a}")
    check(f"{label}: callee (INVITE, 180, 200, ACK, BYE, 200)", rc_b == 0 and ok_b == 1, f"exit {rc_b}")
    if label == "call alice -> bob":
        info("caller: " + shown(alice.cmd, demo))
        info("callee: " + shown(bob.cmd, demo))


def check_load_running(load: list[Sipp]) -> None:
    dead = [s.name for s in load if s.proc.poll() is not None]
    fails = {s.name: _last_counter(s.out.read_text(errors="replace"), "Failed call") for s in load}
    bad = {k: v for k, v in fails.items() if v > 0}
    check("registration load still running, no failure so far", not dead and not bad,
          f"ended: {dead}, failed: {bad}" if dead or bad else f"{len(load)} sipp")


def main() -> int:
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default="127.100.0", help="first three octets of the loopback addresses")
    ap.add_argument("--load-users", type=int, default=6)
    ap.add_argument("--no-failover", dest="failover", action="store_false",
                    help="skip the unplanned-loss step (an S-CSCF killed while active)")
    ap.add_argument("--rate", type=float, default=2.0, help="registrations per second per load user")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds of load after each scaling step")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose
    if not args.prefix.startswith("127."):
        print("--prefix must be in 127.0.0.0/8", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        run(args)
    except Exception as e:      # noqa: BLE001 - a crash is a failed check
        check("demo ran without error", False, f"{type(e).__name__}: {e}")
    failed = [r for r in RESULTS if not r[1]]
    print(f"\n{len(RESULTS) - len(failed)} passed, {len(failed)} failed, {time.monotonic() - t0:.0f} s")
    for name, _, detail in failed:
        print(f"FAILED: {name} {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
