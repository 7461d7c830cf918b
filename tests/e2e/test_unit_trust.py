"""Units trust only their own, tried as a local attacker: any process on this machine can send from
127.0.0.1 (the orchestrator's address) and bind any address of an instance's network. Management
needs the unit's key, KDMQ the instance's DMQ key, the P-CSCF's terminating path the term key, and
none of these keys reaches a UE."""

from __future__ import annotations

import json
import re
import secrets
import socket
import stat
import time
from pathlib import Path

import httpx
import psutil

from harness import SCENARIOS, Sipp, in_location, unit_rpc, wait_for

RPC = {"jsonrpc": "2.0", "id": 1}


def test_sip_core_units_refuse_a_local_intruder(server, tmp_path):
    api = server.api("trust")
    instance = api.create("trust", sizes={"scscf": 2})
    units = {u["name"]: u for u in instance["units"]}
    pcscf, scscf = units["pcscf-1"]["address"], units["scscf-1"]["address"]
    folder = _unit_folder(server, instance, "scscf-1")
    domain = instance["domain"]

    # Management from 127.0.0.1 without the key: refused, and the commands did not run.
    assert _rpc(scscf, "core.kill") == (
        401,
        "JSON-RPC needs the header Authorization: Bearer <the unit's management key>",
    )
    assert _rpc(pcscf, "dispatcher.set_state", "i", "1", f"sip:{scscf}:5060")[0] == 401
    assert _rpc(scscf, "core.kill", key="not-the-key") == (403, "wrong management key in Authorization")
    assert _rpc(scscf, "core.kill", key=(folder / "management.key").read_text().strip() + "x")[0] == 403
    assert all(psutil.pid_exists(u["pid"]) for u in units.values())
    targets = unit_rpc(pcscf).call("dispatcher.list")
    assert all(t["DEST"]["FLAGS"].startswith("A") for t in _destinations(targets)), _destinations(targets)
    # ... and with the key the same port does obey (the refused commands exist)
    assert {"core.kill", "ul.dump"} <= set(unit_rpc(scscf).call("system.listMethods"))
    assert "dispatcher.set_state" in unit_rpc(pcscf).call("system.listMethods")
    # the config keeps only the key's hash; the unit folder is the owner's alone
    key = (folder / "management.key").read_text().strip()
    assert key not in (folder / "kamailio.cfg").read_text()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    assert stat.S_IMODE(folder.parent.parent.stat().st_mode) == 0o700  # the instance's folder

    # A call: the callee's INVITE carries none of the core's keys.
    subs = {s["user"]: s["password"] for s in api.subscribers("trust")}
    messages = _call(tmp_path, pcscf, domain, subs, "uac_call.xml", "127.160.0.1", ())
    assert "X-Imsso" not in messages and "INVITE sip:bob@" in messages, messages[:3000]

    # A forged KDMQ from an unused address of the instance's network: refused, nothing planted.
    intruder = _unused_address(scscf)
    assert _kdmq(scscf, intruder, domain) == "SIP/2.0 403 Forbidden - DMQ Key Missing Or Wrong"
    assert _kdmq(scscf, intruder, domain, "X-Imsso-Dmq-Key: " + "0" * 64).startswith("SIP/2.0 403")
    assert not in_location(scscf, "mallory@") and in_location(scscf, "alice@")
    # the same message with the S-CSCFs' key (read from their config) is taken: the key decides
    dmq_key = re.search(r"X-Imsso-Dmq-Key: ([0-9a-f]{64})", (folder / "kamailio.cfg").read_text())[1]
    assert _kdmq(scscf, intruder, domain, f"X-Imsso-Dmq-Key: {dmq_key}") == "SIP/2.0 200 OK"
    wait_for(lambda: in_location(scscf, "mallory@"), 10, "the keyed KDMQ's binding")

    # A terminating INVITE to the P-CSCF from an S-CSCF's address (another port): refused.
    assert _invite(pcscf, scscf, f"sip:bob@{domain}", None) == "SIP/2.0 403 Forbidden - Not From The Core"
    # A REGISTER straight to an S-CSCF, with a Path of the intruder's: refused before any challenge.
    assert _register(scscf, intruder, domain) == "SIP/2.0 403 Forbidden - Register Through The P-CSCF"
    assert api.wait_operation(api.delete("/v1/instances/trust").json()["id"])["state"] == "succeeded"


def test_ims_core_paths_need_the_core_keys(server, tmp_path):
    api = server.api("trustims")
    instance = api.create("core", profile="ims")
    units = {u["name"]: u["address"] for u in instance["units"]}
    pcscf, scscf, icscf = units["pcscf-1"], units["scscf-1"], units["icscf-1"]

    for address in (pcscf, scscf, icscf):
        assert _rpc(address, "core.kill")[0] == 401
        assert _rpc(address, "core.kill", key="guess")[0] == 403
        assert unit_rpc(address).call("core.uptime")["uptime"] >= 0

    # A call: the callee's INVITE (relayed by the S-CSCF with the term key) has no core key left.
    subs = {s["user"]: s["password"] for s in api.subscribers("core")}
    messages = _call(tmp_path, pcscf, "ims.test", subs, "ims_uac_call.xml", "127.161.0.1", ("-au", "{user}@ims.test"))
    assert "X-Imsso" not in messages and "INVITE sip:bob@" in messages, messages[:3000]

    # The terminating path (Route sip:term@P-CSCF) from an address of the instance's network
    # without the term key: refused, not relayed to bob.
    intruder = _unused_address(pcscf)
    route = f"<sip:term@{pcscf}:5060;lr>"
    assert _invite(pcscf, intruder, "sip:bob@127.161.0.2:5700", route) == "SIP/2.0 403 Forbidden - Not From The Core"
    # Originating service at the S-CSCF (Route sip:orig@), i.e. calling as alice, without the
    # P-CSCF: refused.
    assert (
        _invite(scscf, intruder, "sip:bob@ims.test", f"<sip:orig@{scscf}:5060;lr>")
        == "SIP/2.0 403 Forbidden - Originate Through The P-CSCF"
    )
    assert api.wait_operation(api.delete("/v1/instances/core").json()["id"])["state"] == "succeeded"


