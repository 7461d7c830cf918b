"""Who the HSS serves, tried as an attacker would against a real HSS process on loopback: no
service without a capabilities exchange, only listed peers from their own address, and no input
or number of connections that stops it from answering the instance's own CSCFs."""

from __future__ import annotations

import json
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hss_server import (
    ADDRESS,
    DATA,
    Peer,
    Unit,
    cer,
    encode,
    experimental,
    request,
    spawn,
    uar,
    until,
)

from imsso import planning, profiles
from imsso.hss import server as hss_server
from imsso.hss.cx import Subscribers, SubscribersError
from imsso.hss.diameter import CODE_CE, CODE_MAR, FLAG_E, Framer, avp
from imsso.model import Instance
from imsso.model import Unit as PlanUnit

STRANGER = "127.0.0.77"  # an address no peer is listed with


class BoundPeer(Peer):
    """A client that connects from an address of its choosing, as any local process can."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection((ADDRESS, port), timeout=10, source_address=(source, 0))
        self.framer = Framer()
        self.pending = []


def mar() -> object:
    return request(
        CODE_MAR,
        avp("User-Name", "alice@ims.test"),
        avp("Public-Identity", "sip:alice@ims.test"),
        avp("SIP-Number-Auth-Items", 1),
        avp("SIP-Auth-Data-Item", [avp("SIP-Authentication-Scheme", "Digest-MD5")]),
        avp("Server-Name", "sip:evil@127.0.0.77"),
    )


def forged_cer(origin_host: str) -> object:
    msg = cer()
    msg.avps = [a if a.name != "Origin-Host" else avp("Origin-Host", origin_host) for a in msg.avps]
    return msg


def answers_before_close(peer: Peer) -> list[object]:
    """Every message the HSS sends until it closes the connection."""
    got = []
    while True:
        try:
            got.append(peer.receive())
        except (ConnectionError, OSError):
            return got


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = spawn(tmp_path)
    assert u.proc.poll() is None, u.text()
    yield u
    u.proc.kill()
    u.proc.wait()


# ---- capabilities exchange ----


def test_mar_without_cer_gets_no_vector_and_the_connection_closes(unit: Unit) -> None:
    attacker = unit.peer()
    attacker.send_raw(encode(mar()))
    assert answers_before_close(attacker) == []  # nothing: no password, no error to learn from
    assert "MAR before the capabilities exchange" in unit.text()


def test_sar_then_cer_in_one_write_is_refused_whole(unit: Unit) -> None:
    """Pipelining a request ahead of the CER does not sneak it through."""
    attacker = unit.peer()
    sar = request(
        301,
        avp("User-Name", "alice@ims.test"),
        avp("Public-Identity", "sip:alice@ims.test"),
        avp("Server-Name", "sip:evil@127.0.0.77"),
        avp("Server-Assignment-Type", 1),
    )
    attacker.send_raw(encode(sar) + encode(cer()))
    assert answers_before_close(attacker) == []
    assert unit.status()["registered_impus"] == 0


def test_forged_origin_host_is_refused_with_unknown_peer(unit: Unit) -> None:
    attacker = unit.peer()  # from the listed address, with a name that is not listed
    cea = attacker.ask(forged_cer("scscf-9.ims.test"))
    assert cea.code == CODE_CE and cea.get("Result-Code") == 3010 and cea.flags & FLAG_E
    assert until(attacker.closed, 5)
    assert "CER from 'scscf-9.ims.test' refused (DIAMETER_UNKNOWN_PEER)" in unit.text()


def test_listed_origin_host_from_another_address_is_refused(unit: Unit) -> None:
    attacker = BoundPeer(unit.port, STRANGER)
    cea = attacker.ask(cer())  # the real peer's Origin-Host, from 127.0.0.77
    assert cea.get("Result-Code") == 3010
    assert until(attacker.closed, 5)
    status = unit.status()
    assert status["requests"]["CER"] == {"DIAMETER_UNKNOWN_PEER": 1}
    assert "MAR" not in status["requests"]


def test_listed_peer_from_its_address_is_served(unit: Unit) -> None:
    peer = unit.peer()
    assert peer.ask(cer()).get("Result-Code") == 2001
    maa = peer.ask(mar())
    assert maa.get("Result-Code") == 2001 and maa.find("SIP-Auth-Data-Item") is not None
    peer.close()


def test_reload_lists_a_new_peer_and_a_waiting_cer_gets_through(unit: Unit) -> None:
    """A new S-CSCF connects as it starts, just before the orchestrator lists it: its CER waits
    (PEER_GRACE_S) for the reload rather than failing it into cdp's 5 s retry."""
    newcomer = BoundPeer(unit.port, "127.0.0.88")
    newcomer.send_raw(encode(forged_cer("scscf-2.ims.test")))
    time.sleep(0.3)  # the CER is waiting now
    data = {**DATA, "peers": DATA["peers"] + [{"host": "SCSCF-2.ims.test", "address": "127.0.0.88"}]}
    unit.subscribers.write_text(json.dumps(data))
    unit.hup_and_wait("reloaded")
    assert newcomer.receive().get("Result-Code") == 2001
    assert "scscf-2.ims.test listed by a reload after" in unit.text()
    assert experimental(newcomer.ask(uar())) == 2001
    unit.subscribers.write_text(json.dumps(DATA))  # it leaves the list: a new connection is refused
    unit.hup_and_wait("reloaded")
    again = BoundPeer(unit.port, "127.0.0.88")
    assert again.ask(forged_cer("scscf-2.ims.test")).get("Result-Code") == 3010


