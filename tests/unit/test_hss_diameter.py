"""The Diameter codec of the HSS: round trips, AVP layout, framing, malformed input."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from imsso.hss.diameter import (
    APP_CX,
    AVP_M,
    AVP_V,
    CODE_CE,
    CODE_UAR,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    INVALID_AVP_LENGTH,
    INVALID_AVP_VALUE,
    INVALID_HDR_BITS,
    INVALID_MESSAGE_LENGTH,
    UNSUPPORTED_VERSION,
    VENDOR_3GPP,
    Avp,
    DiameterError,
    Framer,
    FramingError,
    Message,
    avp,
    decode,
    encode,
    encode_avp,
)


def uar(**extra: object) -> Message:
    return Message(
        CODE_UAR,
        FLAG_R | FLAG_P,
        APP_CX,
        0x11223344,
        0x55667788,
        [
            avp("Session-Id", "icscf.ims.test;1;2"),
            avp("Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]),
            avp("Auth-Session-State", 1),
            avp("Origin-Host", "icscf.ims.test"),
            avp("Origin-Realm", "ims.test"),
            avp("User-Name", "alice@ims.test"),
            avp("Public-Identity", "sip:alice@ims.test"),
            avp("Visited-Network-Identifier", b"ims.test"),
        ],
    )


def raw_avp(code: int, flags: int, payload: bytes, vendor: int | None = None, length: int | None = None) -> bytes:
    head = 12 if vendor is not None else 8
    size = head + len(payload) if length is None else length
    out = struct.pack(">II", code, (flags << 24) | size)
    if vendor is not None:
        out += struct.pack(">I", vendor)
    return out + payload + b"\x00" * (-(head + len(payload)) % 4)


def raw_message(
    body: bytes, code: int = CODE_UAR, flags: int = FLAG_R | FLAG_P, version: int = 1, length: int | None = None
) -> bytes:
    size = 20 + len(body) if length is None else length
    return struct.pack(">IIIII", (version << 24) | size, (flags << 24) | code, APP_CX, 7, 9) + body


# ---- round trips and layout ----


def test_round_trip_keeps_header_and_avps() -> None:
    msg = uar()
    wire = encode(msg)
    assert len(wire) % 4 == 0 and int.from_bytes(wire[1:4], "big") == len(wire)
    back = decode(wire)
    assert back == msg
    assert (back.code, back.app_id, back.hop_by_hop, back.end_to_end) == (300, APP_CX, 0x11223344, 0x55667788)
    assert back.is_request and back.flags == FLAG_R | FLAG_P
    assert back.get("User-Name") == "alice@ims.test"
    assert back.get("Public-Identity") == "sip:alice@ims.test"
    assert back.find("Vendor-Specific-Application-Id").get("Auth-Application-Id") == APP_CX


def test_all_types_round_trip() -> None:
    msg = Message(
        CODE_CE,
        FLAG_R,
        0,
        1,
        2,
        [
            avp("Host-IP-Address", "127.0.0.1"),
            avp("Host-IP-Address", "::1"),
            avp("Result-Code", 4294967295),
            avp("Origin-State-Id", 0),
            avp("Product-Name", "ünïcode"),
            avp("User-Data", b"\x00\xff<xml/>"),
            avp("Auth-Session-State", 1),
            Avp(999, b"\x01\x02\x03", vendor=12345),  # unknown: kept as it came
        ],
    )
    back = decode(encode(msg))
    assert back == msg
    assert [a.value() for a in back.find_all("Host-IP-Address")] == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert back.get("Result-Code") == 4294967295
    assert back.get("Product-Name") == "ünïcode"
    assert back.get("User-Data") == b"\x00\xff<xml/>"
    unknown = back.avps[-1]
    assert (unknown.code, unknown.vendor, unknown.data, unknown.name) == (999, 12345, b"\x01\x02\x03", "AVP-999/12345")


def test_vendor_avp_has_v_bit_and_vendor_id() -> None:
    wire = encode_avp(avp("Public-Identity", "sip:a@b"))
    code, word, vendor = struct.unpack_from(">III", wire)
    assert code == 601 and vendor == VENDOR_3GPP
    assert word >> 24 == AVP_V | AVP_M
    assert word & 0xFFFFFF == 12 + len("sip:a@b")
    base = encode_avp(avp("Origin-Host", "hss"))
    assert struct.unpack_from(">II", base)[1] >> 24 == AVP_M  # no V bit, 8-byte header
    assert len(base) == 12  # 8 + 3, padded to 12


def test_padding_is_outside_the_avp_length_and_zero() -> None:
    wire = encode_avp(avp("User-Name", "abcde"))
    assert struct.unpack_from(">II", wire)[1] & 0xFFFFFF == 13
    assert len(wire) == 16 and wire[13:] == b"\x00\x00\x00"
    msg = Message(CODE_UAR, FLAG_R, APP_CX, 1, 1, [avp("User-Name", "abcde"), avp("Result-Code", 7)])
    assert decode(encode(msg)).get("Result-Code") == 7  # the next AVP starts after the padding


def test_grouped_nests_and_decodes_members() -> None:
    inner = avp("Experimental-Result", [avp("Vendor-Id", VENDOR_3GPP), avp("Experimental-Result-Code", 5001)])
    item = avp(
        "SIP-Auth-Data-Item",
        [
            avp("SIP-Item-Number", 1),
            avp("SIP-Authenticate", bytes(32)),
            avp("SIP-Digest-Authenticate", [avp("Digest-HA1", "00" * 16)]),
        ],
    )
    back = decode(encode(Message(CODE_UAR, 0, APP_CX, 1, 1, [inner, item])))
    er = back.find("Experimental-Result")
    assert er.get("Experimental-Result-Code") == 5001 and er.get("Vendor-Id") == VENDOR_3GPP
    ada = back.find("SIP-Auth-Data-Item")
    assert ada.vendor == VENDOR_3GPP and ada.flags & AVP_V
    assert ada.find("SIP-Digest-Authenticate").get("Digest-HA1") == "00" * 16
    assert ada.value()[1].value() == bytes(32)


def test_answer_keeps_identifiers_and_proxiable_bit() -> None:
    ans = uar().answer([avp("Result-Code", 2001)])
    assert (ans.code, ans.app_id, ans.hop_by_hop, ans.end_to_end) == (CODE_UAR, APP_CX, 0x11223344, 0x55667788)
    assert ans.flags == FLAG_P and not ans.is_request and ans.name == "UAA"
    assert uar().answer(error=True).flags == FLAG_P | FLAG_E


# ---- framing ----


def test_framer_handles_any_split() -> None:
    wire = encode(uar()) + encode(uar())
    for cut in range(1, len(wire)):
        framer = Framer()
        frames = framer.feed(wire[:cut]) + framer.feed(wire[cut:])
        assert [decode(f) for f in frames] == [uar(), uar()], cut
        assert framer.pending == 0


def test_framer_byte_by_byte() -> None:
    framer, frames = Framer(), []
    for b in encode(uar()):
        frames += framer.feed(bytes([b]))
    assert len(frames) == 1 and decode(frames[0]) == uar()


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n\r\n", b"\x02\x00\x00\x14" + bytes(16)])
def test_framer_refuses_other_protocols_without_a_header(garbage: bytes) -> None:
    with pytest.raises(FramingError) as err:
        Framer().feed(garbage)
    assert err.value.result_code == UNSUPPORTED_VERSION and err.value.message is None


@pytest.mark.parametrize("length", [8, 22, 1 << 21])
def test_framer_refuses_impossible_lengths_with_the_header(length: int) -> None:
    with pytest.raises(FramingError) as err:
        Framer().feed(raw_message(b"", length=length))
    assert err.value.result_code == INVALID_MESSAGE_LENGTH
    assert err.value.message is not None and err.value.message.code == CODE_UAR


# ---- malformed messages ----


def fault(data: bytes) -> DiameterError:
    with pytest.raises(DiameterError) as err:
        decode(data)
    return err.value


def test_short_buffer() -> None:
    err = fault(b"\x01\x00\x00")
    assert err.result_code == INVALID_MESSAGE_LENGTH and err.message is None


def test_wrong_version() -> None:
    err = fault(raw_message(b"", version=2))
    assert err.result_code == UNSUPPORTED_VERSION and err.message.code == CODE_UAR


def test_length_field_disagrees() -> None:
    assert fault(raw_message(b"", length=24)).result_code == INVALID_MESSAGE_LENGTH


def test_request_with_error_bit() -> None:
    err = fault(raw_message(b"", flags=FLAG_R | FLAG_E))
    assert err.result_code == INVALID_HDR_BITS and err.message.hop_by_hop == 7


def test_avp_length_shorter_than_its_header() -> None:
    body = raw_avp(263, AVP_M, b"s;1") + raw_avp(1, AVP_M, b"abcd", length=4)
    err = fault(raw_message(body))
    assert err.result_code == INVALID_AVP_LENGTH
    assert err.failed_avp.code == 1
    assert err.message.get("Session-Id") == "s;1"  # what was read before stays, for the answer


def test_avp_running_past_the_message() -> None:
    err = fault(raw_message(raw_avp(1, AVP_M, b"abcd", length=40)))
    assert err.result_code == INVALID_AVP_LENGTH and err.failed_avp.code == 1


def test_truncated_avp_header() -> None:
    assert fault(raw_message(b"\x00\x00\x01\x07")).result_code == INVALID_AVP_LENGTH


def test_unsigned32_of_wrong_size() -> None:
    err = fault(raw_message(raw_avp(268, AVP_M, b"\x00\x00\x07")))
    assert err.result_code == INVALID_AVP_LENGTH and err.failed_avp.name == "Result-Code"


def test_utf8_string_that_is_not_utf8() -> None:
    err = fault(raw_message(raw_avp(601, AVP_M | AVP_V, b"\xff\xfe", vendor=VENDOR_3GPP)))
    assert err.result_code == INVALID_AVP_VALUE and err.failed_avp.name == "Public-Identity"


def test_address_of_unknown_family() -> None:
    err = fault(raw_message(raw_avp(257, AVP_M, b"\x00\x09\x7f\x00\x00\x01")))
    assert err.result_code == INVALID_AVP_VALUE


def test_ipv4_address_of_wrong_size() -> None:
    assert fault(raw_message(raw_avp(257, AVP_M, b"\x00\x01\x7f\x00"))).result_code == INVALID_AVP_LENGTH


def test_fault_inside_a_grouped_avp_names_the_outer_avp() -> None:
    broken_member = raw_avp(266, AVP_M, b"\x00\x00")  # Vendor-Id of 2 bytes
    body = raw_avp(263, AVP_M, b"s;2") + raw_avp(297, AVP_M, broken_member)
    err = fault(raw_message(body))
    assert err.result_code == INVALID_AVP_LENGTH
    assert err.failed_avp.name == "Experimental-Result"
    assert err.message.get("Session-Id") == "s;2"


def test_unknown_mandatory_avp_is_tolerated() -> None:
    body = raw_avp(263, AVP_M, b"s;3") + raw_avp(502, AVP_M | AVP_V, b"x", vendor=13019)
    msg = decode(raw_message(body))
    assert msg.get("Session-Id") == "s;3" and msg.avps[1].data == b"x"


def test_failed_avp_content_is_never_refused() -> None:
    broken = raw_avp(268, AVP_M, b"\x00\x00\x07")  # the Result-Code of 3 bytes we complained of
    msg = decode(raw_message(raw_avp(268, AVP_M, struct.pack(">I", 5014)) + raw_avp(279, AVP_M, broken), flags=FLAG_P))
    failed = msg.find("Failed-AVP")
    assert msg.get("Result-Code") == 5014 and failed.items is not None
    assert failed.items[0].code == 268 and failed.items[0].data == b"\x00\x00\x07"
    garbled = decode(raw_message(raw_avp(279, AVP_M, b"\x00\x00\x01"), flags=FLAG_P))
    assert garbled.find("Failed-AVP").items is None and garbled.find("Failed-AVP").data == b"\x00\x00\x01"