def _call(
    tmp_path: Path, pcscf: str, domain: str, subs: dict[str, str], uac: str, client: str, extra: tuple[str, ...]
) -> str:
    """alice calls bob through the P-CSCF; what bob's UE received (sipp's message trace)."""

    def ue(scenario: str, user: str, address: str, port: int, *more: str) -> Sipp:
        args = [a.format(user=user) for a in extra]
        return Sipp(
            tmp_path,
            pcscf,
            scenario,
            user,
            subs[user],
            domain,
            address,
            port,
            *args,
            "-key",
            "expires",
            "300",
            "-m",
            "1",
            *more,
        )

    trace = tmp_path / "bob-messages.log"
    bob = ue(
        "uas_call.xml",
        "bob",
        client[:-1] + "2",
        5700,
        "-oocsf",
        str(SCENARIOS / "uas_call.xml"),
        "-recv_timeout",
        "30000",
        "-trace_msg",
        "-message_file",
        str(trace),
    ).start()
    try:
        wait_for(lambda: trace.exists() and "SIP/2.0 200" in trace.read_text(errors="replace"), 20, "bob registered")
        alice = ue(uac, "alice", client, 5710, "-key", "callee", "bob", "-d", "300", "-recv_timeout", "20000")
        assert alice.run() == 0, alice.output()
        assert bob.wait() == 0, bob.output()
    finally:
        bob.stop()
    return trace.read_text(errors="replace")


def _rpc(address: str, method: str, *params: str, key: str | None = None) -> tuple[int, str]:
    """A JSON-RPC from 127.0.0.1, as any local process can send it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(
        f"http://{address}:5080/RPC",
        json={**RPC, "method": method, "params": list(params)},
        headers=headers,
        timeout=5,
        trust_env=False,
    )
    return answer.status_code, answer.text.strip()


def _destinations(listing: dict) -> list[dict]:
    return [t for s in listing["RECORDS"] for t in s["SET"]["TARGETS"]]


def _unit_folder(server, instance: dict, unit: str) -> Path:
    return server.data_dir / "instances" / instance["id"] / "units" / unit


def _unused_address(unit_address: str) -> str:
    """An address of the unit's /24 (the instance's network) that no unit holds."""
    return unit_address.rsplit(".", 1)[0] + ".250"


def _send(target: str, source: str, message: str) -> str:
    """One request over UDP from `source`; the status line of the first answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        sock.sendto(message.replace("{via}", f"{source}:{port}").encode(), (target, 5060))
        while True:
            line = sock.recv(65535).decode(errors="replace").split("\r\n")[0]
            if not line.startswith("SIP/2.0 100"):
                return line


def _request(method: str, uri: str, target: str, source: str, headers: list[str], body: str = "") -> str:
    tag = secrets.token_hex(4)
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {{via}};branch=z9hG4bK-{tag}",
        f"From: <sip:alice@{source}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: forged-{tag}",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        *headers,
        f"Content-Length: {len(body)}",
        "",
        body,
    ]
    return "\r\n".join(lines)


def _kdmq(scscf: str, source: str, domain: str, key_header: str | None = None) -> str:
    """A dmq_usrloc update that plants mallory's binding (the format the S-CSCFs send)."""
    now = int(time.time())
    body = json.dumps(
        {
            "action": 1,
            "aor": f"mallory@{domain}",
            "ruid": "forged-1",
            "c": f"sip:mallory@{source}:5999",
            "received": "",
            "path": "",
            "callid": "forged",
            "user_agent": "intruder",
            "instance": "",
            "expires": now + 600,
            "cseq": 1,
            "flags": 0,
            "cflags": 0,
            "q": -1,
            "last_modified": now,
            "methods": 4294967295,
            "reg_id": 0,
            "server_id": 0,
        }
    )
    headers = ["Content-Type: application/json", *([key_header] if key_header else [])]
    return _send(scscf, source, _request("KDMQ", f"sip:usrloc@{scscf}:5060", scscf, source, headers, body))


def _invite(target: str, source: str, uri: str, route: str | None) -> str:
    headers = ["Contact: <sip:alice@{via}>"] + ([f"Route: {route}"] if route else [])
    return _send(target, source, _request("INVITE", uri, target, source, headers))


def _register(scscf: str, source: str, domain: str) -> str:
    headers = ["Contact: <sip:mallory@{via}>", f"Path: <sip:{source}:5060;lr>", "Supported: path", "Expires: 600"]
    return _send(scscf, source, _request("REGISTER", f"sip:{domain}", scscf, source, headers))
