"""DNS queries an attacker sends: each one once stopped, or could stop, the DNS unit."""

from __future__ import annotations

import struct

QUERY_ID = 0x1234
Q_A_IN = b"\x00\x01\x00\x01"


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100, qid: int = QUERY_ID) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def wire_name(*labels: bytes) -> bytes:
    """Labels as given, with no check: a length byte of 64 to 191 is what dnslib parses but cannot pack."""
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer_chain(depth: int) -> bytes:
    """A question, then `depth` additional records whose names each point to the one before:
    decoding them costs the parser work that grows with the square of the depth."""
    body, previous = bytearray(wire_name(b"ims", b"test") + Q_A_IN), None
    for _ in range(depth):
        offset = 12 + len(body)
        tail = b"\x00" if previous is None else struct.pack("!H", 0xC000 | previous)
        body += b"\x01a" + tail + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x7f\x00\x00\x01"
        previous = offset
    return header(ar=depth) + bytes(body)


def name_over_255_by_pointers() -> bytes:
    """Two questions: the second adds 63-byte labels before a pointer to the first (a 256+ byte name)."""
    first = wire_name(b"b" * 63, b"c" * 63, b"ims", b"test")
    second = bytes([63]) + b"a" * 63 + bytes([63]) + b"d" * 63 + struct.pack("!H", 0xC000 | 12)
    return header(qd=2) + first + Q_A_IN + second + Q_A_IN


# Queries whose answer must be FORMERR (or nothing), and after which the server still answers.
KILLERS: dict[str, bytes] = {
    "label-64-bytes": header() + wire_name(b"a" * 64, b"ims", b"test") + Q_A_IN,
    "label-191-bytes": header() + wire_name(b"x" * 191) + Q_A_IN,
    "name-over-255": header() + wire_name(*[b"a" * 63] * 4, b"ims", b"test") + Q_A_IN,
    "name-over-255-by-pointers": name_over_255_by_pointers(),
    "pointer-loop": header() + b"\x01a\xc0\x0c" + Q_A_IN,
    "pointer-forward": header() + b"\xc0\x20" + Q_A_IN + b"\x00" * 20,
    "invalid-utf8-label": header() + wire_name(b"\xff\xfe", b"ims", b"test") + Q_A_IN,
    "notify-with-long-label": header(flags=0x2000) + wire_name(b"n" * 64) + Q_A_IN,
    "two-questions-long-label": header(qd=2) + wire_name(b"ims", b"test") + Q_A_IN + wire_name(b"q" * 100) + Q_A_IN,
    "no-question": header(qd=0),
    "counts-lie": header(qd=40, an=40) + wire_name(b"ims", b"test"),
    "truncated-question": header() + b"\x07pcscf-1\x03im",
    "pointer-chain-in-additional": pointer_chain(900),
}

# Odd but well-formed names: answered (NXDOMAIN or REFUSED), never mistaken for a zone name.
ODD_NAMES: dict[str, bytes] = {
    "non-ascii-label": header() + wire_name("é".encode(), b"ims", b"test") + Q_A_IN,
    "dot-inside-label": header() + wire_name(b"pcscf-1.ims", b"test") + Q_A_IN,
    "binary-label": header() + wire_name(b"\x00\x01 \\", b"ims", b"test") + Q_A_IN,
}
