"""A REGISTER through the P-CSCF as a readiness check: challenge, then digest answer.

A REGISTER without Contact asks for the bindings and changes none, so the check leaves no trace
in the location table.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
from dataclasses import dataclass

TIMEOUT = 1.0


@dataclass
class RegisterResult:
    ok: bool
    summary: str


def register(proxy: str, port: int, domain: str, user: str, password: str | None, ha1: str = "") -> RegisterResult:
    """With a password: 401 then 200 is ok. Without: a 401 challenge (or, with an HSS, a 403 for the
    unknown probe identity) is ok: the path works. `ha1` (MD5(user:realm:password) for the domain
    as realm) answers the challenge where only HA1 is kept."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        call_id = secrets.token_hex(8)
        first = _exchange(sock, proxy, port, domain, user, call_id, 1, None)
        if first is None:
            return RegisterResult(False, f"no answer from {proxy}:{port}")
        status, headers = first
        if password is None and status == 403:
            # With an HSS, an unknown identity is refused at the I-CSCF once the HSS said so:
            # P-CSCF, I-CSCF and HSS answered, which is what can be proven without a subscriber.
            return RegisterResult(
                True,
                f"REGISTER {user}@{domain} refused (403) through {proxy}: the registration path and the HSS answer",
            )
        if status != 401:
            return RegisterResult(False, f"REGISTER {user}@{domain} got {status}, expected 401")
        if password is None:
            return RegisterResult(True, f"REGISTER {user}@{domain} challenged (401) through {proxy}")
        challenge = _challenge(headers.get("www-authenticate", ""))
        if challenge is None:
            return RegisterResult(False, "401 without a usable WWW-Authenticate")
        auth = _authorization(user, password, domain, challenge, ha1)
        second = _exchange(sock, proxy, port, domain, user, call_id, 2, auth)
        if second is None:
            return RegisterResult(False, f"no answer to the authenticated REGISTER from {proxy}")
        if second[0] != 200:
            return RegisterResult(False, f"authenticated REGISTER {user}@{domain} got {second[0]}")
        return RegisterResult(True, f"REGISTER {user}@{domain} through {proxy}: 401 then 200")


def _exchange(
    sock: socket.socket,
    proxy: str,
    port: int,
    domain: str,
    user: str,
    call_id: str,
    cseq: int,
    authorization: str | None,
) -> tuple[int, dict[str, str]] | None:
    local_host, local_port = sock.getsockname()
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP {local_host}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: imsso-readiness",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    message = "\r\n".join(lines + ["Content-Length: 0", "", ""])
    sock.sendto(message.encode(), (proxy, port))
    try:
        while True:
            data, _ = sock.recvfrom(65535)
            status, headers = _parse(data.decode(errors="replace"))
            if headers.get("call-id") == call_id and status >= 200:
                return status, headers
    except (TimeoutError, ValueError):
        return None


def _parse(text: str) -> tuple[int, dict[str, str]]:
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    status = int(head[0].split()[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return status, headers


def _challenge(header: str) -> dict[str, str] | None:
    if not header.lower().startswith("digest"):
        return None
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', header[6:]))
    return params if "nonce" in params and "realm" in params else None


def _authorization(user: str, password: str, domain: str, challenge: dict[str, str], ha1: str = "") -> str:
    realm, nonce = challenge["realm"], challenge["nonce"]
    uri = f"sip:{domain}"
    ha1 = ha1 or _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"REGISTER:{uri}")
    fields = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "opaque" in challenge:
        fields += f', opaque="{challenge["opaque"]}"'
    if "auth" in challenge.get("qop", "").split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        return f'{fields}, response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}"'
    return f'{fields}, response="{_md5(f"{ha1}:{nonce}:{ha2}")}"'


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()
