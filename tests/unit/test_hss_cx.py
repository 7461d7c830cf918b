"""Cx request handling of the HSS, without sockets: each command, its failures and the state."""

from __future__ import annotations

import hashlib
import itertools
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from imsso.hss import cx, milenage
from imsso.hss.cx import Hss, Subscribers, SubscribersError
from imsso.hss.diameter import (
    APP_CX,
    CODE_CE,
    CODE_DP,
    CODE_DW,
    CODE_LIR,
    CODE_MAR,
    CODE_SAR,
    CODE_UAR,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    VENDOR_3GPP,
    Avp,
    DiameterError,
    Message,
    avp,
    decode,
    encode,
)

K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"
SCSCFS = ["sip:127.100.0.11:5060", "sip:127.100.0.12:5060", "sip:127.100.0.13:5060"]
ALICE, ALICE_IMPU, ALICE_TEL = "alice@ims.test", "sip:alice@ims.test", "tel:+15550001"
BOB, BOB_IMPU = "bob@ims.test", "sip:bob@ims.test"
CAROL, CAROL_IMPU = "carol@ims.test", "sip:carol@ims.test"

PEER, PEER_ADDRESS = "scscf.ims.test", "127.100.0.11"  # the Origin-Host request() sends
DATA: dict[str, Any] = {
    "realm": "ims.test",
    "scscfs": SCSCFS,
    "peers": [{"host": PEER, "address": PEER_ADDRESS}],
    "subscribers": [
        {
            "impi": ALICE,
            "impus": [ALICE_IMPU, ALICE_TEL],
            "password": "alicepw",
            "k": K,
            "opc": OPC,
            "amf": "8000",
            "sqn": 0,
        },
        {"impi": BOB, "impus": [BOB_IMPU], "password": "bobpw", "k": None, "opc": None},
        {"impi": CAROL, "impus": [CAROL_IMPU], "password": None, "k": K, "opc": OPC, "sqn": 3200},
    ],
}

_ids = itertools.count(1)


def new_hss(data: dict[str, Any] = DATA, log: list[str] | None = None) -> Hss:
    return Hss(
        Subscribers.from_dict(data),
        "hss.ims.test",
        "ims.test",
        ["127.100.0.5"],
        log=(log.append if log is not None else None),
    )


@pytest.fixture
def hss() -> Hss:
    return new_hss()


