"""The HSS side of Cx (TS 29.228 procedures, TS 29.229 protocol) and the Diameter base commands,
as request -> answer functions. No I/O here: the server feeds decoded requests to `Hss.handle`.

Choices made for Kamailio 5.6 (cdp, ims_icscf, ims_auth, ims_registrar_scscf):
- CEA carries Vendor-Specific-Application-Id {10415, 16777216}: cdp routes Cx only to peers that
  advertised it there.
- UAA and LIA name the S-CSCF with Server-Name, never Server-Capabilities, so the I-CSCF needs no
  capabilities table. An unregistered user gets a stable choice among the configured S-CSCFs,
  keyed by its private identity so that all its public identities land on the same one.
- MAA echoes User-Name and Public-Identity: ims_auth answers 403 without them.
- "Digest-MD5" (ims_auth algorithm MD5) gets a random nonce in SIP-Authenticate and the plain
  password in SIP-Authorization: ims_auth computes HA1 itself. "SIP Digest" and "Digest"
  (algorithms 3GPP-Digest, CableLabs-Digest) get SIP-Digest-Authenticate with Digest-HA1, which
  ims_auth uses as HA1 with a nonce of its own. "Digest-AKAv1-MD5"/"Digest-AKAv2-MD5" get Milenage
  vectors; "unknown" lets the HSS pick: Digest-MD5 when the subscriber has a password, else AKA.
  ims_auth asks "unknown" whenever ims_www_challenge() gets an algorithm it does not know (seen
  with Kamailio 5.6.3 for a REGISTER without Authorization and a `$var(alg)` MD5 fallback).
- A resynchronisation MAR (SIP-Authorization = RAND || AUTS) is answered with AKA vectors whatever
  scheme it names: ims_www_resync_auth() names the default algorithm's ("Digest-MD5").
- SAR REGISTRATION registers every public identity of the subscriber: they form one implicit
  registration set (TS 29.228 6.5.1.1), as the single ServiceProfile of the User-Data says.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from . import milenage
from .diameter import (
    APP_CX,
    APP_RELAY,
    APPLICATION_UNSUPPORTED,
    CODE_CE,
    CODE_DP,
    CODE_DW,
    CODE_LIR,
    CODE_MAR,
    CODE_SAR,
    CODE_UAR,
    COMMAND_UNSUPPORTED,
    FIXED_SIZE,
    FLAG_E,
    INVALID_AVP_VALUE,
    MISSING_AVP,
    NO_COMMON_APPLICATION,
    RESULT_NAMES,
    SUCCESS,
    UNABLE_TO_COMPLY,
    UNKNOWN_PEER,
    VENDOR_3GPP,
    Avp,
    DiameterError,
    Message,
    avp,
)
from .diameter import DICTIONARY as AVPS
from .state import State, StateFile, state_snapshot

CX_COMMANDS = frozenset({CODE_UAR, CODE_SAR, CODE_LIR, CODE_MAR})
NO_STATE_MAINTAINED = 1
MAX_VECTORS = 5  # ims_auth asks for 1 by default; more than a few is waste

# Experimental-Result-Code values, vendor 3GPP (TS 29.229 6.2)
FIRST_REGISTRATION, SUBSEQUENT_REGISTRATION, UNREGISTERED_SERVICE = 2001, 2002, 2003
USER_UNKNOWN, IDENTITIES_DONT_MATCH, IDENTITY_NOT_REGISTERED = 5001, 5002, 5003
AUTH_SCHEME_NOT_SUPPORTED = 5006
EXPERIMENTAL_NAMES = {
    FIRST_REGISTRATION: "DIAMETER_FIRST_REGISTRATION",
    SUBSEQUENT_REGISTRATION: "DIAMETER_SUBSEQUENT_REGISTRATION",
    UNREGISTERED_SERVICE: "DIAMETER_UNREGISTERED_SERVICE",
    USER_UNKNOWN: "DIAMETER_ERROR_USER_UNKNOWN",
    IDENTITIES_DONT_MATCH: "DIAMETER_ERROR_IDENTITIES_DONT_MATCH",
    IDENTITY_NOT_REGISTERED: "DIAMETER_ERROR_IDENTITY_NOT_REGISTERED",
    AUTH_SCHEME_NOT_SUPPORTED: "DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED",
}

# User-Authorization-Type (TS 29.229 6.3.24)
UAR_REGISTRATION, UAR_DE_REGISTRATION, UAR_REGISTRATION_AND_CAPABILITIES = 0, 1, 2
# Server-Assignment-Type (TS 29.229 6.3.15)
(
    NO_ASSIGNMENT,
    REGISTRATION,
    RE_REGISTRATION,
    UNREGISTERED_USER,
    TIMEOUT_DEREGISTRATION,
    USER_DEREGISTRATION,
    TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME,
    USER_DEREGISTRATION_STORE_SERVER_NAME,
    ADMINISTRATIVE_DEREGISTRATION,
    AUTHENTICATION_FAILURE,
    AUTHENTICATION_TIMEOUT,
    DEREGISTRATION_TOO_MUCH_DATA,
    AAA_USER_DATA_REQUEST,
    PGW_UPDATE,
    RESTORATION,
) = range(15)
SAR_REGISTERS = frozenset({REGISTRATION, RE_REGISTRATION})
SAR_DEREGISTERS = frozenset(
    {
        TIMEOUT_DEREGISTRATION,
        USER_DEREGISTRATION,
        TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME,
        USER_DEREGISTRATION_STORE_SERVER_NAME,
        ADMINISTRATIVE_DEREGISTRATION,
        DEREGISTRATION_TOO_MUCH_DATA,
    }
)
SAR_WITH_USER_DATA = frozenset(
    {NO_ASSIGNMENT, REGISTRATION, RE_REGISTRATION, UNREGISTERED_USER, AAA_USER_DATA_REQUEST, RESTORATION}
)

# SIP-Authentication-Scheme spellings (compared without case, as ims_auth does) -> what we answer
AKA, DIGEST_MD5, DIGEST_HA1 = "aka", "digest-md5", "digest-ha1"
SCHEMES = {
    "digest-akav1-md5": AKA,
    "digest-akav2-md5": AKA,
    "digest-md5": DIGEST_MD5,
    "sip digest": DIGEST_HA1,
    "digest": DIGEST_HA1,
}
HSS_SELECTED = frozenset({"", "unknown"})
NONCE_BYTES = 16


class SubscribersError(ValueError):
    """The subscribers file cannot be used."""


# ---- subscriber data ----


@dataclass(frozen=True)
class Subscriber:
    impi: str
    impus: tuple[str, ...]
    password: str | None = None
    k: bytes | None = None
    opc: bytes | None = None
    amf: bytes = b"\x80\x00"
    sqn: int = 0  # the last SQN handed out

    @property
    def has_aka(self) -> bool:
        return self.k is not None and self.opc is not None


@dataclass(frozen=True)
class Peer:
    """A Diameter client this HSS serves: the Origin-Host of its CER and the address it connects
    from (the orchestrator knows both: the CSCFs' cdp FQDN and their unit address)."""

    host: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Subscribers:
    realm: str
    scscfs: tuple[str, ...]
    subscribers: tuple[Subscriber, ...]
    identity: str | None = None  # our Origin-Host, when the file names it
    peers: tuple[Peer, ...] = ()  # no peers: every CER is refused

    def allows(self, host: str | None, address: str | None) -> bool:
        """Whether a CER with this Origin-Host, over a connection from this address, is ours."""
        ip = _ip(address)
        if host is None or ip is None:
            return False
        return any(p.host == host.lower() and p.address == ip for p in self.peers)

    @classmethod
    def load(cls, path: Path, config: Path | None = None) -> Subscribers:
        """The subscribers file, with the keys of `config` (realm, identity, scscfs) over it: the
        orchestrator renders the config with the unit and writes the subscribers as they change."""
        data: dict[str, Any] = {}
        for part in (path, config):
            if part is None:
                continue
            try:
                loaded = json.loads(Path(part).read_text())
            except (OSError, ValueError) as exc:
                raise SubscribersError(f"{part}: {exc}") from None
            if not isinstance(loaded, dict):
                raise SubscribersError(f"{part}: the top level must be an object")
            data.update(loaded)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Subscribers:
        if not isinstance(data, dict):
            raise SubscribersError("the top level must be an object")
        realm = _text(data, "realm")
        scscfs = data.get("scscfs", [])
        if not isinstance(scscfs, list) or not all(isinstance(s, str) and s for s in scscfs):
            raise SubscribersError("'scscfs' must be a list of S-CSCF names (SIP URIs)")
        entries = data.get("subscribers", [])
        if not isinstance(entries, list):
            raise SubscribersError("'subscribers' must be a list")
        identity = data.get("identity")
        if identity is not None and (not isinstance(identity, str) or not identity):
            raise SubscribersError("'identity' must be a non-empty string")
        subs = tuple(_subscriber(e, i) for i, e in enumerate(entries))
        _unique(subs)
        return cls(realm, tuple(scscfs), subs, identity, _peers(data.get("peers", [])))


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address) if address is not None else None
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # an IPv4 client seen by a dual-stack socket
    return ip


