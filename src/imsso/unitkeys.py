"""Keys the units of an instance prove themselves with, derived from the instance's secret.

One derivation per purpose, so a key that leaks from one place (a P-CSCF's config, a unit's
management key) opens nothing else: HMAC-SHA256(instance secret, purpose). Pure, no I/O: the
planner renders them into configs and the drivers use the same to call the units.
"""

from __future__ import annotations

import hashlib
import hmac

# The SIP headers that carry them between units. Never sent to a UE (the P-CSCF removes them).
DMQ_HEADER = "X-Imsso-Dmq-Key"  # on KDMQ between the S-CSCFs
TERM_HEADER = "X-Imsso-Term-Key"  # on an S-CSCF's request to a P-CSCF's terminating path
EDGE_HEADER = "X-Imsso-Edge-Key"  # on a P-CSCF's request to the core (REGISTER, originating)


def derive(secret: str, purpose: str) -> str:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def management_key(secret: str, unit_name: str) -> str:
    """The bearer token of one unit's management port (JSON-RPC): one per unit."""
    return derive(secret, f"mgmt:{unit_name}")


def dmq_key(secret: str) -> str:
    return derive(secret, "dmq")


def term_key(secret: str) -> str:
    return derive(secret, "term")


def edge_key(secret: str) -> str:
    return derive(secret, "edge")


def sha256(text: str) -> str:
    """What a config keeps where it only checks a key: the hash, so reading it reveals no key."""
    return hashlib.sha256(text.encode()).hexdigest()


def bearer(key: str) -> str:
    return f"Bearer {key}"
