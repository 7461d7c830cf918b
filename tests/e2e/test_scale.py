"""Scale the S-CSCFs 1 -> 3 -> 1 while subscribers keep registering: no REGISTER fails, and every
subscriber stays in the location table of every S-CSCF (replicated over DMQ)."""

from __future__ import annotations

import psutil

from harness import Sipp, in_location, wait_for

USERS = [f"load{n}" for n in range(1, 5)]


def test_scale_out_and_in_under_registration_load_loses_nothing(server, tmp_path):
    api = server.api("scaling")
    instance = api.create("scaling", sizes={"scscf": 1})
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    passwords = {}
    for user in USERS:
        passwords[user] = f"pw-{user}-secret"
        added = api.post("/v1/instances/scaling/subscribers", json={"user": user, "password": passwords[user]})
        assert added.status_code == 201, added.text
    # Each user re-registers 3 times a second for 20 s: the whole scaling happens under this load.
    loads = [
        Sipp(
            tmp_path,
            pcscf,
            "register.xml",
            user,
            passwords[user],
            instance["domain"],
            "127.151.0.1",
            5200 + 10 * n,
            "-key",
            "expires",
            "60",
            "-r",
            "3",
            "-m",
            "60",
            "-recv_timeout",
            "5000",
        ).start()
        for n, user in enumerate(USERS)
    ]
    try:
        scscf1 = _scscfs(api)[0]
        pcscf_pid = _pid(api, "pcscf-1")
        wait_for(lambda: all(in_location(scscf1, f"{u}@") for u in USERS), 20, "first registrations")

        _scale(api, 3)
        scscfs = _scscfs(api)
        assert len(scscfs) == 3
        for address in scscfs:  # a new S-CSCF has every registration, synced on join
            wait_for(
                lambda: all(in_location(address, f"{u}@") for u in USERS),
                20,
                f"all users in the location table of {address}",
            )

        _scale(api, 1)
        assert _scscfs(api) == [scscf1]
        assert all(in_location(scscf1, f"{u}@") for u in USERS)
        assert all(load.proc.poll() is None for load in loads), "the load ran through the scaling"
        assert _pid(api, "pcscf-1") == pcscf_pid, "the P-CSCF was reloaded, not restarted"
        for load in loads:
            assert load.wait(60) == 0, load.output()  # every REGISTER got its 200
    finally:
        for load in loads:
            load.stop()
    events = [e["message"] for e in api.get("/v1/instances/scaling/events").json()]
    assert any("drain scscf-3" in m for m in events) and any("drain scscf-2" in m for m in events)
    assert api.wait_operation(api.delete("/v1/instances/scaling").json()["id"])["state"] == "succeeded"


def _scale(api, count: int) -> None:
    response = api.patch("/v1/instances/scaling", json={"sizes": {"scscf": count}})
    assert response.status_code == 202, response.text
    op = api.wait_operation(response.json()["id"])
    assert op["state"] == "succeeded", (op["error"], op["steps"])


def _pid(api, unit: str) -> int:
    units = api.get("/v1/instances/scaling").json()["units"]
    pid = next(u["pid"] for u in units if u["name"] == unit)
    assert psutil.pid_exists(pid)
    return pid


def _scscfs(api) -> list[str]:
    units = api.get("/v1/instances/scaling").json()["units"]
    return [u["address"] for u in sorted(units, key=lambda u: u["index"]) if u["role"] == "scscf"]
