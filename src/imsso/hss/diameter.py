"""Diameter messages (RFC 6733) and the Cx AVPs of TS 29.229 this HSS uses. Pure: no I/O.

    msg = Message(CODE_UAR, FLAG_R | FLAG_P, APP_CX, hop, end, [avp("Session-Id", "s;1"), ...])
    wire = encode(msg); decode(wire) == msg
    framer = Framer(); for frame in framer.feed(chunk): decode(frame)

An AVP keeps its payload as bytes; `value()` converts it by the dictionary's type. Grouped AVPs
known to the dictionary are decoded (and so checked) with their message. Unknown AVPs are kept as
opaque bytes and ignored by the handlers, whatever their M bit: a Kamailio MAR may carry ETSI AVPs
we do not need. Malformed input raises DiameterError with the Result-Code an answer should carry.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
HEADER_LEN = 20
MAX_LENGTH = 64 << 10  # Cx messages are a few KiB (an SAA with User-Data, an MAA with 5 vectors)
MAX_DEPTH = 8  # grouped AVPs nest two or three deep in Cx

FLAG_R, FLAG_P, FLAG_E, FLAG_T = 0x80, 0x40, 0x20, 0x10
AVP_V, AVP_M, AVP_P = 0x80, 0x40, 0x20

VENDOR_3GPP = 10415
APP_CX = 16777216
APP_RELAY = 0xFFFFFFFF

CODE_CE, CODE_DW, CODE_DP = 257, 280, 282
CODE_UAR, CODE_SAR, CODE_LIR, CODE_MAR, CODE_RTR, CODE_PPR = 300, 301, 302, 303, 304, 305
COMMAND_NAMES = {
    CODE_CE: "CER",
    CODE_DW: "DWR",
    CODE_DP: "DPR",
    CODE_UAR: "UAR",
    CODE_SAR: "SAR",
    CODE_LIR: "LIR",
    CODE_MAR: "MAR",
    CODE_RTR: "RTR",
    CODE_PPR: "PPR",
}

# Result-Code values (RFC 6733 7.1)
SUCCESS = 2001
COMMAND_UNSUPPORTED = 3001
UNKNOWN_PEER = 3010
APPLICATION_UNSUPPORTED = 3007
INVALID_HDR_BITS = 3008
INVALID_AVP_BITS = 3009
INVALID_AVP_VALUE = 5004
MISSING_AVP = 5005
NO_COMMON_APPLICATION = 5010
UNSUPPORTED_VERSION = 5011
UNABLE_TO_COMPLY = 5012
INVALID_AVP_LENGTH = 5014
INVALID_MESSAGE_LENGTH = 5015
RESULT_NAMES = {
    SUCCESS: "DIAMETER_SUCCESS",
    COMMAND_UNSUPPORTED: "DIAMETER_COMMAND_UNSUPPORTED",
    APPLICATION_UNSUPPORTED: "DIAMETER_APPLICATION_UNSUPPORTED",
    UNKNOWN_PEER: "DIAMETER_UNKNOWN_PEER",
    INVALID_HDR_BITS: "DIAMETER_INVALID_HDR_BITS",
    INVALID_AVP_BITS: "DIAMETER_INVALID_AVP_BITS",
    INVALID_AVP_VALUE: "DIAMETER_INVALID_AVP_VALUE",
    MISSING_AVP: "DIAMETER_MISSING_AVP",
    NO_COMMON_APPLICATION: "DIAMETER_NO_COMMON_APPLICATION",
    UNSUPPORTED_VERSION: "DIAMETER_UNSUPPORTED_VERSION",
    UNABLE_TO_COMPLY: "DIAMETER_UNABLE_TO_COMPLY",
    INVALID_AVP_LENGTH: "DIAMETER_INVALID_AVP_LENGTH",
    INVALID_MESSAGE_LENGTH: "DIAMETER_INVALID_MESSAGE_LENGTH",
}

# AVP data types (RFC 6733 4.2, 4.3)
OCTETS, UTF8, IDENTITY, U32, U64, I32, ENUM, ADDRESS, GROUPED = (
    "OctetString",
    "UTF8String",
    "DiameterIdentity",
    "Unsigned32",
    "Unsigned64",
    "Integer32",
    "Enumerated",
    "Address",
    "Grouped",
)
FIXED_SIZE = {U32: 4, I32: 4, ENUM: 4, U64: 8}

FAILED_AVP_CODE = 279
_HEADER = struct.Struct(">IIIII")
_AVP = struct.Struct(">II")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class AvpDef:
    name: str
    code: int
    vendor: int
    type: str
    mandatory: bool = True  # whether we set the M bit when we send it


def _defs() -> list[AvpDef]:
    base = [
        ("User-Name", 1, UTF8),
        ("Host-IP-Address", 257, ADDRESS),
        ("Auth-Application-Id", 258, U32),
        ("Acct-Application-Id", 259, U32),
        ("Vendor-Specific-Application-Id", 260, GROUPED),
        ("Session-Id", 263, UTF8),
        ("Origin-Host", 264, IDENTITY),
        ("Supported-Vendor-Id", 265, U32),
        ("Vendor-Id", 266, U32),
        ("Firmware-Revision", 267, U32),
        ("Result-Code", 268, U32),
        ("Product-Name", 269, UTF8),
        ("Disconnect-Cause", 273, ENUM),
        ("Auth-Session-State", 277, ENUM),
        ("Origin-State-Id", 278, U32),
        ("Failed-AVP", 279, GROUPED),
        ("Error-Message", 281, UTF8),
        ("Route-Record", 282, IDENTITY),
        ("Destination-Realm", 283, IDENTITY),
        ("Proxy-Info", 284, GROUPED),
        ("Destination-Host", 293, IDENTITY),
        ("Error-Reporting-Host", 294, IDENTITY),
        ("Origin-Realm", 296, IDENTITY),
        ("Experimental-Result", 297, GROUPED),
        ("Experimental-Result-Code", 298, U32),
        ("Inband-Security-Id", 299, U32),
        ("Proxy-Host", 280, IDENTITY),
        ("Proxy-State", 33, OCTETS),
        # RFC 4590 Digest AVPs, inside SIP-Digest-Authenticate (TS 29.229 6.3.36)
        ("Digest-Realm", 104, UTF8),
        ("Digest-QoP", 110, UTF8),
        ("Digest-Algorithm", 111, UTF8),
        ("Digest-HA1", 121, UTF8),
    ]
    cx = [  # TS 29.229 6.3, all vendor 3GPP
        ("Visited-Network-Identifier", 600, OCTETS),
        ("Public-Identity", 601, UTF8),
        ("Server-Name", 602, UTF8),
        ("Server-Capabilities", 603, GROUPED),
        ("Mandatory-Capability", 604, U32),
        ("Optional-Capability", 605, U32),
        ("User-Data", 606, OCTETS),
        ("SIP-Number-Auth-Items", 607, U32),
        ("SIP-Authentication-Scheme", 608, UTF8),
        ("SIP-Authenticate", 609, OCTETS),
        ("SIP-Authorization", 610, OCTETS),
        ("SIP-Authentication-Context", 611, OCTETS),
        ("SIP-Auth-Data-Item", 612, GROUPED),
        ("SIP-Item-Number", 613, U32),
        ("Server-Assignment-Type", 614, ENUM),
        ("Deregistration-Reason", 615, GROUPED),
        ("Reason-Code", 616, ENUM),
        ("Reason-Info", 617, UTF8),
        ("Charging-Information", 618, GROUPED),
        ("Primary-Event-Charging-Function-Name", 619, OCTETS),
        ("Secondary-Event-Charging-Function-Name", 620, OCTETS),
        ("Primary-Charging-Collection-Function-Name", 621, OCTETS),
        ("Secondary-Charging-Collection-Function-Name", 622, OCTETS),
        ("User-Authorization-Type", 623, ENUM),
        ("User-Data-Already-Available", 624, ENUM),
        ("Confidentiality-Key", 625, OCTETS),
        ("Integrity-Key", 626, OCTETS),
    ]
    # later Cx AVPs are sent without the M bit (TS 29.229 table 6.3.1)
    cx_late = [
        ("Supported-Features", 628, GROUPED),
        ("Feature-List-ID", 629, U32),
        ("Feature-List", 630, U32),
        ("SIP-Digest-Authenticate", 635, GROUPED),
        ("UAR-Flags", 637, U32),
        ("Call-ID-SIP-Header", 643, OCTETS),
    ]
    return (
        [AvpDef(n, c, 0, t) for n, c, t in base]
        + [AvpDef(n, c, VENDOR_3GPP, t) for n, c, t in cx]
        + [AvpDef(n, c, VENDOR_3GPP, t, mandatory=False) for n, c, t in cx_late]
    )


DICTIONARY: dict[str, AvpDef] = {d.name: d for d in _defs()}
BY_CODE: dict[tuple[int, int], AvpDef] = {(d.code, d.vendor): d for d in DICTIONARY.values()}


class DiameterError(Exception):
    """Malformed input. `message` holds the header and the AVPs read before the fault (None when
    not even a header could be read): with it a request can still be answered."""

    def __init__(self, result_code: int, text: str, failed_avp: Avp | None = None, message: Message | None = None):
        super().__init__(text)
        self.result_code = result_code
        self.failed_avp = failed_avp
        self.message = message


class FramingError(DiameterError):
    """The byte stream cannot be cut into messages any more: the connection has to close."""


class Avp:
    __slots__ = ("code", "data", "flags", "items", "vendor")

    def __init__(
        self, code: int, data: bytes = b"", vendor: int = 0, flags: int = AVP_M, items: list[Avp] | None = None
    ):
        self.code = code
        self.vendor = vendor
        self.flags = (flags | AVP_V) if vendor else (flags & ~AVP_V)
        self.data = data
        self.items = items  # decoded members of a grouped AVP, else None

    @property
    def definition(self) -> AvpDef | None:
        return BY_CODE.get((self.code, self.vendor))

    @property
    def name(self) -> str:
        d = self.definition
        return d.name if d else f"AVP-{self.code}" + (f"/{self.vendor}" if self.vendor else "")

    def payload(self) -> bytes:
        if self.items is not None:
            return b"".join(encode_avp(a) for a in self.items)
        return self.data

    def value(self) -> Any:
        d = self.definition
        return _convert(d.type if d else OCTETS, self)

    def find(self, name: str) -> Avp | None:
        return _find(self.items or [], DICTIONARY[name])

    def get(self, name: str, default: Any = None) -> Any:
        found = self.find(name)
        return default if found is None else found.value()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Avp)
            and (self.code, self.vendor, self.flags) == (other.code, other.vendor, other.flags)
            and self.payload() == other.payload()
        )

    def __repr__(self) -> str:
        if self.items is not None:
            return f"{self.name}{self.items!r}"
        try:
            return f"{self.name}={self.value()!r}"
        except DiameterError:
            return f"{self.name}={self.data!r}"


@dataclass
class Message:
    code: int
    flags: int = 0
    app_id: int = 0
    hop_by_hop: int = 0
    end_to_end: int = 0
    avps: list[Avp] = field(default_factory=list)

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def name(self) -> str:
        base = COMMAND_NAMES.get(self.code, f"command-{self.code}")
        if self.is_request:
            return base
        return base[:-1] + "A" if base.endswith("R") else base

    def find(self, name: str) -> Avp | None:
        return _find(self.avps, DICTIONARY[name])

    def find_all(self, name: str) -> list[Avp]:
        d = DICTIONARY[name]
        return [a for a in self.avps if a.code == d.code and a.vendor == d.vendor]

    def get(self, name: str, default: Any = None) -> Any:
        found = self.find(name)
        return default if found is None else found.value()

    def add(self, name: str, value: Any) -> Message:
        self.avps.append(avp(name, value))
        return self

    def answer(self, avps: Iterable[Avp] = (), error: bool = False) -> Message:
        """An answer to this request: same command, application and identifiers, P bit kept."""
        flags = (self.flags & FLAG_P) | (FLAG_E if error else 0)
        return Message(self.code, flags, self.app_id, self.hop_by_hop, self.end_to_end, list(avps))


def _find(avps: list[Avp], d: AvpDef) -> Avp | None:
    for a in avps:
        if a.code == d.code and a.vendor == d.vendor:
            return a
    return None


# ---- values ----


def avp(name: str, value: Any) -> Avp:
    """An AVP of the dictionary with its value converted by type (a list of Avp for Grouped)."""
    d = DICTIONARY[name]
    flags = AVP_M if d.mandatory else 0
    if d.type == GROUPED:
        return Avp(d.code, b"", d.vendor, flags, list(value))
    return Avp(d.code, _to_bytes(d.type, value), d.vendor, flags)


def _to_bytes(kind: str, value: Any) -> bytes:
    if kind in (U32, ENUM):
        return _U32.pack(value)
    if kind == I32:
        return _I32.pack(value)
    if kind == U64:
        return _U64.pack(value)
    if kind == ADDRESS:
        ip = ipaddress.ip_address(value)
        return (b"\x00\x01" if ip.version == 4 else b"\x00\x02") + ip.packed
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _convert(kind: str, a: Avp) -> Any:
    if kind == GROUPED:
        return a.items if a.items is not None else _decode_avps(a.data, 0, len(a.data), 1, None)
    data = a.data
    if kind in (U32, ENUM):
        return _U32.unpack(data)[0]
    if kind == I32:
        return _I32.unpack(data)[0]
    if kind == U64:
        return _U64.unpack(data)[0]
    if kind in (UTF8, IDENTITY):
        return data.decode()
    if kind == ADDRESS:
        return ipaddress.ip_address(data[2:])
    return data


def _check(kind: str, a: Avp) -> None:
    """Refuse a payload its type cannot hold (RFC 6733 7.1.5: 5014 for a wrong size, else 5004)."""
    size = FIXED_SIZE.get(kind)
    if size is not None:
        if len(a.data) != size:
            raise DiameterError(INVALID_AVP_LENGTH, f"{a.name}: {len(a.data)} bytes, not {size}", a)
    elif kind in (UTF8, IDENTITY):
        try:
            a.data.decode()
        except UnicodeDecodeError:
            raise DiameterError(INVALID_AVP_VALUE, f"{a.name}: not UTF-8", a) from None
    elif kind == ADDRESS:
        family = a.data[:2]
        want = {b"\x00\x01": 6, b"\x00\x02": 18}.get(family)
        if want is None:
            raise DiameterError(INVALID_AVP_VALUE, f"{a.name}: address family {family.hex()}", a)
        if len(a.data) != want:
            raise DiameterError(INVALID_AVP_LENGTH, f"{a.name}: {len(a.data)} bytes", a)


# ---- encoding ----


def encode_avp(a: Avp) -> bytes:
    data = a.payload()
    head = 12 if a.vendor else 8
    length = head + len(data)
    out = _AVP.pack(a.code, (a.flags << 24) | length)
    if a.vendor:
        out += _U32.pack(a.vendor)
    return out + data + b"\x00" * (-length % 4)


def encode(msg: Message) -> bytes:
    body = b"".join(encode_avp(a) for a in msg.avps)
    length = HEADER_LEN + len(body)
    return (
        _HEADER.pack((VERSION << 24) | length, (msg.flags << 24) | msg.code, msg.app_id, msg.hop_by_hop, msg.end_to_end)
        + body
    )


# ---- decoding ----


def decode_header(data: bytes) -> tuple[Message, int, int]:
    """The header as a Message without AVPs, its version and its length field."""
    word0, word1, app, hop, end = _HEADER.unpack_from(data)
    return Message(word1 & 0xFFFFFF, word1 >> 24, app, hop, end), word0 >> 24, word0 & 0xFFFFFF


def decode(data: bytes) -> Message:
    if len(data) < HEADER_LEN:
        raise DiameterError(INVALID_MESSAGE_LENGTH, f"{len(data)} bytes: shorter than a header")
    msg, version, length = decode_header(data)
    if version != VERSION:
        raise DiameterError(UNSUPPORTED_VERSION, f"version {version}", message=msg)
    if length != len(data) or length % 4:
        raise DiameterError(INVALID_MESSAGE_LENGTH, f"length field {length}, {len(data)} bytes", message=msg)
    if msg.flags & FLAG_R and msg.flags & FLAG_E:
        raise DiameterError(INVALID_HDR_BITS, "a request with the E bit", message=msg)
    _decode_avps(data, HEADER_LEN, length, 0, msg)
    return msg


def _decode_avps(data: bytes, pos: int, end: int, depth: int, msg: Message | None, strict: bool = True) -> list[Avp]:
    """AVPs of data[pos:end]; with msg, they are appended to it as they come, so that an error
    still carries the ones read before (the Session-Id, for the answer). Not strict: the
    payloads are not checked against their types."""
    out = msg.avps if msg is not None else []
    while pos < end:
        a, pos = _decode_avp(data, pos, end, depth, msg, strict)
        out.append(a)
    return out


def _decode_avp(
    data: bytes, pos: int, end: int, depth: int, msg: Message | None, strict: bool = True
) -> tuple[Avp, int]:
    if end - pos < 8:
        raise DiameterError(INVALID_AVP_LENGTH, f"{end - pos} bytes left: no room for an AVP header", message=msg)
    code, word = _AVP.unpack_from(data, pos)
    flags, length = word >> 24, word & 0xFFFFFF
    vendor, head = 0, 8
    if flags & AVP_V:
        if end - pos < 12:
            raise DiameterError(INVALID_AVP_LENGTH, f"AVP {code}: no room for a vendor id", message=msg)
        vendor, head = _U32.unpack_from(data, pos + 8)[0], 12
    a = Avp(code, b"", vendor, flags)
    if length < head or pos + length > end:
        raise DiameterError(INVALID_AVP_LENGTH, f"{a.name}: length {length}", a, msg)
    a.data = bytes(data[pos + head : pos + length])
    d = a.definition
    if d is not None and strict:
        _check_known(a, d.type, depth, msg)
    return a, pos + length + (-length % 4)


def _check_known(a: Avp, kind: str, depth: int, msg: Message | None) -> None:
    if a.code == FAILED_AVP_CODE and a.vendor == 0:
        # it holds whatever the peer found wrong: read it if it parses, never refuse it
        try:
            a.items = _decode_avps(a.data, 0, len(a.data), depth + 1, None, strict=False)
        except DiameterError:
            a.items = None
        return
    try:
        if kind == GROUPED:
            if depth >= MAX_DEPTH:
                raise DiameterError(INVALID_AVP_VALUE, f"{a.name}: nested too deep", a)
            a.items = _decode_avps(a.data, 0, len(a.data), depth + 1, None)
        else:
            _check(kind, a)
    except DiameterError as exc:
        # RFC 6733 7.5: Failed-AVP names the outermost AVP that holds the fault
        raise DiameterError(exc.result_code, str(exc), a if depth == 0 else exc.failed_avp or a, msg) from None


# ---- framing ----


class Framer:
    """Cuts a TCP byte stream into whole messages (bytes), whatever the reads' boundaries."""

    def __init__(self, max_length: int = MAX_LENGTH):
        self.max_length = max_length
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        frames = []
        while len(self._buf) >= 4:
            version, length = self._buf[0], int.from_bytes(self._buf[1:4], "big")
            if version != VERSION or length < HEADER_LEN or length % 4 or length > self.max_length:
                raise self._unframable(version, length)
            if len(self._buf) < length:
                break
            frames.append(bytes(self._buf[:length]))
            del self._buf[:length]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _unframable(self, version: int, length: int) -> FramingError:
        if version != VERSION:  # not Diameter at all, most likely: nothing in it to answer
            return FramingError(UNSUPPORTED_VERSION, f"version {version}")
        header = decode_header(bytes(self._buf))[0] if len(self._buf) >= HEADER_LEN else None
        return FramingError(INVALID_MESSAGE_LENGTH, f"length field {length}", message=header)
