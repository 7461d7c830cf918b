"""The HSS keeps registrations, S-CSCF assignments and SQN counters across a kill -9 and a
restart on the same folder (as a heal does), and starts empty, saying so, on a corrupt file."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from test_hss_server import DATA, SCSCF, Unit, cer, experimental, request, spawn

from imsso.hss import milenage
from imsso.hss.cx import Hss, Subscribers
from imsso.hss.diameter import CODE_LIR, CODE_MAR, CODE_SAR, Message, avp
from imsso.hss.state import StateFile

K = bytes.fromhex(DATA["subscribers"][0]["k"])
OPC = bytes.fromhex(DATA["subscribers"][0]["opc"])
ALICE, ALICE_IMPU = "alice@ims.test", "sip:alice@ims.test"
OTHER_SCSCF = "sip:127.100.0.12:5060"


def sar(server: str = SCSCF, kind: int = 1) -> Message:
    return request(
        CODE_SAR,
        avp("User-Name", ALICE),
        avp("Public-Identity", ALICE_IMPU),
        avp("Server-Name", server),
        avp("Server-Assignment-Type", kind),
    )


def lir() -> Message:
    return request(CODE_LIR, avp("Public-Identity", ALICE_IMPU))


def aka_mar() -> Message:
    return request(
        CODE_MAR,
        avp("User-Name", ALICE),
        avp("Public-Identity", ALICE_IMPU),
        avp("SIP-Number-Auth-Items", 1),
        avp("SIP-Auth-Data-Item", [avp("SIP-Authentication-Scheme", "Digest-AKAv1-MD5")]),
        avp("Server-Name", SCSCF),
    )


def sqn_seen_by_the_ue(maa: Message) -> int:
    """What a USIM reads from the challenge: SQN = (SQN xor AK) xor f5(K, RAND)."""
    nonce = maa.find("SIP-Auth-Data-Item").get("SIP-Authenticate")
    rand, autn = nonce[:16], nonce[16:]
    ak = milenage.f2345(K, OPC, rand)[3]
    return int.from_bytes(bytes(a ^ b for a, b in zip(autn[:6], ak)), "big")


def kill_and_restart(unit: Unit, tmp_path: Path) -> Unit:
    os.kill(unit.proc.pid, signal.SIGKILL)
    unit.proc.wait()
    again = spawn(tmp_path)
    assert again.proc.poll() is None, again.text()
    return again


def test_registration_and_sqn_survive_kill_9(tmp_path: Path) -> None:
    unit = spawn(tmp_path)
    try:
        peer = unit.peer()
        peer.ask(cer())
        assert peer.ask(sar()).get("Result-Code") == 2001
        sqns = [sqn_seen_by_the_ue(peer.ask(aka_mar())) for _ in range(3)]
        assert sqns == sorted(set(sqns))
        unit = kill_and_restart(unit, tmp_path)
        assert "state restored: 1 registrations, 1 SQN counters" in unit.text()
        peer = unit.peer()
        peer.ask(cer())
        lia = peer.ask(lir())
        assert lia.get("Result-Code") == 2001 and lia.get("Server-Name") == SCSCF
        assert sqn_seen_by_the_ue(peer.ask(aka_mar())) > sqns[-1]  # fresh to the USIM: no resync
        assert unit.status()["registered_impus"] == 1
    finally:
        unit.proc.kill()
        unit.proc.wait()


def test_a_deregistration_survives_too(tmp_path: Path) -> None:
    unit = spawn(tmp_path)
    try:
        peer = unit.peer()
        peer.ask(cer())
        peer.ask(sar())
        assert peer.ask(sar(kind=5)).get("Result-Code") == 2001  # USER_DEREGISTRATION
        unit = kill_and_restart(unit, tmp_path)
        peer = unit.peer()
        peer.ask(cer())
        assert experimental(peer.ask(lir())) == 2003  # unregistered: no S-CSCF holds alice
    finally:
        unit.proc.kill()
        unit.proc.wait()


def test_a_corrupt_state_file_is_reported_and_the_hss_starts_empty(tmp_path: Path) -> None:
    (tmp_path / "hss-state.json").write_text('{"format": 1, "registrations": {"sip:alice')
    unit = spawn(tmp_path)
    try:
        assert unit.proc.poll() is None, unit.text()
        assert "is corrupt" in unit.text() and "starting with no registrations" in unit.text()
        assert (tmp_path / "hss-state.json.corrupt").exists()  # kept for whoever investigates
        peer = unit.peer()
        peer.ask(cer())
        assert experimental(peer.ask(lir())) == 2003
        peer.ask(sar())
        saved = json.loads((tmp_path / "hss-state.json").read_text())
        assert saved["registrations"][ALICE_IMPU] == {"server": SCSCF, "registered": True}
    finally:
        unit.proc.kill()
        unit.proc.wait()


def test_state_option_and_atomic_writes(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "state.json"
    path.parent.mkdir()
    logs: list[str] = []
    hss = Hss(
        Subscribers.from_dict(DATA), "hss.ims.test", "ims.test", log=logs.append, state=StateFile(path, logs.append)
    )
    hss.handle(sar(), peer="127.0.0.1")
    assert json.loads(path.read_text())["registrations"][ALICE_IMPU]["server"] == SCSCF
    assert os.stat(path).st_mode & 0o077 == 0  # the file says who is registered where
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left
    hss.handle(sar(OTHER_SCSCF), peer="127.0.0.1")
    reborn = Hss(Subscribers.from_dict(DATA), "hss.ims.test", "ims.test", state=StateFile(path, logs.append))
    assert reborn.registration(ALICE_IMPU).server == OTHER_SCSCF


def test_reload_dropping_registrations_is_written(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    hss = Hss(Subscribers.from_dict(DATA), "hss.ims.test", "ims.test", state=StateFile(path, print))
    hss.handle(sar(), peer="127.0.0.1")
    hss.reload(Subscribers.from_dict({**DATA, "scscfs": [OTHER_SCSCF]}))  # its S-CSCF left
    assert json.loads(path.read_text())["registrations"] == {}


def test_unusable_state_values_are_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    logs: list[str] = []
    path.write_text(json.dumps({"format": 1, "registrations": {}, "sqn": {ALICE: -5}}))
    hss = Hss(Subscribers.from_dict(DATA), "hss.ims.test", "ims.test", state=StateFile(path, logs.append))
    assert hss.sqn(ALICE) == 0 and any("sqn of alice@ims.test" in line for line in logs)