def test_without_a_peer_list_nobody_is_served(tmp_path: Path) -> None:
    unit = spawn(tmp_path, {k: v for k, v in DATA.items() if k != "peers"})
    try:
        assert "every capabilities exchange will be refused" in unit.text()
        assert unit.peer().ask(cer()).get("Result-Code") == 3010
    finally:
        unit.proc.kill()
        unit.proc.wait()


# ---- any input, any number of connections ----


def test_garbage_oversized_headers_and_a_flood_leave_the_listed_peer_served(unit: Unit) -> None:
    bystander = unit.peer()
    assert bystander.ask(cer()).get("Result-Code") == 2001
    junk = [
        b"\x00" * 64,
        b"\xff" * 64,
        b"GET / HTTP/1.0\r\n\r\n",
        bytes(range(256)),
        b"\x01\xff\xff\xfc" + bytes(16),  # a header announcing 16 MiB
        b"\x01\x01\x00\x04" + bytes(16),  # 65540 bytes: one word over the limit
        b"\x01\x00\x00\x14\x80\x00\x01\x01" + bytes(12),
    ]  # a bare CER header, no AVPs
    for data in junk:
        p = BoundPeer(unit.port, STRANGER)
        p.send_raw(data)
        assert until(p.closed, 8), data
        p.close()
    late = unit.peer()  # a listed peer that announces too much after its CER: 5015, then closed
    late.ask(cer())
    late.send_raw(b"\x01\x01\x00\x04\x80\x00\x01\x2c" + bytes(12))
    assert late.receive().get("Result-Code") == 5015
    assert until(late.closed, 5)

    flood = []
    for n in range(120):  # from many addresses, more than MAX_CONNECTIONS
        try:
            flood.append(BoundPeer(unit.port, f"127.0.1.{n % 40 + 1}"))
        except OSError:
            pass
    assert until(lambda: unit.status()["connections_turned_away"] > 0, 5)
    assert unit.status()["connections"] <= hss_server.MAX_CONNECTIONS
    assert experimental(bystander.ask(uar())) == 2001  # an open peer keeps its service meanwhile
    for p in flood:
        p.close()
    assert until(lambda: unit.status()["connections"] == 1, 10)
    fresh = unit.peer()
    assert fresh.ask(cer()).get("Result-Code") == 2001
    assert experimental(fresh.ask(uar())) == 2001
    assert unit.proc.poll() is None


def test_mutated_requests_from_a_listed_peer_never_stop_the_hss(unit: Unit) -> None:
    rng = random.Random(9)
    peer = unit.peer()
    peer.ask(cer())
    for _ in range(200):
        wire = bytearray(encode(uar()))
        for _ in range(rng.randint(1, 4)):
            wire[rng.randrange(4, len(wire))] = rng.randrange(256)  # the length word kept whole
        peer.send_raw(bytes(wire))
        try:
            peer.receive()  # an answer, often an error one
        except (ConnectionError, OSError):
            peer.close()
            peer = unit.peer()  # it closed this one: a new connection is served all the same
            peer.ask(cer())
    assert experimental(peer.ask(uar())) == 2001
    assert unit.proc.poll() is None and unit.status()["handler_errors"] == 0


