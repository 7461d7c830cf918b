"""Property tests of the DNS unit's query path (request bytes in, answer bytes out): whatever arrives,
no exception escapes, and an answer is either nothing or a DNS message with the query's id that
fits what the query allows over UDP."""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dns_payloads import KILLERS, ODD_NAMES, wire_name
from imsso.dns.server import MAX_QUERY, UDP_EDNS_MAX, UDP_PLAIN_MAX, answer, parse_zone

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONE = parse_zone(
    {
        "domain": "ims.test",
        "records": [
            {"name": "pcscf-1.ims.test", "type": "A", "value": "127.100.0.10"},
            {"name": "pcscf-1.ims.test", "type": "AAAA", "value": "::1"},
            {"name": "_sip._udp.ims.test", "type": "SRV", "value": "pcscf-1.ims.test", "port": 5060},
            {
                "name": "ims.test",
                "type": "NAPTR",
                "order": 10,
                "preference": 50,
                "flags": "s",
                "service": "SIP+D2U",
                "replacement": "_sip._udp.ims.test",
            },
            *[{"name": "big.ims.test", "type": "A", "value": f"127.100.1.{i}"} for i in range(1, 41)],  # ~700 B
            *[{"name": "huge.ims.test", "type": "A", "value": f"127.100.2.{i}"} for i in range(1, 81)],  # ~1.3 KB
        ],
    },
    glue="127.100.0.2",
    serial=1,
)

NAMES = [
    "pcscf-1.ims.test",
    "_sip._udp.ims.test",
    "ims.test",
    "big.ims.test",
    "huge.ims.test",
    "nobody.ims.test",
    "_udp.ims.test",
    "example.com",
    "PCSCF-1.IMS.TEST",
]
TYPES = ["A", "AAAA", "SRV", "NAPTR", "NS", "SOA", "ANY", "AXFR", "TXT", "MX"]


def advertised(data: bytes) -> int:
    """The UDP size a query allows: its EDNS buffer size if it parses with one, else 512."""
    try:
        request = DNSRecord.parse(data)
    except Exception:
        return UDP_PLAIN_MAX
    sizes = [rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT]
    return min(max(sizes[0], UDP_PLAIN_MAX), UDP_EDNS_MAX) if sizes else UDP_PLAIN_MAX


def check(data: bytes, udp: bool) -> DNSRecord | None:
    """What must hold for every input; the parsed reply for further checks."""
    wire = answer(ZONE, data, udp)  # an exception here fails the test
    if wire is None:
        return None
    reply = DNSRecord.parse(wire)
    assert reply.header.id == struct.unpack("!H", data[:2])[0]
    assert reply.header.qr == 1
    if udp:
        assert len(wire) <= advertised(data), (len(wire), advertised(data))
    return reply


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A valid query, with or without EDNS, for names in and around the zone."""
    name = draw(st.sampled_from(NAMES) | st.from_regex(r"[a-z0-9-]{1,20}\.ims\.test", fullmatch=True))
    header = DNSHeader(id=draw(st.integers(0, 0xFFFF)), rd=draw(st.integers(0, 1)))
    query = DNSRecord(header, q=DNSQuestion(name, getattr(QTYPE, draw(st.sampled_from(TYPES)))))
    if draw(st.booleans()):
        query.add_ar(EDNS0(udp_len=draw(st.integers(0, 0xFFFF))))
    return bytes(query.pack())


@st.composite
def raw_names(draw: st.DrawFn) -> bytes:
    """A query header and a question whose labels are written byte by byte, unchecked: lengths up to
    191 (what a length byte can say without being a pointer), any content, any total length."""
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60)
    length = st.integers(1, 191) | st.sampled_from([63, 64, 191])  # around the limits, often
    repeated = st.builds(lambda byte, size: bytes([byte]) * size, st.sampled_from(b"a-.\xff\x00"), length)
    label = st.binary(min_size=1, max_size=191) | repeated | text.map(str.encode).filter(lambda b: len(b) <= 191)
    labels = draw(st.lists(label, min_size=1, max_size=6))
    if draw(st.booleans()):
        labels += [b"ims", b"test"]
    qtype = draw(st.sampled_from([1, 28, 33, 35, 255, 252]))
    opt = b"\x00" + struct.pack("!HHIH", 41, draw(st.integers(0, 0xFFFF)), 0, 0)
    edns = draw(st.booleans())
    return (
        struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), 0x0100, 1, 0, 0, int(edns))
        + wire_name(*labels)
        + struct.pack("!HH", qtype, 1)
        + (opt if edns else b"")
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query with bytes overwritten, inserted, deleted, or cut off."""
    data = bytearray(draw(queries()))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        byte = draw(st.integers(0, 255) | st.sampled_from([0x3F, 0x40, 0xBF, 0xC0, 0xFF]))
        if action == "set" and where < len(data):
            data[where] = byte
        elif action == "insert":
            data[where:where] = bytes([byte]) * draw(st.integers(1, 70))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        else:
            del data[max(where, 2) :]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=700), st.booleans())
