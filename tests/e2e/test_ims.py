"""The 3GPP profile `ims` with real Kamailio IMS modules, our HSS and sipp: REGISTER with SIP Digest
and with AKA, a call found by LIR at the I-CSCF, de-registration, an unknown subscriber refused."""

from __future__ import annotations

import os
import signal
import zlib

import httpx

from harness import DNS_PORT, SCENARIOS, Sipp, wait_for
from imsso.drivers.local import probes
from imsso.hss.milenage import opc_from_op

K = b"imssoTestKey0016"  # as register_aka.xml has them (sipp takes raw 16-byte strings)
OP = b"imssoTestOP00016"
AMF = b"AM"
CLIENT = "127.157.0.1"


def sipp(tmp_path, pcscf: str, scenario: str, user: str, password: str, port: int, *extra: str) -> Sipp:
    """A UE of the IMS: its private identity is user@domain."""
    return Sipp(
        tmp_path,
        pcscf,
        scenario,
        user,
        password,
        "ims.test",
        CLIENT,
        port,
        "-au",
        f"{user}@ims.test",
        "-key",
        "expires",
        "300",
        "-recv_timeout",
        "10000",
        *extra,
    )


def hss_status(instance) -> dict:
    hss = next(u["address"] for u in instance["units"] if u["role"] == "hss")
    return httpx.get(f"http://{hss}:3870/status", timeout=5).json()


def test_ims_registers_calls_and_refuses(server, tmp_path):
    api = server.api("ims3gpp")
    instance = api.create("core", profile="ims", sizes={"scscf": 2})
    roles = sorted(u["role"] for u in instance["units"])
    assert roles == ["dns", "hss", "icscf", "pcscf", "scscf", "scscf"]
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    _check_dns(instance)
    passwords = {s["user"]: s["password"] for s in api.subscribers("core")}

    # More subscribers, so that two of them sit on different S-CSCFs (the HSS picks by crc32).
    for user in ("dave", "erin", "frank"):
        passwords[user] = f"pw-{user}-secret"
        assert (
            api.post("/v1/instances/core/subscribers", json={"user": user, "password": passwords[user]}).status_code
            == 201
        )
    scscfs = hss_status(instance)["scscfs"]
    assert len(scscfs) == 2

    # SIP Digest: 401 with the HSS's challenge, then 200.
    ports = {user: 5600 + 10 * n for n, user in enumerate(sorted(passwords))}
    for user, password in sorted(passwords.items()):
        reg = sipp(tmp_path, pcscf, "register.xml", user, password, ports[user], "-m", "1")
        assert reg.run() == 0, reg.output()
    status = hss_status(instance)
    assert status["registered_impus"] == len(passwords)
    assert set(status["registered_per_scscf"]) == set(scscfs)  # both S-CSCFs took users

    # AKA: K and OPc provisioned through the API; the 401 carries the HSS's vector.
    added = api.post(
        "/v1/instances/core/subscribers",
        json={"user": "carol", "k": K.hex(), "opc": opc_from_op(K, OP).hex(), "amf": AMF.hex()},
    )
    assert added.status_code == 201 and added.json()["auth"] == ["aka"]
    shown = api.client.get("/v1/instances/core/subscribers/carol").text.lower()
    assert K.hex() not in shown and opc_from_op(K, OP).hex() not in shown, "K and OPc never come back"
    assert _register_aka(tmp_path, pcscf), "an AKA registration got its 200"
    assert hss_status(instance)["requests"]["MAR"]

    # A call between two subscribers on different S-CSCFs: the terminating one is found by LIR.
    caller, callee = _on_different_scscfs(passwords, scscfs)
    lir_before = sum(hss_status(instance)["requests"].get("LIR", {}).values())
    callee_ue = sipp(
        tmp_path,
        pcscf,
        "uas_call.xml",
        callee,
        passwords[callee],
        5700,
        "-oocsf",
        str(SCENARIOS / "uas_call.xml"),
        "-m",
        "1",
        "-recv_timeout",
        "30000",
    ).start()
    try:
        wait_for(lambda: hss_status(instance)["registered_impus"] >= len(passwords), 20, "the callee")
        caller_ue = sipp(
            tmp_path,
            pcscf,
            "ims_uac_call.xml",
            caller,
            passwords[caller],
            5710,
            "-key",
            "callee",
            callee,
            "-d",
            "500",
            "-m",
            "1",
            "-recv_timeout",
            "20000",
        )
        assert caller_ue.run() == 0, caller_ue.output()
        assert callee_ue.wait() == 0, callee_ue.output()
    finally:
        callee_ue.stop()
    assert sum(hss_status(instance)["requests"]["LIR"].values()) > lir_before

    # De-registration of dave's contact (Expires 0): the HSS no longer has the user registered.
    before = hss_status(instance)["registered_impus"]
    dereg = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        "dave",
        passwords["dave"],
        "ims.test",
        CLIENT,
        ports["dave"],
        "-au",
        "dave@ims.test",
        "-key",
        "expires",
        "0",
        "-m",
        "1",
        "-recv_timeout",
        "10000",
    )
    assert dereg.run() == 0, (dereg.output(), hss_status(instance)["requests"])
    wait_for(lambda: hss_status(instance)["registered_impus"] == before - 1, 10, "dave de-registered")

    # Someone the HSS does not know: 403 at once, no challenge.
    refused = sipp(tmp_path, pcscf, "register_refused.xml", "mallory", "whatever", 5730, "-m", "1")
    assert refused.run() == 0, refused.output()
    assert api.wait_operation(api.delete("/v1/instances/core").json()["id"])["state"] == "succeeded"