def request(code: int, *avps: Avp, app: int = APP_CX, session: bool = True) -> Message:
    n = next(_ids)
    head = [avp("Session-Id", f"scscf.ims.test;{n};1")] if session else []
    head += [avp("Origin-Host", "scscf.ims.test"), avp("Origin-Realm", "ims.test")]
    if app == APP_CX:
        head += [
            avp("Destination-Realm", "ims.test"),
            avp("Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]),
            avp("Auth-Session-State", 1),
        ]
    return Message(code, FLAG_R | (FLAG_P if app == APP_CX else 0), app, n, n + 1000, head + list(avps))


def ask(hss: Hss, req: Message, peer: str = PEER_ADDRESS) -> Message:
    """Through the codec both ways, as on the wire, from the listed peer's address."""
    answer = hss.handle(decode(encode(req)), peer=peer)
    assert answer is not None
    return decode(encode(answer))


def uar(impi: str, impu: str, kind: int | None = None) -> Message:
    extra = [avp("User-Authorization-Type", kind)] if kind is not None else []
    return request(
        CODE_UAR,
        avp("User-Name", impi),
        avp("Public-Identity", impu),
        avp("Visited-Network-Identifier", b"ims.test"),
        *extra,
    )


def mar(
    impi: str, impu: str, scheme: str = "Digest-MD5", count: int = 1, authorization: bytes | None = None
) -> Message:
    item = [avp("SIP-Authentication-Scheme", scheme)]
    if authorization is not None:
        item.append(avp("SIP-Authorization", authorization))
    return request(
        CODE_MAR,
        avp("Public-Identity", impu),
        avp("User-Name", impi),
        avp("SIP-Number-Auth-Items", count),
        avp("SIP-Auth-Data-Item", item),
        avp("Server-Name", SCSCFS[0]),
    )


def sar(impi: str | None, impu: str | None, kind: int, server: str = SCSCFS[0]) -> Message:
    ids = ([avp("Public-Identity", impu)] if impu else []) + ([avp("User-Name", impi)] if impi else [])
    return request(
        CODE_SAR,
        *ids,
        avp("Server-Name", server),
        avp("Server-Assignment-Type", kind),
        avp("User-Data-Already-Available", 0),
    )


def lir(impu: str) -> Message:
    return request(CODE_LIR, avp("Public-Identity", impu))


def experimental(ans: Message) -> int | None:
    er = ans.find("Experimental-Result")
    if er is None:
        return None
    assert er.get("Vendor-Id") == VENDOR_3GPP
    return er.get("Experimental-Result-Code")


def register(hss: Hss, impi: str, impu: str, server: str = SCSCFS[0]) -> None:
    assert ask(hss, sar(impi, impu, cx.REGISTRATION, server)).get("Result-Code") == 2001


# ---- base protocol ----


def test_cer_gets_cea_with_cx_as_vendor_specific_application(hss: Hss) -> None:
    cer = request(
        CODE_CE,
        avp("Host-IP-Address", "127.100.0.11"),
        avp("Vendor-Id", VENDOR_3GPP),
        avp("Product-Name", "kamailio"),
        avp("Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]),
        app=0,
        session=False,
    )
    cea = ask(hss, cer)
    assert cea.code == CODE_CE and not cea.is_request and cea.hop_by_hop == cer.hop_by_hop
    assert cea.get("Result-Code") == 2001
    assert cea.get("Origin-Host") == "hss.ims.test" and cea.get("Origin-Realm") == "ims.test"
    assert str(cea.get("Host-IP-Address")) == "127.100.0.5"
    assert cea.get("Vendor-Id") == VENDOR_3GPP and cea.get("Supported-Vendor-Id") == VENDOR_3GPP
    assert cea.get("Product-Name") == "imsso-hss"
    vsai = cea.find("Vendor-Specific-Application-Id")
    assert (vsai.get("Vendor-Id"), vsai.get("Auth-Application-Id")) == (VENDOR_3GPP, APP_CX)
    assert not Hss.closes_connection(cea)


def test_cer_without_cx_is_refused_and_closes(hss: Hss) -> None:
    cea = ask(hss, request(CODE_CE, avp("Auth-Application-Id", 4), app=0, session=False))
    assert cea.get("Result-Code") == 5010 and Hss.closes_connection(cea)


def test_cer_with_plain_cx_or_relay_is_accepted(hss: Hss) -> None:
    for app in (APP_CX, 0xFFFFFFFF):
        cer = request(CODE_CE, avp("Auth-Application-Id", app), app=0, session=False)
        assert ask(hss, cer).get("Result-Code") == 2001


def test_dwr_and_dpr(hss: Hss) -> None:
    dwa = ask(hss, request(CODE_DW, app=0, session=False))
    assert dwa.get("Result-Code") == 2001 and dwa.get("Origin-Host") == "hss.ims.test"
    assert dwa.get("Origin-State-Id") == hss.state_id
    dpa = ask(hss, request(CODE_DP, avp("Disconnect-Cause", 0), app=0, session=False))
    assert dpa.get("Result-Code") == 2001 and dpa.code == CODE_DP


def test_unknown_command_gets_a_protocol_error(hss: Hss) -> None:
    req = request(304, avp("Public-Identity", ALICE_IMPU))
    ans = ask(hss, req)
    assert ans.flags & FLAG_E and ans.get("Result-Code") == 3001
    assert ans.get("Session-Id") == req.get("Session-Id") and ans.end_to_end == req.end_to_end
    assert ans.get("Origin-Host") == "hss.ims.test"


def test_cx_command_of_another_application(hss: Hss) -> None:
    req = uar(ALICE, ALICE_IMPU)
    req.app_id = 4
    ans = ask(hss, req)
    assert ans.flags & FLAG_E and ans.get("Result-Code") == 3007


def test_answers_are_not_answered(hss: Hss) -> None:
    ans = uar(ALICE, ALICE_IMPU)
    ans.flags = FLAG_P
    assert hss.handle(ans) is None


# ---- every Cx answer ----


@pytest.mark.parametrize(
    "make",
    [
        lambda: uar(ALICE, ALICE_IMPU),
        lambda: uar("nobody@ims.test", "sip:nobody@ims.test"),
        lambda: mar(ALICE, ALICE_IMPU),
        lambda: sar(ALICE, ALICE_IMPU, cx.REGISTRATION),
        lambda: lir(BOB_IMPU),
        lambda: request(CODE_LIR),
    ],
)
def test_every_cx_answer_has_the_common_avps(hss: Hss, make: Any) -> None:
    req = make()
    ans = ask(hss, req)
    assert (ans.code, ans.app_id, ans.hop_by_hop, ans.end_to_end) == (req.code, APP_CX, req.hop_by_hop, req.end_to_end)
    assert ans.flags == FLAG_P
    assert ans.avps[0].name == "Session-Id" and ans.get("Session-Id") == req.get("Session-Id")
    assert ans.get("Origin-Host") == "hss.ims.test" and ans.get("Origin-Realm") == "ims.test"
    assert ans.get("Auth-Session-State") == 1
    vsai = ans.find("Vendor-Specific-Application-Id")
    assert (vsai.get("Vendor-Id"), vsai.get("Auth-Application-Id")) == (VENDOR_3GPP, APP_CX)
    assert (ans.get("Result-Code") is None) != (experimental(ans) is None)


# ---- UAR ----


def test_uar_unknown_user(hss: Hss) -> None:
    assert experimental(ask(hss, uar("nobody@ims.test", ALICE_IMPU))) == 5001
    assert experimental(ask(hss, uar(ALICE, "sip:nobody@ims.test"))) == 5001


def test_uar_identities_dont_match(hss: Hss) -> None:
    ans = ask(hss, uar(ALICE, BOB_IMPU))
    assert experimental(ans) == 5002 and ans.get("Result-Code") is None


def test_uar_first_registration_names_a_stable_scscf(hss: Hss) -> None:
    ans = ask(hss, uar(ALICE, ALICE_IMPU))
    assert experimental(ans) == 2001 and ans.find("Server-Capabilities") is None
    name = ans.get("Server-Name")
    assert name in SCSCFS
    assert ask(new_hss(), uar(ALICE, ALICE_TEL)).get("Server-Name") == name  # by IMPI, any process
    many = [{"impi": f"u{i}@ims.test", "impus": [f"sip:u{i}@ims.test"]} for i in range(30)]
    crowd = new_hss({**DATA, "subscribers": many})
    chosen = {ask(crowd, uar(f"u{i}@ims.test", f"sip:u{i}@ims.test")).get("Server-Name") for i in range(30)}
    assert chosen == set(SCSCFS)  # spread over all of them


def test_uar_subsequent_registration_names_the_registered_scscf(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[2])
    for impu in (ALICE_IMPU, ALICE_TEL):  # the implicit set registered together
        ans = ask(hss, uar(ALICE, impu))
        assert experimental(ans) == 2002 and ans.get("Server-Name") == SCSCFS[2]


def test_uar_de_registration(hss: Hss) -> None:
    assert experimental(ask(hss, uar(ALICE, ALICE_IMPU, cx.UAR_DE_REGISTRATION))) == 5003
    register(hss, ALICE, ALICE_IMPU, SCSCFS[1])
    ans = ask(hss, uar(ALICE, ALICE_IMPU, cx.UAR_DE_REGISTRATION))
    assert ans.get("Result-Code") == 2001 and ans.get("Server-Name") == SCSCFS[1]


def test_uar_with_capabilities_offers_another_scscf(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[0])
    ans = ask(hss, uar(ALICE, ALICE_IMPU, cx.UAR_REGISTRATION_AND_CAPABILITIES))
    assert experimental(ans) == 2001 and ans.get("Server-Name") in SCSCFS[1:]


def test_uar_without_scscfs_answers_empty_capabilities() -> None:
    ans = ask(new_hss({**DATA, "scscfs": []}), uar(ALICE, ALICE_IMPU))
    assert experimental(ans) == 2001 and ans.get("Server-Name") is None
    assert ans.find("Server-Capabilities").items == []


def test_uar_missing_public_identity(hss: Hss) -> None:
    ans = ask(hss, request(CODE_UAR, avp("User-Name", ALICE)))
    assert ans.get("Result-Code") == 5005 and not ans.flags & FLAG_E
    failed = ans.find("Failed-AVP").items[0]
    assert (failed.code, failed.vendor) == (601, VENDOR_3GPP)


def test_uar_missing_session_id(hss: Hss) -> None:
    req = request(CODE_UAR, avp("User-Name", ALICE), avp("Public-Identity", ALICE_IMPU), session=False)
    ans = ask(hss, req)
    assert ans.get("Result-Code") == 5005 and ans.find("Failed-AVP").items[0].code == 263


def test_uar_bad_authorization_type(hss: Hss) -> None:
    ans = ask(hss, uar(ALICE, ALICE_IMPU, kind=7))
    assert ans.get("Result-Code") == 5004
    assert ans.find("Failed-AVP").items[0].value() == 7


# ---- MAR ----


def auth_items(ans: Message) -> list[Avp]:
    items = ans.find_all("SIP-Auth-Data-Item")
    assert ans.get("SIP-Number-Auth-Items") == len(items)
    return items


def test_mar_digest_md5_gives_a_nonce_and_the_plain_password(hss: Hss) -> None:
    ans = ask(hss, mar(BOB, BOB_IMPU, "Digest-MD5"))
    assert ans.get("Result-Code") == 2001
    assert ans.get("User-Name") == BOB and ans.get("Public-Identity") == BOB_IMPU  # ims_auth needs both
    [item] = auth_items(ans)
    assert item.get("SIP-Item-Number") == 1
    assert item.get("SIP-Authentication-Scheme") == "Digest-MD5"
    assert item.get("SIP-Authorization") == b"bobpw"
    assert len(item.get("SIP-Authenticate")) == cx.NONCE_BYTES
    again = auth_items(ask(hss, mar(BOB, BOB_IMPU, "Digest-MD5")))[0]
    assert again.get("SIP-Authenticate") != item.get("SIP-Authenticate")


@pytest.mark.parametrize("scheme", ["SIP Digest", "Digest", "sip digest"])
def test_mar_sip_digest_gives_ha1(hss: Hss, scheme: str) -> None:
    [item] = auth_items(ask(hss, mar(BOB, BOB_IMPU, scheme)))
    assert item.get("SIP-Authentication-Scheme") == scheme
    digest = item.find("SIP-Digest-Authenticate")
    assert digest.get("Digest-HA1") == hashlib.md5(b"bob@ims.test:ims.test:bobpw").hexdigest()
    assert digest.get("Digest-Realm") == "ims.test" and digest.get("Digest-QoP") == "auth"
    assert item.find("SIP-Authorization") is None


def test_mar_aka_vector_is_consistent_with_milenage(hss: Hss) -> None:
    ans = ask(hss, mar(ALICE, ALICE_IMPU, "Digest-AKAv1-MD5"))
    [item] = auth_items(ans)
    assert item.get("SIP-Authentication-Scheme") == "Digest-AKAv1-MD5"
    nonce = item.get("SIP-Authenticate")
    rand, autn = nonce[:16], nonce[16:]
    k, opc = bytes.fromhex(K), bytes.fromhex(OPC)
    out = milenage.milenage(k, opc, rand)
    sqn = bytes(x ^ y for x, y in zip(autn[:6], out.ak))
    assert int.from_bytes(sqn, "big") == milenage.SQN_STEP  # the first vector after sqn 0
    assert autn[6:8] == b"\x80\x00"
    assert autn[8:] == milenage.f1(k, opc, rand, sqn, autn[6:8])  # what a USIM checks
    assert item.get("SIP-Authorization") == out.res
    assert item.get("Confidentiality-Key") == out.ck and item.get("Integrity-Key") == out.ik
    assert hss.sqn(ALICE) == milenage.SQN_STEP


def sqn_of(item: Avp, k: str = K, opc: str = OPC) -> int:
    nonce = item.get("SIP-Authenticate")
    ak = milenage.milenage(bytes.fromhex(k), bytes.fromhex(opc), nonce[:16]).ak
    return int.from_bytes(bytes(x ^ y for x, y in zip(nonce[16:22], ak)), "big")


def test_mar_several_vectors_with_rising_sqn(hss: Hss) -> None:
    items = auth_items(ask(hss, mar(CAROL, CAROL_IMPU, "Digest-AKAv1-MD5", count=3)))
    assert [i.get("SIP-Item-Number") for i in items] == [1, 2, 3]
    assert [sqn_of(i) for i in items] == [3232, 3264, 3296]  # from the file's sqn 3200
    assert len({i.get("SIP-Authenticate")[:16] for i in items}) == 3
    nxt = auth_items(ask(hss, mar(CAROL, CAROL_IMPU, "Digest-AKAv1-MD5")))[0]
    assert sqn_of(nxt) == 3328
    many = auth_items(ask(hss, mar(CAROL, CAROL_IMPU, "Digest-AKAv1-MD5", count=50)))
    assert len(many) == cx.MAX_VECTORS


def test_mar_resync_takes_the_usim_sqn(hss: Hss) -> None:
    auth_items(ask(hss, mar(ALICE, ALICE_IMPU, "Digest-AKAv1-MD5")))
    k, opc, rand = bytes.fromhex(K), bytes.fromhex(OPC), bytes(range(16))
    sqn_ms = 32 * 1000
    auts = milenage.auts(k, opc, rand, sqn_ms)
    items = auth_items(ask(hss, mar(ALICE, ALICE_IMPU, "Digest-AKAv1-MD5", authorization=rand + auts)))
    assert sqn_of(items[0]) == sqn_ms + milenage.SQN_STEP
    assert hss.sqn(ALICE) == sqn_ms + milenage.SQN_STEP


def test_mar_resync_named_digest_md5_still_answers_aka(hss: Hss) -> None:
    # ims_www_resync_auth() sends its default algorithm's scheme, e.g. Digest-MD5
    k, opc, rand = bytes.fromhex(K), bytes.fromhex(OPC), bytes(16)
    auts = milenage.auts(k, opc, rand, 6400)
    [item] = auth_items(ask(hss, mar(ALICE, ALICE_IMPU, "Digest-MD5", authorization=rand + auts)))
    assert item.get("SIP-Authentication-Scheme") == "Digest-AKAv1-MD5"
    assert sqn_of(item) == 6432


def test_mar_resync_with_a_bad_auts_keeps_our_sqn() -> None:
    log: list[str] = []
    hss = new_hss(log=log)
    rand = bytes(16)
    bad = bytearray(milenage.auts(bytes.fromhex(K), bytes.fromhex(OPC), rand, 6400))
    bad[-1] ^= 0xFF
    [item] = auth_items(ask(hss, mar(ALICE, ALICE_IMPU, "Digest-AKAv1-MD5", authorization=rand + bytes(bad))))
    assert sqn_of(item) == milenage.SQN_STEP
    assert len(log) == 1 and "AUTS does not verify" in log[0]


def test_mar_hss_selected_scheme(hss: Hss) -> None:
    # ims_auth sends "unknown" when the REGISTER named no algorithm it knows
    [aka] = auth_items(ask(hss, mar(CAROL, CAROL_IMPU, "unknown")))  # keys only
    assert aka.get("SIP-Authentication-Scheme") == "Digest-AKAv1-MD5"
    for impi, impu, pw in ((BOB, BOB_IMPU, b"bobpw"), (ALICE, ALICE_IMPU, b"alicepw")):  # a password
        [md5] = auth_items(ask(hss, mar(impi, impu, "Unknown")))
        assert md5.get("SIP-Authentication-Scheme") == "Digest-MD5"
        assert md5.get("SIP-Authorization") == pw


@pytest.mark.parametrize(
    "impi, impu, scheme",
    [
        (BOB, BOB_IMPU, "Digest-AKAv1-MD5"),  # no keys
        (CAROL, CAROL_IMPU, "Digest-MD5"),  # no password
        (CAROL, CAROL_IMPU, "SIP Digest"),
        (ALICE, ALICE_IMPU, "HTTP_DIGEST_MD5"),  # ETSI digest: not served
        (ALICE, ALICE_IMPU, "NASS-Bundled"),
    ],
)
def test_mar_scheme_not_supported(hss: Hss, impi: str, impu: str, scheme: str) -> None:
    ans = ask(hss, mar(impi, impu, scheme))
    assert experimental(ans) == 5006 and ans.find("SIP-Auth-Data-Item") is None


def test_mar_unknown_user_and_mismatch(hss: Hss) -> None:
    assert experimental(ask(hss, mar("nobody@ims.test", ALICE_IMPU))) == 5001
    assert experimental(ask(hss, mar(ALICE, BOB_IMPU))) == 5002


def test_mar_missing_user_name(hss: Hss) -> None:
    ans = ask(hss, request(CODE_MAR, avp("Public-Identity", ALICE_IMPU)))
    assert ans.get("Result-Code") == 5005 and ans.find("Failed-AVP").items[0].code == 1


# ---- SAR and LIR ----


def test_sar_registration_returns_the_subscription(hss: Hss) -> None:
    ans = ask(hss, sar(ALICE, ALICE_IMPU, cx.REGISTRATION, SCSCFS[1]))
    assert ans.get("Result-Code") == 2001 and ans.get("User-Name") == ALICE
    root = ET.fromstring(ans.get("User-Data"))
    assert root.tag == "IMSSubscription" and root.findtext("PrivateID") == ALICE
    profiles = root.findall("ServiceProfile")
    assert len(profiles) == 1
    assert [e.text for e in profiles[0].iter("Identity")] == [ALICE_IMPU, ALICE_TEL]
    for impu in (ALICE_IMPU, ALICE_TEL):
        reg = hss.registration(impu)
        assert reg is not None and reg.registered and reg.server == SCSCFS[1]
    assert hss.status()["registered_impus"] == 2


def test_user_data_escapes_xml() -> None:
    sub = cx.Subscriber("a&b@ims.test", ("sip:a&b@ims.test", "sip:<x>@ims.test"))
    root = ET.fromstring(cx.user_data(sub))
    assert [e.text for e in root.iter("Identity")] == ["sip:a&b@ims.test", "sip:<x>@ims.test"]


def test_sar_re_registration_moves_the_user(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[0])
    ans = ask(hss, sar(ALICE, ALICE_IMPU, cx.RE_REGISTRATION, SCSCFS[2]))
    assert ans.get("Result-Code") == 2001 and ans.find("User-Data") is not None
    assert hss.registration(ALICE_TEL).server == SCSCFS[2]


@pytest.mark.parametrize("kind", [cx.USER_DEREGISTRATION, cx.TIMEOUT_DEREGISTRATION, cx.ADMINISTRATIVE_DEREGISTRATION])
def test_sar_deregistration_forgets(hss: Hss, kind: int) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[0])
    ans = ask(hss, sar(ALICE, ALICE_IMPU, kind, SCSCFS[0]))
    assert ans.get("Result-Code") == 2001 and ans.find("User-Data") is None
    assert hss.registration(ALICE_IMPU) is None and hss.registration(ALICE_TEL) is None
    assert experimental(ask(hss, uar(ALICE, ALICE_IMPU))) == 2001


def test_sar_deregistration_from_a_former_scscf_is_ignored(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[1])
    assert ask(hss, sar(ALICE, ALICE_IMPU, cx.USER_DEREGISTRATION, SCSCFS[0])).get("Result-Code") == 2001
    assert hss.registration(ALICE_IMPU).server == SCSCFS[1]


def test_sar_by_public_identity_only(hss: Hss) -> None:
    ans = ask(hss, sar(None, BOB_IMPU, cx.UNREGISTERED_USER))
    assert ans.get("Result-Code") == 2001 and ans.get("User-Name") == BOB
    assert ET.fromstring(ans.get("User-Data")).findtext("PrivateID") == BOB
    reg = hss.registration(BOB_IMPU)
    assert reg is not None and not reg.registered and reg.server == SCSCFS[0]


def test_sar_failures(hss: Hss) -> None:
    assert experimental(ask(hss, sar("nobody@ims.test", None, cx.REGISTRATION))) == 5001
    assert experimental(ask(hss, sar(ALICE, BOB_IMPU, cx.REGISTRATION))) == 5002
    missing = ask(
        hss, request(CODE_SAR, avp("Public-Identity", ALICE_IMPU), avp("Server-Assignment-Type", cx.REGISTRATION))
    )
    assert missing.get("Result-Code") == 5005 and missing.find("Failed-AVP").items[0].code == 602
    no_ids = ask(hss, request(CODE_SAR, avp("Server-Name", SCSCFS[0]), avp("Server-Assignment-Type", cx.REGISTRATION)))
    assert no_ids.get("Result-Code") == 5005
    bad = ask(hss, sar(ALICE, ALICE_IMPU, 99))
    assert bad.get("Result-Code") == 5004 and bad.find("Failed-AVP").items[0].code == 614


def test_lir_registered_user(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[2])
    ans = ask(hss, lir(ALICE_TEL))
    assert ans.get("Result-Code") == 2001 and ans.get("Server-Name") == SCSCFS[2]


def test_lir_unregistered_user_gets_unregistered_service(hss: Hss) -> None:
    ans = ask(hss, lir(BOB_IMPU))
    assert experimental(ans) == 2003
    assert ans.get("Server-Name") == ask(hss, uar(BOB, BOB_IMPU)).get("Server-Name")
    ask(hss, sar(None, BOB_IMPU, cx.UNREGISTERED_USER, SCSCFS[2]))
    ans = ask(hss, lir(BOB_IMPU))  # now assigned for unregistered services
    assert ans.get("Result-Code") == 2001 and ans.get("Server-Name") == SCSCFS[2]


def test_lir_unknown_user(hss: Hss) -> None:
    assert experimental(ask(hss, lir("sip:nobody@ims.test"))) == 5001


# ---- errors, figures, reload ----


def test_undecodable_request_is_answered(hss: Hss) -> None:
    wire = encode(uar(ALICE, ALICE_IMPU))
    # a Result-Code AVP (268) of 3 bytes appended, and the message length fixed to match
    bad = wire + b"\x00\x00\x01\x0c\x40\x00\x00\x0b\x00\x00\x07\x00"
    bad = bad[:1] + len(bad).to_bytes(3, "big") + bad[4:]
    with pytest.raises(DiameterError) as err:
        decode(bad)
    ans = hss.handle_error(err.value)
    assert ans is not None and ans.get("Result-Code") == 5014 and not ans.flags & FLAG_E
    assert ans.get("Session-Id") == decode(wire).get("Session-Id")
    assert ans.find("Failed-AVP").items[0].code == 268
    assert hss.status()["requests"]["UAR"] == {"DIAMETER_INVALID_AVP_LENGTH": 1}


def test_error_without_header_is_not_answered(hss: Hss) -> None:
    with pytest.raises(DiameterError) as err:
        decode(b"\x01\x00")
    assert hss.handle_error(err.value) is None


def test_a_failing_handler_costs_one_answer() -> None:
    log: list[str] = []
    hss = new_hss(log=log)

    def boom(req: Message) -> Message:
        raise RuntimeError("boom")

    hss._handlers[CODE_LIR] = boom
    ans = ask(hss, lir(ALICE_IMPU))
    assert ans.get("Result-Code") == 5012 and ans.get("Session-Id") is not None
    assert len(log) == 1 and "boom" in log[0]
    assert hss.status()["handler_errors"] == 1
    assert experimental(ask(hss, uar(ALICE, ALICE_IMPU))) == 2001  # still serving


def test_status_counts_per_command_and_result(hss: Hss) -> None:
    ask(hss, uar(ALICE, ALICE_IMPU))
    ask(hss, uar(ALICE, ALICE_IMPU))
    ask(hss, uar(ALICE, BOB_IMPU))
    ask(hss, mar(BOB, BOB_IMPU))
    status = hss.status()
    assert status["requests"]["UAR"] == {"DIAMETER_FIRST_REGISTRATION": 2, "DIAMETER_ERROR_IDENTITIES_DONT_MATCH": 1}
    assert status["requests"]["MAR"] == {"DIAMETER_SUCCESS": 1}
    assert status["requests_total"] == 4
    assert status["subscribers"] == 3 and status["scscfs"] == SCSCFS
    lat = status["latency_ms"]
    assert lat["window"] == 4 and 0 < lat["avg"] <= lat["max"] and 0 < lat["p99"] <= lat["max"]


def test_reload_keeps_registrations_and_counters(hss: Hss) -> None:
    register(hss, ALICE, ALICE_IMPU, SCSCFS[0])
    register(hss, BOB, BOB_IMPU, SCSCFS[2])
    ask(hss, mar(CAROL, CAROL_IMPU, "Digest-AKAv1-MD5"))
    assert hss.sqn(CAROL) == 3232
    dave = {"impi": "dave@ims.test", "impus": ["sip:dave@ims.test"], "password": "d"}
    new = {**DATA, "scscfs": SCSCFS[:2], "subscribers": DATA["subscribers"] + [dave]}
    summary = hss.reload(Subscribers.from_dict(new))
    assert summary == {"subscribers": 4, "scscfs": 2, "peers": 1, "registrations_dropped": 1}
    assert hss.registration(ALICE_IMPU).server == SCSCFS[0]
    assert hss.registration(BOB_IMPU) is None  # its S-CSCF left the list
    assert hss.sqn(CAROL) == 3232  # not the file's 3200
    assert experimental(ask(hss, uar("dave@ims.test", "sip:dave@ims.test"))) == 2001


def test_reload_with_new_keys_takes_the_file_sqn(hss: Hss) -> None:
    ask(hss, mar(CAROL, CAROL_IMPU, "Digest-AKAv1-MD5"))
    subs = [dict(s) for s in DATA["subscribers"]]
    subs[2].update(k="00" * 16, sqn=64)
    hss.reload(Subscribers.from_dict({**DATA, "subscribers": subs}))
    assert hss.sqn(CAROL) == 64


def test_reload_drops_removed_identities(hss: Hss) -> None:
    register(hss, BOB, BOB_IMPU)
    hss.reload(Subscribers.from_dict({**DATA, "subscribers": DATA["subscribers"][:1]}))
    assert hss.registration(BOB_IMPU) is None
    assert experimental(ask(hss, lir(BOB_IMPU))) == 5001


# ---- subscriber data ----


@pytest.mark.parametrize(
    "change, words",
    [
        ({"realm": ""}, "realm"),
        ({"scscfs": "sip:x"}, "scscfs"),
        ({"subscribers": [{"impi": "a", "impus": []}]}, "impus"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"], "k": "00"}]}, "'k'"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"], "k": K}]}, "go together"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"], "sqn": -1}]}, "sqn"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"], "amf": "zz"}]}, "amf"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"]}, {"impi": "a", "impus": ["sip:b"]}]}, "twice"),
        ({"subscribers": [{"impi": "a", "impus": ["sip:a"]}, {"impi": "b", "impus": ["sip:a"]}]}, "twice"),
    ],
)
def test_bad_subscriber_data_is_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(SubscribersError, match=words):
        Subscribers.from_dict({**DATA, **change})


def test_op_gives_opc() -> None:
    op = "cdc202d5123e20f62b6d676ac72cb318"  # TS 35.207 test set 1
    subs = Subscribers.from_dict({"realm": "r", "subscribers": [{"impi": "a", "impus": ["sip:a"], "k": K, "op": op}]})
    assert subs.subscribers[0].opc == bytes.fromhex(OPC)
    assert subs.subscribers[0].amf == b"\x80\x00" and subs.scscfs == ()