@example(b"", True)
@example(b"\x00" * 12, True)
@example(b"\xff" * 12, False)
def test_random_bytes(data: bytes, udp: bool) -> None:
    check(data, udp)


@FUZZ
@given(st.binary(min_size=2, max_size=2), st.binary(max_size=600), st.booleans())
def test_random_bytes_behind_a_query_header(qid: bytes, rest: bytes, udp: bool) -> None:
    # A QUERY header with one question, so that the fuzzing reaches the name and record parsers.
    check(qid + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00" + bytes([len(rest) % 2]) + rest, udp)


@FUZZ
@given(raw_names(), st.booleans())
def test_unchecked_labels(data: bytes, udp: bool) -> None:
    check(data, udp)


@FUZZ
@given(mutated(), st.booleans())
def test_mutated_queries(data: bytes, udp: bool) -> None:
    check(data, udp)


@FUZZ
@given(queries(), st.booleans())
def test_valid_queries_get_their_question_back(data: bytes, udp: bool) -> None:
    reply = check(data, udp)
    request = DNSRecord.parse(data)
    assert reply is not None and reply.questions == request.questions
    assert reply.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.REFUSED)


@pytest.mark.parametrize("name", sorted(KILLERS))
@pytest.mark.parametrize("udp", [True, False], ids=["udp", "tcp"])
def test_killer_queries_are_formerr(name: str, udp: bool) -> None:
    reply = check(KILLERS[name], udp)
    assert reply is not None and not reply.questions and not reply.rr
    notimp = name.startswith("notify")  # not a QUERY opcode: refused before its name is read
    assert reply.header.rcode == (RCODE.NOTIMP if notimp else RCODE.FORMERR)


@pytest.mark.parametrize("name", sorted(ODD_NAMES))
def test_odd_names_are_answered_and_match_nothing(name: str) -> None:
    reply = check(ODD_NAMES[name], True)
    assert reply is not None and reply.header.rcode in (RCODE.NXDOMAIN, RCODE.REFUSED) and not reply.rr


def test_a_dot_inside_a_label_is_not_the_zone_name() -> None:
    # Wire labels ["pcscf-1.ims", "test"] read as text would be pcscf-1.ims.test, which exists.
    assert check(ODD_NAMES["dot-inside-label"], True).header.rcode == RCODE.REFUSED


def test_query_longer_than_a_query_is_formerr() -> None:
    query = DNSRecord.question("pcscf-1.ims.test")
    query.add_ar(EDNS0(udp_len=1232, opts=[]))
    data = bytes(query.pack())
    padded = data[:-2] + struct.pack("!H", MAX_QUERY) + b"\x00" * MAX_QUERY  # an OPT full of zeroes
    assert check(padded, True).header.rcode == RCODE.FORMERR


@pytest.mark.parametrize(
    "name, count, edns, truncated",
    [
        ("big", 40, None, True),
        ("big", 40, 512, True),
        ("big", 40, 1232, False),
        ("big", 40, 65535, False),
        ("huge", 80, 1232, True),
        ("huge", 80, 65535, True),
    ],
)
def test_udp_answer_size_follows_the_query(name: str, count: int, edns: int | None, truncated: bool) -> None:
    query = DNSRecord.question(f"{name}.ims.test")
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    reply = check(bytes(query.pack()), True)
    assert reply is not None and reply.header.tc == int(truncated)
    assert len(reply.rr) == (0 if truncated else count)
    assert len(check(bytes(query.pack()), False).rr) == count  # TCP carries it whole