def _register_aka(tmp_path, pcscf: str) -> bool:
    """sipp fails a RES with a 0x00 byte (about 3 % of vectors): a new REGISTER gets a new one."""
    for attempt in range(4):
        reg = sipp(tmp_path, pcscf, "register_aka.xml", "carol", "unused", 5800 + 10 * attempt, "-m", "1")
        if reg.run() == 0:
            return True
    return False


def _on_different_scscfs(passwords: dict[str, str], scscfs: list[str]) -> tuple[str, str]:
    where = {u: scscfs[zlib.crc32(f"{u}@ims.test".encode()) % len(scscfs)] for u in passwords if u != "dave"}
    for caller in where:
        for callee in where:
            if where[caller] != where[callee]:
                return caller, callee
    raise AssertionError(f"all subscribers on one S-CSCF: {where}")


def _check_dns(instance) -> None:
    """A for every unit; NAPTR and SRV for the domain and for each CSCF role."""
    dns = next(u["address"] for u in instance["units"] if u["role"] == "dns")
    for unit in instance["units"]:
        assert probes.dns_query(dns, DNS_PORT, f"{unit['name']}.ims.test", "A") == [unit["address"]]
    for name in ("ims.test", "pcscf.ims.test", "icscf.ims.test", "scscf.ims.test"):
        naptr = probes.dns_query(dns, DNS_PORT, name, "NAPTR")
        assert any("SIP+D2U" in r and f"_sip._udp.{name}" in r for r in naptr), (name, naptr)
        assert probes.dns_query(dns, DNS_PORT, f"_sip._udp.{name}", "SRV"), name


def test_ims_scales_p_and_s_cscfs_and_restarts_a_killed_i_cscf(server, tmp_path):
    api = server.api("imsscale")
    api.create("core", profile="ims")
    passwords = {s["user"]: s["password"] for s in api.subscribers("core")}

    def scale(**sizes) -> dict:
        response = api.patch("/v1/instances/core", json={"sizes": sizes})
        assert response.status_code == 202, response.text
        op = api.wait_operation(response.json()["id"])
        assert op["state"] == "succeeded", (op["error"], op["steps"])
        return api.get("/v1/instances/core").json()

    grown = scale(pcscf=2, scscf=2)
    pcscfs = [u["address"] for u in grown["units"] if u["role"] == "pcscf"]
    assert len(pcscfs) == 2 and len(hss_status(grown)["scscfs"]) == 2
    for n, pcscf in enumerate(pcscfs):  # either P-CSCF registers a user
        reg = sipp(tmp_path, pcscf, "register.xml", "alice", passwords["alice"], 5900 + 10 * n, "-m", "1")
        assert reg.run() == 0, reg.output()

    shrunk = scale(pcscf=1, scscf=1)
    assert len(hss_status(shrunk)["scscfs"]) == 1
    pcscf = next(u["address"] for u in shrunk["units"] if u["role"] == "pcscf")
    reg = sipp(tmp_path, pcscf, "register.xml", "bob", passwords["bob"], 5920, "-m", "1")
    assert reg.run() == 0, reg.output()

    icscf = next(u for u in shrunk["units"] if u["role"] == "icscf")
    os.kill(icscf["pid"], signal.SIGKILL)
    wait_for(
        lambda: (
            next(u for u in api.get("/v1/instances/core").json()["units"] if u["name"] == icscf["name"])["state"]
            == "failed"
        ),
        20,
        "the I-CSCF shown failed",
    )
    op = api.wait_operation(api.post("/v1/instances/core/actions/provision").json()["id"])
    assert op["state"] == "succeeded", op["error"]
    reg = sipp(tmp_path, pcscf, "register.xml", "alice", passwords["alice"], 5930, "-m", "1")
    assert reg.run() == 0, reg.output()
    assert api.wait_operation(api.delete("/v1/instances/core").json()["id"])["state"] == "succeeded"


def test_ims_without_test_subscribers_is_ready_on_the_hss_answer(server):
    api = server.api("imsbare")
    instance = api.create("core", profile="ims", attributes={"imsso.test_subscribers": False})
    assert instance["state"] == "active" and api.subscribers("core") == []
    ops = api.get("/v1/instances/core/operations").json()
    provision = next(o for o in ops if o["kind"] == "provision")
    readiness = next(s for s in provision["steps"] if s["name"] == "readiness through the P-CSCF")
    assert "refused (403)" in readiness["detail"]
    assert api.wait_operation(api.delete("/v1/instances/core").json()["id"])["state"] == "succeeded"
