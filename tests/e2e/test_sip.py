"""A real SIP client (sipp) against a deployed and provisioned sip-core instance."""

from __future__ import annotations

import socket
import sqlite3
from contextlib import closing

import httpx

from harness import DNS_PORT, SCENARIOS, Sipp, in_location, wait_for
from imsso.drivers.local import probes


def test_register_and_call_between_two_subscribers(server, tmp_path):
    api = server.api("sipcall")
    instance = api.create("sipcall")
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    scscf = next(u["address"] for u in instance["units"] if u["role"] == "scscf")
    subs = {s["user"]: s["password"] for s in api.subscribers("sipcall")}
    _check_dns(instance)
    assert set(subs) == {"alice", "bob"}, "provision adds two test subscribers"
    domain = instance["domain"]

    # REGISTER: the scenario requires a 401 challenge, then a 200 to the digest answer.
    for n, (user, password) in enumerate(sorted(subs.items())):
        reg = Sipp(
            tmp_path,
            pcscf,
            "register.xml",
            user,
            password,
            domain,
            "127.150.0.1",
            5070 + 10 * n,
            "-key",
            "expires",
            "300",
            "-m",
            "1",
            "-recv_timeout",
            "10000",
        )
        assert reg.run() == 0, reg.output()
        assert in_location(scscf, f"127.150.0.1:{5070 + 10 * n}")

    bob = Sipp(
        tmp_path,
        pcscf,
        "uas_call.xml",
        "bob",
        subs["bob"],
        domain,
        "127.150.0.2",
        5080,
        "-oocsf",
        str(SCENARIOS / "uas_call.xml"),
        "-key",
        "expires",
        "300",
        "-m",
        "1",
        "-recv_timeout",
        "30000",
    ).start()
    try:
        # Bob's fresh contact must be the binding the call reaches.
        wait_for(lambda: in_location(scscf, "127.150.0.2:5080"), 20, "bob's new contact")
        alice = Sipp(
            tmp_path,
            pcscf,
            "uac_call.xml",
            "alice",
            subs["alice"],
            domain,
            "127.150.0.3",
            5090,
            "-key",
            "expires",
            "300",
            "-key",
            "callee",
            "bob",
            "-d",
            "500",
            "-m",
            "1",
            "-recv_timeout",
            "20000",
        )
        assert alice.run() == 0, alice.output()  # INVITE, 407, INVITE, 180, 200, ACK, BYE, 200
        assert bob.wait() == 0, bob.output()  # INVITE answered 180 and 200, ACK, BYE answered
    finally:
        bob.stop()

    # The S-CSCFs' replication (DMQ) is not reachable from a UE: no binding planted without a password.
    assert _status_of(pcscf, "KDMQ sip:usrloc@" + scscf + ":5060 SIP/2.0") == 403
    assert _status_of(scscf, "KDMQ sip:usrloc@" + scscf + ":5060 SIP/2.0", source="127.150.0.9") == 403

    # Unit control (JSON-RPC) answers the orchestrator only; another local address gets 403.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.150.0.7"), timeout=5) as other:
        refused = other.post(f"http://{scscf}:5080/RPC", json={"jsonrpc": "2.0", "method": "core.uptime", "id": 1})
    assert refused.status_code == 403

    wrong = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        "alice",
        "not-the-password",
        domain,
        "127.150.0.4",
        5100,
        "-key",
        "expires",
        "300",
        "-m",
        "1",
        "-recv_timeout",
        "5000",
    )
    assert wrong.run() != 0, "a wrong password is refused"
    assert api.wait_operation(api.delete("/v1/instances/sipcall").json()["id"])["state"] == "succeeded"


def test_a_subscriber_added_with_a_password_registers_against_ha1_kept_alone(server, tmp_path):
    """sip-core keeps no password: the S-CSCFs' table and the orchestrator's database hold HA1 only,
    the API never gives the password back, and digest still works for both usernames."""
    api = server.api("secrets")
    instance = api.create("ha1core", attributes={"imsso.test_subscribers": False})
    pcscf = next(u["address"] for u in instance["units"] if u["role"] == "pcscf")
    password = "carol-Secret-9"
    added = api.post("/v1/instances/ha1core/subscribers", json={"user": "carol", "password": password})
    assert added.status_code == 201, added.text
    shown = api.client.get("/v1/instances/ha1core/subscribers/carol")
    assert shown.json()["digest"] is True and password not in shown.text

    table = server.data_dir / "instances" / instance["id"] / "subscribers.sqlite"
    with closing(sqlite3.connect(table)) as db:
        rows = db.execute("SELECT username, password, ha1, ha1b FROM subscriber").fetchall()
    assert [(r[0], r[1], len(r[2]), len(r[3])) for r in rows] == [("carol", "", 32, 32)]
    for db_file in server.data_dir.glob("imsso.sqlite*"):  # the database and its write-ahead log
        assert password.encode() not in db_file.read_bytes(), db_file

    # username "carol" is checked against ha1, "carol@ha1core domain" against ha1b
    for n, username in enumerate(("carol", f"carol@{instance['domain']}")):
        reg = Sipp(
            tmp_path,
            pcscf,
            "register.xml",
            "carol",
            password,
            instance["domain"],
            "127.150.0.5",
            5120 + 10 * n,
            "-au",
            username,
            "-key",
            "expires",
            "60",
            "-m",
            "1",
            "-recv_timeout",
            "10000",
        )
        assert reg.run() == 0, reg.output()
    wrong = Sipp(
        tmp_path,
        pcscf,
        "register.xml",
        "carol",
        "carol-Secret-8",
        instance["domain"],
        "127.150.0.5",
        5140,
        "-key",
        "expires",
        "60",
        "-m",
        "1",
        "-recv_timeout",
        "5000",
    )
    assert wrong.run() != 0, "a wrong password is refused"
    assert api.wait_operation(api.delete("/v1/instances/ha1core").json()["id"])["state"] == "succeeded"


def _check_dns(instance) -> None:
    """The instance's DNS server answers for every unit (A) and for the SIP service (SRV)."""
    dns = next(u["address"] for u in instance["units"] if u["role"] == "dns")
    domain = instance["domain"]
    for unit in instance["units"]:
        assert probes.dns_query(dns, DNS_PORT, f"{unit['name']}.{domain}", "A") == [unit["address"]]
    pcscf = next(u for u in instance["units"] if u["role"] == "pcscf")
    for proto in ("udp", "tcp"):
        srv = probes.dns_query(dns, DNS_PORT, f"_sip._{proto}.{domain}", "SRV")
        assert srv and f"{pcscf['name']}.{domain}" in srv[0] and "5060" in srv[0], srv
    assert probes.dns_query(dns, DNS_PORT, f"nobody.{domain}", "A") == []


def _status_of(target: str, request_line: str, source: str = "127.150.0.8") -> int | None:
    """Send one request over UDP from `source`; the status of the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        port = sock.getsockname()[1]
        message = (
            f"{request_line}\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-kdmq-test\r\n"
            f"From: <sip:intruder@{source}>;tag=1\r\nTo: <sip:usrloc@{target}>\r\n"
            "Call-ID: kdmq-test\r\nCSeq: 1 KDMQ\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(message.encode(), (target, 5060))
        try:
            return int(sock.recv(4096).decode().split()[1])
        except TimeoutError:
            return None
