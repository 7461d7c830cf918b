"""SIGKILL the orchestrator in the middle of a deploy, start it again: it converges, forgets nothing."""

from __future__ import annotations

import psutil
import pytest

import pg
from harness import Server, Sipp, in_location, wait_for


def test_sigkill_mid_deploy_then_restart_converges(fresh_server):
    fresh_server.start()
    api = fresh_server.api("crash")
    created = api.post("/v1/instances", json={"name": "crash", "sizes": {"scscf": 2}})
    assert created.status_code == 202
    op_id = created.json()["operation"]["id"]

    def some_unit_started():
        op = api.get(f"/v1/operations/{op_id}").json()
        return op if any(s["name"].startswith("start ") and s["state"] == "done" for s in op["steps"]) else None

    seen = wait_for(some_unit_started, 60, "the first unit to start", interval=0.005)
    fresh_server.kill()
    assert seen["state"] == "running", "the deploy was still running when the orchestrator died"
    survivors = fresh_server.unit_processes()
    assert survivors, "units started before the crash outlive the orchestrator"

    fresh_server.start()
    api = fresh_server.api("crash")
    last = api.wait_operation(op_id, timeout=120)
    assert last["state"] == "succeeded", last
    deploy = api.get(f"/v1/operations/{op_id}").json()
    assert any(s["name"] == "resumed after a restart of the orchestrator" for s in deploy["steps"])
    instance = api.get("/v1/instances/crash").json()
    assert instance["state"] == "active"
    assert sorted(u["name"] for u in instance["units"]) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2"]
    assert all(u["state"] == "running" for u in instance["units"])
    # No unit was started twice: one main process per unit folder, and the survivors were adopted.
    mains = _main_processes(fresh_server)
    assert sorted(mains) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2"], mains
    assert {p.pid for p in survivors if p.pid in {m.pid for m in mains.values()}}
    events = [e["message"] for e in api.get("/v1/instances/crash/events").json()]
    assert any("resumed after a restart" in m for m in events)

    dispose = api.delete("/v1/instances/crash")
    assert api.wait_operation(dispose.json()["id"])["state"] == "succeeded"
    wait_for(lambda: fresh_server.unit_processes() == [], 10, "no unit process left")


def test_restart_adopts_running_units(fresh_server):
    fresh_server.start()
    api = fresh_server.api("adopt")
    instance = api.create("adopt")
    pids = {u["name"]: u["pid"] for u in instance["units"]}
    fresh_server.stop()
    assert all(psutil.pid_exists(pid) for pid in pids.values()), "units outlive the orchestrator"
    fresh_server.start()
    api = fresh_server.api("adopt")
    scaled = api.patch("/v1/instances/adopt", json={"sizes": {"scscf": 2}})
    assert api.wait_operation(scaled.json()["id"])["state"] == "succeeded"
    after = {u["name"]: u["pid"] for u in api.get("/v1/instances/adopt").json()["units"]}
    assert {k: after[k] for k in pids} == pids, "the running units were adopted, not restarted"
    dispose = api.delete("/v1/instances/adopt")
    assert api.wait_operation(dispose.json()["id"])["state"] == "succeeded"
    assert fresh_server.unit_processes() == []


def _main_processes(server) -> dict[str, psutil.Process]:
    """Per unit folder, the process whose parent is not of the same unit."""
    procs = server.unit_processes()
    by_unit: dict[str, list[psutil.Process]] = {}
    for proc in procs:
        unit = next(part for part in proc.cmdline() if "/units/" in part).split("/units/")[1].split("/")[0]
        by_unit.setdefault(unit, []).append(proc)
    mains = {}
    for unit, members in by_unit.items():
        pids = {p.pid for p in members}
        leaders = [p for p in members if p.ppid() not in pids]
        assert len(leaders) == 1, f"{unit} has {len(leaders)} main processes"
        mains[unit] = leaders[0]
    return mains


def test_a_dead_unit_is_shown_failed_and_provision_brings_it_back_in_sync(server, tmp_path):
    api = server.api("dying")
    instance = api.create("dying", sizes={"scscf": 2})
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    for n, sub in enumerate(api.subscribers("dying")):
        reg = Sipp(
            tmp_path,
            pcscf,
            "register.xml",
            sub["user"],
            sub["password"],
            instance["domain"],
            "127.152.0.1",
            5400 + 10 * n,
            "-key",
            "expires",
            "600",
            "-m",
            "1",
            "-recv_timeout",
            "5000",
        )
        assert reg.run() == 0, reg.output()
    victim = next(u for u in instance["units"] if u["name"] == "scscf-1")
    psutil.Process(victim["pid"]).kill()  # the main process only: its children linger

    def shown_failed():
        units = api.get("/v1/instances/dying").json()["units"]
        return next(u for u in units if u["name"] == "scscf-1")["state"] == "failed"

    wait_for(shown_failed, 15, "scscf-1 to be shown failed")
    events = [e["message"] for e in api.get("/v1/instances/dying/events").json()]
    assert "scscf-1 is not running" in events
    again = api.post("/v1/instances/dying/actions/provision")
    op = api.wait_operation(again.json()["id"])
    assert op["state"] == "succeeded", (op["error"], [(s["name"], s["detail"]) for s in op["steps"]])
    units = {u["name"]: u for u in api.get("/v1/instances/dying").json()["units"]}
    assert units["scscf-1"]["state"] == "running" and units["scscf-1"]["pid"] != victim["pid"]
    # The new scscf-1 joined scscf-2 and got the registrations made before its death.
    wait_for(
        lambda: in_location(victim["address"], "alice@") and in_location(victim["address"], "bob@"),
        15,
        "the restarted S-CSCF to sync the location table",
    )
    assert api.wait_operation(api.delete("/v1/instances/dying").json()["id"])["state"] == "succeeded"


@pytest.mark.postgres
def test_the_service_on_postgresql_keeps_its_instances_across_restarts(tmp_path, postgres_url):
    with pg.fresh_database(postgres_url) as url:
        srv = Server(tmp_path / "imsso", "127.0.0.1:8055", "127.105.0.0/16", env={"IMSSO_DATABASE_URL": url})
        srv.start()
        try:
            api = srv.api("pg")
            instance = api.create("pg")
            srv.stop()
            srv.start()
            api = srv.api("pg")
            again = api.get("/v1/instances/pg").json()
            assert again["id"] == instance["id"] and again["state"] == "active"
            assert {u["pid"] for u in again["units"]} == {u["pid"] for u in instance["units"]}
            assert api.wait_operation(api.delete("/v1/instances/pg").json()["id"])["state"] == "succeeded"
            assert srv.unit_processes() == []
        finally:
            srv.stop()
            srv.kill_units()
