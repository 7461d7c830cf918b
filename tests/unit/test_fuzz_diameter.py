"""Property tests of the Diameter codec: whatever bytes arrive, decoding either gives a message or
raises the codec's own DiameterError; valid messages survive encode/decode unchanged."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imsso.hss.diameter import (
    ADDRESS,
    DICTIONARY,
    ENUM,
    GROUPED,
    HEADER_LEN,
    I32,
    IDENTITY,
    MAX_DEPTH,
    OCTETS,
    U32,
    U64,
    UTF8,
    VERSION,
    Avp,
    DiameterError,
    Framer,
    Message,
    avp,
    decode,
    encode,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEAVES = [d for d in DICTIONARY.values() if d.type != GROUPED and d.code != 279]
GROUPS = [d for d in DICTIONARY.values() if d.type == GROUPED and d.code != 279]

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_VALUES = {
    U32: st.integers(0, 2**32 - 1),
    ENUM: st.integers(0, 2**32 - 1),
    I32: st.integers(-(2**31), 2**31 - 1),
    U64: st.integers(0, 2**64 - 1),
    UTF8: _text,
    IDENTITY: _text,
    OCTETS: st.binary(max_size=40),
    ADDRESS: st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
}


def leaf() -> st.SearchStrategy[Avp]:
    return st.sampled_from(LEAVES).flatmap(lambda d: _VALUES[d.type].map(lambda v, d=d: avp(d.name, v)))


def avps(depth: int = 0) -> st.SearchStrategy[Avp]:
    if depth >= 3:
        return leaf()
    grouped = st.sampled_from(GROUPS).flatmap(
        lambda d: st.lists(avps(depth + 1), max_size=4).map(lambda items, d=d: avp(d.name, items))
    )
    return st.one_of(leaf(), grouped)


messages = st.builds(
    Message,
    code=st.integers(0, 2**24 - 1),
    flags=st.sampled_from([0x80, 0xC0, 0x40, 0x00, 0x20]),
    app_id=st.integers(0, 2**32 - 1),
    hop_by_hop=st.integers(0, 2**32 - 1),
    end_to_end=st.integers(0, 2**32 - 1),
    avps=st.lists(avps(), max_size=6),
)


def decodes_or_refuses(data: bytes) -> Message | None:
    """decode() must answer with a message or DiameterError, nothing else; a message it gives
    must be usable: printable, re-encodable, its AVP values readable or refused the same way."""
    try:
        msg = decode(data)
    except DiameterError as err:
        assert isinstance(err.result_code, int)
        return None
    repr(msg)
    encode(msg)
    return msg


@FUZZ
@given(messages)
def test_valid_messages_round_trip(msg: Message) -> None:
    wire = encode(msg)
    back = decode(wire)
    assert back == msg and encode(back) == wire


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_behind_a_valid_header(body: bytes) -> None:
    """The bytes after a header that announces exactly them: the AVP decoder gets them all."""
    length = HEADER_LEN + len(body)
    header = ((VERSION << 24) | length).to_bytes(4, "big") + bytes([0x80]) + (300).to_bytes(3, "big")
    decodes_or_refuses(header + bytes(12) + body)


@FUZZ
@given(messages, st.data())
def test_mutated_messages_never_raise_anything_else(msg: Message, data: st.DataObject) -> None:
    wire = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "byte", "cut", "insert", "zero-length"]))
        at = data.draw(st.integers(0, max(0, len(wire) - 1)))
        if kind == "flip" and wire:
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "byte" and wire:
            wire[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del wire[at:]
        elif kind == "insert":
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=12))
        elif kind == "zero-length" and len(wire) > at + 8:
            wire[at + 5 : at + 8] = b"\x00\x00\x00"  # an AVP length field, when `at` starts one
    if len(wire) >= 4 and data.draw(st.booleans()):  # keep the header's length true to the bytes
        wire[1:4] = len(wire).to_bytes(3, "big")
    decodes_or_refuses(bytes(wire))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_framer_only_raises_its_own_error(chunks: list[bytes]) -> None:
    framer = Framer()
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                decodes_or_refuses(frame)
    except DiameterError:
        pass


def test_grouped_avps_nested_past_the_limit_are_refused() -> None:
    inner = avp("Vendor-Id", 10415)
    for _ in range(MAX_DEPTH + 4):
        inner = avp("Vendor-Specific-Application-Id", [inner])
    msg = Message(300, 0x80, 16777216, 1, 1, [avp("Session-Id", "s;1"), inner])
    try:
        decode(encode(msg))
    except DiameterError as err:
        assert err.result_code == 5004 and "nested too deep" in str(err)
    else:
        raise AssertionError("a grouped AVP nested deeper than MAX_DEPTH was accepted")


def test_address_round_trips_both_families() -> None:
    for text in ("127.0.0.1", "::1"):
        back = decode(encode(Message(257, 0x80, 0, 1, 1, [avp("Host-IP-Address", text)])))
        assert back.get("Host-IP-Address") == ipaddress.ip_address(text)