def test_one_address_cannot_take_every_slot(unit: Unit) -> None:
    hogs = [BoundPeer(unit.port, STRANGER) for _ in range(40)]
    assert until(lambda: unit.status()["connections_turned_away"] >= 40 - hss_server.MAX_PENDING_PER_ADDRESS, 5)
    peer = unit.peer()  # the listed peer still gets in while the stranger's connections sit idle
    assert peer.ask(cer()).get("Result-Code") == 2001
    for h in hogs:
        h.close()


def test_a_connection_that_sends_no_cer_is_closed(unit: Unit) -> None:
    idle = BoundPeer(unit.port, STRANGER)
    drip = BoundPeer(unit.port, "127.0.0.78")
    wire = encode(cer())
    started = time.monotonic()
    for byte in wire[:8]:  # a CER, one byte at a time, never finished
        drip.send_raw(bytes([byte]))
        time.sleep(0.5)
    assert until(idle.closed, hss_server.CER_TIMEOUT_S + 5)
    assert until(drip.closed, hss_server.CER_TIMEOUT_S + 5)
    assert time.monotonic() - started >= hss_server.CER_TIMEOUT_S - 1
    assert len(re.findall(r"no capabilities exchange within", unit.text())) == 2


# ---- the peer list itself ----


def test_peer_list_checks() -> None:
    subs = Subscribers.from_dict(
        {"realm": "ims.test", "peers": [{"host": "ICSCF-1.ims.test", "address": "127.100.0.4"}]}
    )
    assert subs.allows("icscf-1.ims.test", "127.100.0.4")
    assert subs.allows("icscf-1.IMS.test", "::ffff:127.100.0.4")
    assert not subs.allows("icscf-1.ims.test", "127.100.0.5")
    assert not subs.allows("scscf-1.ims.test", "127.100.0.4")
    assert not subs.allows(None, "127.100.0.4") and not subs.allows("icscf-1.ims.test", None)
    for bad in ([{"host": "x"}], [{"host": "x", "address": "not-an-ip"}], "x", [{"address": "127.0.0.1"}]):
        with pytest.raises(SubscribersError, match="peers"):
            Subscribers.from_dict({"realm": "ims.test", "peers": bad})


def test_the_ims_profile_lists_each_cscf_as_its_cdp_announces_itself() -> None:
    """hss.json's peers are exactly the (FQDN, src_addr) of every diameter.xml in the plan."""
    profile = profiles.load("ims")
    instance = Instance(
        id="i",
        tenant="t",
        name="core",
        profile="ims",
        driver="fake",
        domain="ims.test",
        sizes={"hss": 1, "scscf": 3, "icscf": 2, "pcscf": 1, "dns": 1},
        attributes={},
        secret="s",
    )
    units, n = [], 2
    for role, count in instance.sizes.items():
        for index in range(1, count + 1):
            units.append(
                PlanUnit(
                    id=f"u{n}",
                    instance_id="i",
                    name=f"{role}-{index}",
                    role=role,
                    index=index,
                    address=f"127.200.0.{n}",
                )
            )
            n += 1
    plan = planning.build(
        instance,
        profile,
        units,
        lambda i, u: {
            "unit_dir": "/x",
            "subscribers_db": "/x/s.sqlite",
            "hss_subscribers": "/x/h.json",
            "dns_port": "53",
            "internal_net": "127.200.0.0/24",
            "manager_address": "127.0.0.1",
        },
        in_routing=["scscf-1"],
    )
    hss = json.loads(plan.unit("hss-1").files["hss.json"])
    announced = set()
    for unit in plan.units:
        xml = unit.files.get("diameter.xml")
        if xml:
            fqdn = re.search(r'<DiameterPeer\s+FQDN="([^"]+)"', xml).group(1)
            src = re.search(r'src_addr="([^"]+)"', xml).group(1)
            announced.add((fqdn, src))
    assert len(announced) == 5  # 3 S-CSCFs and 2 I-CSCFs, routed or not
    assert {(p["host"], p["address"]) for p in hss["peers"]} == announced
    assert Subscribers.from_dict(hss).peers  # the HSS reads it