def _peers(entries: Any) -> tuple[Peer, ...]:
    want = '\'peers\' must be a list of {"host": Origin-Host, "address": IP address}'
    if not isinstance(entries, list):
        raise SubscribersError(want)
    peers = []
    for n, e in enumerate(entries):
        host = e.get("host") if isinstance(e, dict) else None
        ip = _ip(e.get("address")) if isinstance(e, dict) and isinstance(e.get("address"), str) else None
        if not isinstance(host, str) or not host or ip is None:
            raise SubscribersError(f"peers[{n}]: {e!r}: {want}")
        peers.append(Peer(host.lower(), ip))
    return tuple(peers)


def _text(rec: dict[str, Any], key: str, where: str = "") -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value:
        raise SubscribersError(f"{where}'{key}' must be a non-empty string, not {value!r}")
    return value


def _hex(rec: dict[str, Any], key: str, size: int, where: str, default: str | None = None) -> bytes | None:
    value = rec.get(key, default)
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise SubscribersError(f"{where}'{key}' must be {2 * size} hex digits or null, not {value!r}")
    return raw


def _subscriber(rec: Any, index: int) -> Subscriber:
    where = f"subscribers[{index}]: "
    if not isinstance(rec, dict):
        raise SubscribersError(f"{where}must be an object")
    impi = _text(rec, "impi", where)
    impus = rec.get("impus")
    if not isinstance(impus, list) or not impus or not all(isinstance(u, str) and u for u in impus):
        raise SubscribersError(f"{where}'impus' must be a non-empty list of public identities")
    password = rec.get("password")
    if password is not None and not isinstance(password, str):
        raise SubscribersError(f"{where}'password' must be a string or null")
    k, opc = _hex(rec, "k", 16, where), _hex(rec, "opc", 16, where)
    op = _hex(rec, "op", 16, where)
    if opc is None and op is not None and k is not None:
        opc = milenage.opc_from_op(k, op)
    if (k is None) != (opc is None):
        raise SubscribersError(f"{where}'k' and 'opc' go together")
    sqn = rec.get("sqn", 0)
    if type(sqn) is not int or not 0 <= sqn <= milenage.MASK48:
        raise SubscribersError(f"{where}'sqn' must be an integer from 0 to 2^48-1")
    amf = _hex(rec, "amf", 2, where, "8000") or b"\x80\x00"
    return Subscriber(impi, tuple(impus), password, k, opc, amf, sqn)


