"""A deployed `ims` instance's HSS, tried as a local attacker would: raw Diameter from a process
that is not one of the instance's CSCFs gets nothing, while the instance keeps registering users;
and a HSS killed with SIGKILL and healed still knows who is registered."""

from __future__ import annotations

import itertools
import os
import signal
import socket

import httpx

from harness import Sipp, wait_for
from imsso.hss.diameter import (
    APP_CX,
    CODE_CE,
    CODE_MAR,
    FLAG_P,
    FLAG_R,
    VENDOR_3GPP,
    Framer,
    Message,
    avp,
    decode,
    encode,
)

CLIENT = "127.157.0.2"
HSS_PORT = 3868
_ids = itertools.count(1)


def hss_of(instance: dict) -> dict:
    return next(u for u in instance["units"] if u["role"] == "hss")


def status(instance: dict) -> dict:
    return httpx.get(f"http://{hss_of(instance)['address']}:3870/status", timeout=5).json()


def message(code: int, origin: str, *avps, app: int = APP_CX) -> Message:
    n = next(_ids)
    head = [avp("Session-Id", f"{origin};{n}"), avp("Origin-Host", origin), avp("Origin-Realm", "ims.test")]
    return Message(code, FLAG_R | (FLAG_P if app else 0), app, n, n, head + list(avps))


def cer(origin: str) -> Message:
    return message(
        CODE_CE,
        origin,
        avp("Host-IP-Address", "127.0.0.1"),
        avp("Vendor-Id", VENDOR_3GPP),
        avp("Product-Name", "attacker"),
        avp("Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]),
        app=0,
    )


def mar(origin: str) -> Message:
    return message(
        CODE_MAR,
        origin,
        avp("User-Name", "alice@ims.test"),
        avp("Public-Identity", "sip:alice@ims.test"),
        avp("SIP-Number-Auth-Items", 1),
        avp("SIP-Auth-Data-Item", [avp("SIP-Authentication-Scheme", "Digest-MD5")]),
    )


def exchange(address: str, *requests: Message, source: str | None = None) -> list[Message]:
    """Send the requests on one raw TCP connection; every answer until the HSS closes it."""
    src = (source, 0) if source else None
    with socket.create_connection((address, HSS_PORT), timeout=10, source_address=src) as sock:
        sock.sendall(b"".join(encode(r) for r in requests))
        framer, got = Framer(), []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return got
            if not chunk:
                return got
            got += [decode(f) for f in framer.feed(chunk)]


def test_the_instance_hss_serves_only_its_own_cscfs(server, tmp_path):
    api = server.api("hssattack")
    instance = api.create("core", profile="ims")
    hss = hss_of(instance)["address"]
    scscf = next(u for u in instance["units"] if u["role"] == "scscf")
    real_host = f"{scscf['name']}.{instance['domain']}"
    served_before = status(instance)["requests"].get("MAR", {})

    # no capabilities exchange: the MAR is not answered, the connection closes
    assert exchange(hss, mar("mallory.ims.test")) == []
    # a name the HSS does not list: DIAMETER_UNKNOWN_PEER, then closed; the MAR behind it unread
    answers = exchange(hss, cer("mallory.ims.test"), mar("mallory.ims.test"))
    assert [(a.code, a.get("Result-Code")) for a in answers] == [(CODE_CE, 3010)]
    # the S-CSCF's own name, from an address that is not the S-CSCF's
    answers = exchange(hss, cer(real_host), mar(real_host), source="127.0.0.77")
    assert [(a.code, a.get("Result-Code")) for a in answers] == [(CODE_CE, 3010)]

    after = status(instance)
    assert after["requests"].get("MAR", {}) == served_before  # no vector left the HSS for us
    assert after["requests"]["CER"].get("DIAMETER_UNKNOWN_PEER") == 2
    assert {p["host"] for p in after["peers"]} >= {real_host}

    # the instance's own CSCFs are still served: a user registers through them
    passwords = {s["user"]: s["password"] for s in api.subscribers("core")}
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    reg = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        "alice",
        passwords["alice"],
        "ims.test",
        CLIENT,
        6100,
        "-au",
        "alice@ims.test",
        "-key",
        "expires",
        "300",
        "-m",
        "1",
        "-recv_timeout",
        "10000",
    )
    assert reg.run() == 0, reg.output()
    assert status(instance)["registered_impus"] >= 1

    # SIGKILL the HSS; the heal starts it again on its folder: alice is still registered there
    registered = status(instance)["registered_impus"]
    os.kill(hss_of(instance)["pid"], signal.SIGKILL)
    wait_for(lambda: hss_of(api.get("/v1/instances/core").json())["state"] == "failed", 20, "the HSS shown failed")
    op = api.wait_operation(api.post("/v1/instances/core/actions/provision").json()["id"])
    assert op["state"] == "succeeded", op["error"]
    healed = api.get("/v1/instances/core").json()
    assert hss_of(healed)["pid"] != hss_of(instance)["pid"]
    assert status(healed)["registered_impus"] == registered
    again = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        "alice",
        passwords["alice"],
        "ims.test",
        CLIENT,
        6110,
        "-au",
        "alice@ims.test",
        "-key",
        "expires",
        "300",
        "-m",
        "1",
        "-recv_timeout",
        "10000",
    )
    assert again.run() == 0, again.output()  # the CSCFs' cdp reconnected and were accepted
    assert api.wait_operation(api.delete("/v1/instances/core").json()["id"])["state"] == "succeeded"
