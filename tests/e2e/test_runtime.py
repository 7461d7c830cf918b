"""The runtime loop with real Kamailio and sipp: SIP load scales the S-CSCFs out and, once it stops,
back in; a killed S-CSCF is healed; every decision is an event with its figures; /metrics."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from harness import Server, Sipp, in_location, wait_for

USERS = [f"auto{n}" for n in range(1, 5)]
# Small figures so a test sees the whole cycle in seconds: out above 4 REGISTER/s per S-CSCF held
# for 3 s, in below 1/s held for 4 s, 5 s of cooldown, at most 2 S-CSCFs.
POLICY = {
    "imsso.policy.scscf-out.above": "4",
    "imsso.policy.scscf-out.window": "3",
    "imsso.policy.scscf-out.cooldown": "5",
    "imsso.policy.scscf-in.below": "1",
    "imsso.policy.scscf-in.window": "4",
    "imsso.policy.scscf-in.cooldown": "5",
    "imsso.scale.scscf.max": "2",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """An orchestrator whose runtime loop runs (every second, as by default)."""
    srv = Server(
        tmp_path_factory.mktemp("imsso"), "127.0.0.1:8058", "127.108.0.0/16", env={"IMSSO_RUNTIME_INTERVAL": "1"}
    ).start()
    yield srv
    srv.stop()
    srv.kill_units()


def scscfs(api, name: str) -> list[dict]:
    units = api.get(f"/v1/instances/{name}").json()["units"]
    return sorted((u for u in units if u["role"] == "scscf"), key=lambda u: u["index"])


def decisions(api, name: str) -> list[dict]:
    return api.get(f"/v1/instances/{name}/events", params={"kind": "decision"}).json()


def test_sip_load_scales_out_then_back_in_after_the_cooldown(live, tmp_path):
    api = live.api("auto")
    instance = api.create("auto", attributes=POLICY)
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    for user in USERS:
        assert (
            api.post("/v1/instances/auto/subscribers", json={"user": user, "password": f"pw-{user}-1"}).status_code
            == 201
        )
    # Each user registers 3 times a second (REGISTER, 401, REGISTER, 200): about 24 REGISTER/s.
    loads = [
        Sipp(
            tmp_path,
            pcscf,
            "register.xml",
            user,
            f"pw-{user}-1",
            instance["domain"],
            "127.158.0.1",
            5300 + 10 * n,
            "-key",
            "expires",
            "60",
            "-r",
            "3",
            "-m",
            "75",
            "-recv_timeout",
            "5000",
        ).start()
        for n, user in enumerate(USERS)
    ]
    try:
        wait_for(
            lambda: len(scscfs(api, "auto")) == 2 and all(u["state"] == "running" for u in scscfs(api, "auto")),
            30,
            "a second S-CSCF started by the runtime",
        )
        second = scscfs(api, "auto")[1]["address"]
        wait_for(
            lambda: all(in_location(second, f"{u}@") for u in USERS), 20, "the new S-CSCF holding every registration"
        )
        told = decisions(api, "auto")
        scale = next(e for e in told if e["data"].get("action") == "scale")
        assert scale["data"]["policy"] == "scscf-out" and scale["data"]["target"] == 2
        assert scale["data"]["value"] > 4 and scale["data"]["metric"] == "sip.registers_rate"
        assert set(scale["data"]["values"]) == {"scscf-1"}
        assert "threshold crossed" in scale["message"] and "scscf 1 -> 2" in scale["message"]
        ops = api.get("/v1/instances/auto/operations").json()
        assert any(o["kind"] == "scale" and o["params"].get("cause") == "policy scscf-out" for o in ops)
        # Still above the threshold with two: held at the bound, and told so once.
        wait_for(
            lambda: any("at bound" in e["message"] for e in decisions(api, "auto")),
            20,
            "the decision to hold at the maximum",
        )
        for load in loads:
            assert load.wait(60) == 0, load.output()  # no REGISTER failed while scaling out
    finally:
        for load in loads:
            load.stop()
    wait_for(lambda: len(scscfs(api, "auto")) == 1, 40, "the runtime scaling in once the load stopped")
    down = next(e for e in reversed(decisions(api, "auto")) if e["data"].get("action") == "scale")
    assert down["data"]["policy"] == "scscf-in" and down["data"]["target"] == 1
    assert down["data"]["value"] < 1
    events = [e["message"] for e in api.get("/v1/instances/auto/events").json()]
    assert any("drain scscf-2" in m for m in events)  # left routing before it stopped
    # The scale-in may still be finishing (the unit is gone, the configs are being pushed).
    wait_for(lambda: not api.get("/v1/instances/auto").json()["current_operation"], 30, "the scale-in")
    assert api.wait_operation(api.delete("/v1/instances/auto").json()["id"])["state"] == "succeeded"


def test_a_killed_s_cscf_is_healed_and_takes_registrations_again(live, tmp_path):
    api = live.api("heal")
    instance = api.create("heal", sizes={"scscf": 2})
    victim = next(u for u in instance["units"] if u["name"] == "scscf-1")
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced():
        unit = next(u for u in api.get("/v1/instances/heal").json()["units"] if u["name"] == "scscf-1")
        return unit if unit["state"] == "running" and unit["pid"] != victim["pid"] else None

    healed = wait_for(replaced, 30, "scscf-1 replaced by the runtime")
    assert healed["address"] == victim["address"]
    told = [e["message"] for e in decisions(api, "heal")]
    assert any(m.startswith("heal: scscf-1 died") for m in told), told
    wait_for(
        lambda: any(
            o["kind"] == "heal" and o["state"] == "succeeded" for o in api.get("/v1/instances/heal/operations").json()
        ),
        30,
        "the heal to end",
    )
    assert api.get("/v1/instances/heal").json()["state"] == "active"
    # The replacement serves: a subscriber registers through the P-CSCF.
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    sub = api.subscribers("heal")[0]
    sipp = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        sub["user"],
        sub["password"],
        instance["domain"],
        "127.158.0.2",
        5400,
        "-key",
        "expires",
        "60",
        "-m",
        "1",
    )
    assert sipp.run(30) == 0, sipp.output()
    assert api.wait_operation(api.delete("/v1/instances/heal").json()["id"])["state"] == "succeeded"


def test_metrics_and_decisions_are_visible(live):
    api = live.api("seen")
    api.create("default", attributes={"imsso.policy.scscf-in.window": "2"})  # OCCI's default instance
    wait_for(
        lambda: (
            api.get("/v1/instances/default/metrics").json().get("scscf-1", {}).get("sip.registers_rate") is not None
        ),
        20,
        "figures of scscf-1",
    )
    figures = api.get("/v1/instances/default/metrics").json()
    assert figures["scscf-1"]["process.rss_mb"] > 1 and "sip.registered_users" in figures["scscf-1"]
    # At its minimum with no load: the scale-in policy holds, and says so.
    wait_for(
        lambda: any("scscf-in: no action, at bound" in e["message"] for e in decisions(api, "default")),
        20,
        "the hold at the minimum",
    )
    told = next(e for e in decisions(api, "default") if "at bound" in e["message"])
    assert told["data"]["value"] < 1 and told["data"]["threshold"] == 20
    occi = httpx.get(f"{live.url}/orchestrator/default", headers={"X-Auth-Token": api.token, "X-Tenant-Name": "seen"})
    assert 'imsso.decision.scscf-in="scscf-in: no action, at bound' in occi.text
    r = api.get("/v1/instances/default/events", params={"kind": "decision"})
    assert r.status_code == 200 and all(e["kind"] == "decision" for e in r.json())
    text = httpx.get(f"{live.url}/metrics").text
    assert 'imsso_operations_total{kind="deploy",result="succeeded"}' in text
    assert 'imsso_units{role="scscf",state="running"}' in text
    assert 'imsso_decisions_total{action="hold",policy="scscf-in"}' in text
    assert "imsso_operation_duration_seconds_bucket" in text
    api.wait_operation(api.delete("/v1/instances/default").json()["id"])