def _unique(subs: Iterable[Subscriber]) -> None:
    impis: set[str] = set()
    impus: set[str] = set()
    for s in subs:
        if s.impi in impis:
            raise SubscribersError(f"private identity {s.impi} appears twice")
        impis.add(s.impi)
        for u in s.impus:
            if u in impus:  # a shared public identity would make the owner ambiguous
                raise SubscribersError(f"public identity {u} appears twice")
            impus.add(u)


def user_data(sub: Subscriber) -> bytes:
    """The IMS subscription of TS 29.228 annex E: one service profile, no filter criteria."""
    ids = "".join(f"<PublicIdentity><Identity>{escape(u)}</Identity></PublicIdentity>" for u in sub.impus)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><IMSSubscription>'
        f"<PrivateID>{escape(sub.impi)}</PrivateID><ServiceProfile>{ids}</ServiceProfile>"
        "</IMSSubscription>"
    ).encode()


# ---- figures ----


class Figures:
    """Requests per command and result, and handling latency (avg since start, p99 of the last
    `window` requests)."""

    def __init__(self, window: int = 10000):
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}
        self._recent: deque[float] = deque(maxlen=window)
        self._total = 0
        self._sum = 0.0
        self._max = 0.0
        self.errors = 0  # requests that raised inside a handler

    def record(self, command: str, result: str, seconds: float) -> None:
        with self._lock:
            per = self.counts.setdefault(command, {})
            per[result] = per.get(result, 0) + 1
            self._recent.append(seconds)
            self._total += 1
            self._sum += seconds
            self._max = max(self._max, seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            recent = sorted(self._recent)
            counts = {c: dict(r) for c, r in self.counts.items()}
            total, avg, top = self._total, (self._sum / self._total if self._total else 0.0), self._max
        p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else 0.0
        return {
            "requests": counts,
            "requests_total": total,
            "handler_errors": self.errors,
            "latency_ms": {
                "avg": round(avg * 1e3, 3),
                "p99": round(p99 * 1e3, 3),
                "max": round(top * 1e3, 3),
                "window": len(recent),
            },
        }


def result_name(answer: Message) -> str:
    code = answer.get("Result-Code")
    if code is not None:
        return RESULT_NAMES.get(code, str(code))
    exp = answer.find("Experimental-Result")
    code = exp.get("Experimental-Result-Code") if exp is not None else None
    if code is None:
        return "none"
    return EXPERIMENTAL_NAMES.get(code, f"experimental-{code}")


# ---- the HSS ----


class Reject(Exception):
    """A request we answer with a failure Result-Code (and Failed-AVP) instead of handling it."""

    def __init__(self, result_code: int, failed: Avp | None = None):
        super().__init__(result_code)
        self.result_code = result_code
        self.failed = failed


@dataclass
class Registration:
    server: str
    registered: bool  # False: assigned for unregistered services (SAR UNREGISTERED_USER)


def _placeholder(name: str) -> Avp:
    """Failed-AVP content for a missing AVP: its code with a zero payload (RFC 6733 7.5)."""
    d = AVPS[name]
    size = FIXED_SIZE.get(d.type, 0)
    return Avp(d.code, bytes(size), d.vendor, 0x40 if d.mandatory else 0, [] if d.type == "Grouped" else None)


class Hss:
    def __init__(
        self,
        subscribers: Subscribers,
        identity: str,
        realm: str,
        host_ips: Iterable[str] = ("127.0.0.1",),
        product: str = "imsso-hss",
        log: Callable[[str], None] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        state: StateFile | None = None,
    ):
        self.identity = identity
        self.realm = realm
        self.host_ips = tuple(host_ips)
        self.product = product
        self.log = log or (lambda _: None)
        self.random = random
        self.figures = Figures()
        self.state_id = int(time.time()) & 0xFFFFFFFF  # Origin-State-Id: changes with each start
        self._lock = threading.RLock()
        self._registrations: dict[str, Registration] = {}
        self._sqn: dict[str, int] = {}
        self._handlers: dict[int, Callable[[Message], Message]] = {
            CODE_DW: self._dwr,
            CODE_DP: self._dpr,
            CODE_UAR: self._uar,
            CODE_SAR: self._sar,
            CODE_LIR: self._lir,
            CODE_MAR: self._mar,
        }
        self._state = state
        self._version = 0  # bumped by every change of registrations or SQN counters
        self._taken = 0  # the version last handed to the state file
        self._install(subscribers)
        if state is not None:
            self._restore(state.load())

    # ---- durable state ----

    def _restore(self, saved: State) -> None:
        """Registrations of identities still known, and SQN counters never below what was handed
        out (a USIM refuses an SQN it has seen: a lower one would force a resynchronisation)."""
        for impu, (server, registered) in saved.registrations.items():
            if impu in self._by_impu:
                self._registrations[impu] = Registration(server, registered)
        for impi, sqn in saved.sqn.items():
            if impi in self._sqn:
                self._sqn[impi] = max(self._sqn[impi], sqn)
        if saved.registrations or saved.sqn:
            self.log(f"state restored: {len(self._registrations)} registrations, {len(saved.sqn)} SQN counters")

    def _changed(self) -> None:
        self._version += 1

    def _pending(self) -> tuple[int, State] | None:
        """What to write, taken under the lock; written outside it, before the answer leaves."""
        if self._state is None or self._version == self._taken:
            return None
        self._taken = self._version
        return self._version, state_snapshot(self._registrations, self._sqn)

    def _persist(self, pending: tuple[int, State] | None) -> None:
        if pending is not None and self._state is not None:
            self._state.save(*pending)

    # ---- subscribers ----

    def _install(self, subs: Subscribers) -> None:
        old_sqn = self._sqn
        old = getattr(self, "_by_impi", {})
        self.data = subs
        self._by_impi = {s.impi: s for s in subs.subscribers}
        self._by_impu = {u: s for s in subs.subscribers for u in s.impus}
        self._user_data = {s.impi: user_data(s) for s in subs.subscribers}
        self._sqn = {s.impi: self._kept_sqn(s, old.get(s.impi), old_sqn) for s in subs.subscribers}

    @staticmethod
    def _kept_sqn(new: Subscriber, before: Subscriber | None, counters: dict[str, int]) -> int:
        """A reload keeps the counter of a known IMPI with the same K: the file's value is older
        than what we handed out. New keys start from the file."""
        if before is None or before.k != new.k or new.impi not in counters:
            return new.sqn
        return max(counters[new.impi], new.sqn)

    def reload(self, subs: Subscribers) -> dict[str, int]:
        """New subscriber data; registrations and SQN counters of known identities stay. A
        registration at an S-CSCF that left the configured list goes (its process is gone)."""
        with self._lock:
            gone = set(self.data.scscfs) - set(subs.scscfs)
            self._install(subs)
            before = len(self._registrations)
            self._registrations = {
                u: r for u, r in self._registrations.items() if u in self._by_impu and r.server not in gone
            }
            dropped = before - len(self._registrations)
            if dropped:
                self._changed()
            pending = self._pending()
        self._persist(pending)
        return {
            "subscribers": len(subs.subscribers),
            "scscfs": len(subs.scscfs),
            "peers": len(subs.peers),
            "registrations_dropped": dropped,
        }

    def status(self) -> dict[str, Any]:
        with self._lock:
            registered = sum(1 for r in self._registrations.values() if r.registered)
            per_scscf: dict[str, int] = {}
            for r in self._registrations.values():
                if r.registered:
                    per_scscf[r.server] = per_scscf.get(r.server, 0) + 1
            out = {
                "identity": self.identity,
                "realm": self.realm,
                "subscribers": len(self.data.subscribers),
                "scscfs": list(self.data.scscfs),
                "peers": [{"host": p.host, "address": str(p.address)} for p in self.data.peers],
                "state_write_failures": self._state.failures if self._state else 0,
                "registered_impus": registered,
                "unregistered_assigned_impus": len(self._registrations) - registered,
                "registered_per_scscf": per_scscf,
            }
        out.update(self.figures.snapshot())
        return out

    def registration(self, impu: str) -> Registration | None:
        with self._lock:
            return self._registrations.get(impu)

    def sqn(self, impi: str) -> int | None:
        with self._lock:
            return self._sqn.get(impi)

    # ---- entry points ----

    def handle(self, request: Message, started: float | None = None, peer: str | None = None) -> Message | None:
        """The answer to a request; None for an answer (we send no requests, so none is awaited).
        `peer`: the address the request came from, which a CER must be listed with."""
        if not request.is_request:
            return None
        t0 = time.perf_counter() if started is None else started
        answer = self._dispatch(request, peer)
        self.figures.record(request.name, result_name(answer), time.perf_counter() - t0)
        return answer

    def handle_error(self, err: DiameterError, started: float | None = None) -> Message | None:
        """The answer to a request that could not be decoded, when its header could be read."""
        req = err.message
        if req is None or not req.is_request:
            return None
        t0 = time.perf_counter() if started is None else started
        if err.result_code < 4000:  # protocol errors: E bit, base answer format
            answer = self._protocol_error(req, err.result_code, str(err))
        else:
            answer = self._answer(req, result=err.result_code, cx=req.code in CX_COMMANDS)
            if err.failed_avp is not None:
                answer.add("Failed-AVP", [err.failed_avp])
        self.figures.record(req.name, result_name(answer), time.perf_counter() - t0)
        return answer

    @staticmethod
    def closes_connection(answer: Message | None) -> bool:
        """A failed capabilities exchange ends the connection (RFC 6733 5.3)."""
        return answer is not None and answer.code == CODE_CE and answer.get("Result-Code") != SUCCESS

    def allows_peer(self, host: str | None, address: str | None) -> bool:
        with self._lock:
            return self.data.allows(host, address)

    def _dispatch(self, req: Message, peer: str | None = None) -> Message:
        handler = self._handlers.get(req.code)
        if req.code == CODE_CE:

            def handler(r: Message) -> Message:
                return self._cer(r, peer)

        if handler is None:
            return self._protocol_error(req, COMMAND_UNSUPPORTED, f"command {req.code}")
        if req.code in CX_COMMANDS and req.app_id != APP_CX:
            return self._protocol_error(req, APPLICATION_UNSUPPORTED, f"application {req.app_id}")
        try:
            with self._lock:
                answer = handler(req)
                pending = self._pending()
            self._persist(pending)
            return answer
        except Reject as r:
            answer = self._answer(req, result=r.result_code, cx=req.code in CX_COMMANDS)
            if r.failed is not None:
                answer.add("Failed-AVP", [r.failed])
            return answer
        except Exception as exc:  # noqa: BLE001 - a bug must cost one answer, not the server
            self.figures.errors += 1
            self.log(f"{req.name} from {req.get('Origin-Host', '?')}: {type(exc).__name__}: {exc}")
            return self._answer(req, result=UNABLE_TO_COMPLY, cx=req.code in CX_COMMANDS)

    # ---- answer building ----

    def _answer(
        self, req: Message, result: int | None = None, experimental: int | None = None, cx: bool = True
    ) -> Message:
        ans = req.answer()
        session = req.find("Session-Id")
        if session is not None:
            ans.avps.append(session)
        if cx:
            ans.add(
                "Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]
            )
        if result is not None:
            ans.add("Result-Code", result)
        if experimental is not None:
            ans.add(
                "Experimental-Result", [avp("Vendor-Id", VENDOR_3GPP), avp("Experimental-Result-Code", experimental)]
            )
        if cx:
            ans.add("Auth-Session-State", NO_STATE_MAINTAINED)
        return ans.add("Origin-Host", self.identity).add("Origin-Realm", self.realm)

    def _protocol_error(self, req: Message, code: int, text: str) -> Message:
        ans = req.answer(error=True)
        session = req.find("Session-Id")
        if session is not None:
            ans.avps.append(session)
        return (
            ans.add("Origin-Host", self.identity)
            .add("Origin-Realm", self.realm)
            .add("Result-Code", code)
            .add("Error-Message", text[:200])
        )

    # ---- request reading ----

    @staticmethod
    def _need(req: Message, name: str) -> Avp:
        found = req.find(name)
        if found is None:
            raise Reject(MISSING_AVP, _placeholder(name))
        return found

    def _text(self, req: Message, name: str) -> str:
        return self._need(req, name).value()

    @staticmethod
    def _enum(a: Avp, allowed: Iterable[int]) -> int:
        value = a.value()
        if value not in allowed:
            raise Reject(INVALID_AVP_VALUE, a)
        return value

    def _common(self, req: Message) -> None:
        for name in ("Session-Id", "Origin-Host", "Origin-Realm"):
            self._need(req, name)

    def _owner(self, impi: str | None, impu: str | None) -> tuple[Subscriber | None, int | None]:
        """The subscriber the identities name, or the experimental result that refuses them."""
        by_impi = self._by_impi.get(impi) if impi is not None else None
        if impi is not None and by_impi is None:
            return None, USER_UNKNOWN
        if impu is None:
            return by_impi, None
        owner = self._by_impu.get(impu)
        if owner is None:
            return None, USER_UNKNOWN
        if by_impi is not None and by_impi is not owner:
            return None, IDENTITIES_DONT_MATCH
        return owner, None

    def _choose(self, sub: Subscriber, exclude: str | None = None) -> str | None:
        """A stable S-CSCF for this subscriber (crc32: the same in every process)."""
        names = self.data.scscfs
        if exclude is not None and len(names) > 1:
            names = tuple(n for n in names if n != exclude) or names
        if not names:
            return None
        return names[zlib.crc32(sub.impi.encode()) % len(names)]

    @staticmethod
    def _server(ans: Message, name: str | None) -> Message:
        # no S-CSCF configured: empty capabilities let the I-CSCF fall back on its own list
        return ans.add("Server-Name", name) if name else ans.add("Server-Capabilities", [])

    # ---- base protocol ----

    def _cer(self, req: Message, peer: str | None) -> Message:
        for name in ("Origin-Host", "Origin-Realm"):
            self._need(req, name)
        apps = _applications(req)
        if not self.data.allows(req.get("Origin-Host"), peer):
            # RFC 6733 5.3: a CER from a peer we do not know; the connection then closes
            ans = self._answer(req, result=UNKNOWN_PEER, cx=False)
            ans.flags |= FLAG_E
        else:
            ok = APP_CX in apps or APP_RELAY in apps
            ans = self._answer(req, result=SUCCESS if ok else NO_COMMON_APPLICATION, cx=False)
        for ip in self.host_ips:
            ans.add("Host-IP-Address", ip)
        ans.add("Vendor-Id", VENDOR_3GPP).add("Product-Name", self.product)
        ans.add("Origin-State-Id", self.state_id).add("Supported-Vendor-Id", VENDOR_3GPP)
        return ans.add(
            "Vendor-Specific-Application-Id", [avp("Vendor-Id", VENDOR_3GPP), avp("Auth-Application-Id", APP_CX)]
        )

    def _dwr(self, req: Message) -> Message:
        return self._answer(req, result=SUCCESS, cx=False).add("Origin-State-Id", self.state_id)

    def _dpr(self, req: Message) -> Message:
        return self._answer(req, result=SUCCESS, cx=False)

    # ---- Cx ----

    def _uar(self, req: Message) -> Message:
        """User registration status query (TS 29.228 6.1.1)."""
        self._common(req)
        impi, impu = self._text(req, "User-Name"), self._text(req, "Public-Identity")
        kind_avp = req.find("User-Authorization-Type")
        kind = UAR_REGISTRATION if kind_avp is None else self._enum(kind_avp, range(3))
        sub, failure = self._owner(impi, impu)
        if sub is None:
            return self._answer(req, experimental=failure)
        reg = self._registrations.get(impu)
        if kind == UAR_DE_REGISTRATION:
            if reg is None:
                return self._answer(req, experimental=IDENTITY_NOT_REGISTERED)
            return self._answer(req, result=SUCCESS).add("Server-Name", reg.server)
        if kind == UAR_REGISTRATION_AND_CAPABILITIES:
            # the I-CSCF asks again because the assigned S-CSCF did not answer: offer another
            name = self._choose(sub, exclude=reg.server if reg else None)
            return self._server(self._answer(req, experimental=FIRST_REGISTRATION), name)
        if reg is not None:
            return self._answer(req, experimental=SUBSEQUENT_REGISTRATION).add("Server-Name", reg.server)
        return self._server(self._answer(req, experimental=FIRST_REGISTRATION), self._choose(sub))

    def _sar(self, req: Message) -> Message:
        """S-CSCF registration/deregistration notification (TS 29.228 6.1.2)."""
        self._common(req)
        server = self._text(req, "Server-Name")
        kind = self._enum(self._need(req, "Server-Assignment-Type"), range(15))
        impi, impu = req.get("User-Name"), req.get("Public-Identity")
        if impi is None and impu is None:
            raise Reject(MISSING_AVP, _placeholder("Public-Identity"))
        sub, failure = self._owner(impi, impu)
        if sub is None:
            return self._answer(req, experimental=failure)
        self._assign(sub, server, kind)
        ans = self._answer(req, result=SUCCESS).add("User-Name", sub.impi)
        if kind in SAR_WITH_USER_DATA:
            ans.add("User-Data", self._user_data[sub.impi])
        return ans

    def _assign(self, sub: Subscriber, server: str, kind: int) -> None:
        regs = self._registrations
        for u in sub.impus:  # the implicit registration set moves as one
            current = regs.get(u)
            if kind in SAR_REGISTERS:
                new: Registration | None = Registration(server, True)
            elif kind == UNREGISTERED_USER and (current is None or not current.registered):
                new = Registration(server, False)
            elif kind in SAR_DEREGISTERS and current is not None and current.server == server:
                new = None  # a late deregistration from a former S-CSCF leaves the new one alone
            else:
                continue
            if new != current:
                self._changed()
                if new is None:
                    del regs[u]
                else:
                    regs[u] = new

    def _lir(self, req: Message) -> Message:
        """User location query (TS 29.228 6.1.4)."""
        self._common(req)
        impu = self._text(req, "Public-Identity")
        sub, failure = self._owner(None, impu)
        if sub is None:
            return self._answer(req, experimental=failure)
        reg = self._registrations.get(impu)
        if reg is not None:
            return self._answer(req, result=SUCCESS).add("Server-Name", reg.server)
        return self._server(self._answer(req, experimental=UNREGISTERED_SERVICE), self._choose(sub))

    def _mar(self, req: Message) -> Message:
        """Authentication vectors (TS 29.228 6.3)."""
        self._common(req)
        impi, impu = self._text(req, "User-Name"), self._text(req, "Public-Identity")
        sub, failure = self._owner(impi, impu)
        if sub is None:
            return self._answer(req, experimental=failure)
        item = req.find("SIP-Auth-Data-Item")
        asked = item.get("SIP-Authentication-Scheme", "unknown") if item is not None else "unknown"
        resync = item.get("SIP-Authorization") if item is not None else None
        scheme, kind = _pick_scheme(asked, sub, bool(resync))
        if kind is None:
            return self._answer(req, experimental=AUTH_SCHEME_NOT_SUPPORTED)
        count = max(1, min(req.get("SIP-Number-Auth-Items", 1), MAX_VECTORS))
        if kind == AKA:
            items = self._aka_items(sub, scheme, count, resync)
        elif kind == DIGEST_MD5:
            items = [
                _auth_item(
                    1,
                    scheme,
                    [avp("SIP-Authenticate", self.random(NONCE_BYTES)), avp("SIP-Authorization", sub.password or "")],
                )
            ]
        else:
            items = [_auth_item(1, scheme, [avp("SIP-Digest-Authenticate", self._digest(sub))])]
        ans = self._answer(req, result=SUCCESS).add("User-Name", impi).add("Public-Identity", impu)
        ans.add("SIP-Number-Auth-Items", len(items))
        ans.avps.extend(items)
        return ans

    def _digest(self, sub: Subscriber) -> list[Avp]:
        ha1 = hashlib.md5(f"{sub.impi}:{self.data.realm}:{sub.password}".encode()).hexdigest()
        return [
            avp("Digest-Realm", self.data.realm),
            avp("Digest-Algorithm", "MD5"),
            avp("Digest-QoP", "auth"),
            avp("Digest-HA1", ha1),
        ]

    def _aka_items(self, sub: Subscriber, scheme: str, count: int, resync: bytes | None) -> list[Avp]:
        assert sub.k is not None and sub.opc is not None
        sqn = self._sqn[sub.impi]
        if resync:
            sqn = self._resync(sub, sqn, resync)
        items = []
        for n in range(1, count + 1):
            sqn = milenage.next_sqn(sqn)
            v = milenage.vector(sub.k, sub.opc, sub.amf, sqn, self.random(16))
            items.append(
                _auth_item(
                    n,
                    scheme,
                    [
                        avp("SIP-Authenticate", v.authenticate),
                        avp("SIP-Authorization", v.xres),
                        avp("Confidentiality-Key", v.ck),
                        avp("Integrity-Key", v.ik),
                    ],
                )
            )
        self._sqn[sub.impi] = sqn
        self._changed()
        return items

    def _resync(self, sub: Subscriber, sqn: int, data: bytes) -> int:
        """SIP-Authorization = RAND || AUTS (TS 29.228 6.3.1): take the USIM's SQN when AUTS
        proves it; otherwise keep ours (TS 33.102 6.3.5) and say so."""
        assert sub.k is not None and sub.opc is not None
        sqn_ms = milenage.resync(sub.k, sub.opc, data[:16], data[16:]) if len(data) == 30 else None
        if sqn_ms is None:
            self.log(f"MAR resync for {sub.impi}: AUTS does not verify ({len(data)} bytes); SQN kept")
            return sqn
        return sqn_ms


def _pick_scheme(asked: str, sub: Subscriber, resync: bool = False) -> tuple[str, str | None]:
    """(scheme to answer, kind) for what the S-CSCF asked, or kind None when we cannot serve it.

    A resynchronisation (SIP-Authorization = RAND || AUTS) only exists for AKA, yet ims_auth's
    ims_www_resync_auth() names its registration_default_algorithm ("Digest-MD5" when that is
    MD5): the answer is AKA all the same, so that the vector ims_auth queues is one the UE can use.
    """
    low = asked.lower()
    if resync and sub.has_aka:
        return (asked, AKA) if SCHEMES.get(low) == AKA else ("Digest-AKAv1-MD5", AKA)
    if low in HSS_SELECTED:
        # a REGISTER that names no algorithm: a password means a plain digest client (sipp),
        # keys alone an AKA UE
        if sub.password is not None:
            return "Digest-MD5", DIGEST_MD5
        return ("Digest-AKAv1-MD5", AKA) if sub.has_aka else (asked, None)
    kind = SCHEMES.get(low)
    if (kind == AKA and not sub.has_aka) or (kind in (DIGEST_MD5, DIGEST_HA1) and sub.password is None):
        return asked, None
    return asked, kind


def _auth_item(number: int, scheme: str, rest: list[Avp]) -> Avp:
    return avp("SIP-Auth-Data-Item", [avp("SIP-Item-Number", number), avp("SIP-Authentication-Scheme", scheme), *rest])


def _applications(req: Message) -> set[int]:
    """Application ids a CER advertises, plain or inside Vendor-Specific-Application-Id."""
    apps: set[int] = set()
    for a in req.avps:
        name = a.name
        if name in ("Auth-Application-Id", "Acct-Application-Id"):
            apps.add(a.value())
        elif name == "Vendor-Specific-Application-Id":
            for inner in a.items or []:
                if inner.name in ("Auth-Application-Id", "Acct-Application-Id"):
                    apps.add(inner.value())
    return apps
