"""Milenage (3GPP TS 35.206) and the AKA vectors built with it (TS 33.102 6.3).

All keys and values are bytes: K, OP, OPc and RAND 16 bytes, SQN 6, AMF 2. SQN counters are ints
(48 bits). AES-128 comes from `cryptography`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASK128 = (1 << 128) - 1
MASK48 = (1 << 48) - 1
# TS 33.102 annex C: SQN = SEQ || IND with a 5-bit IND. Stepping SEQ (SQN by 32) gives every new
# vector a higher SEQ, which a USIM accepts whatever IND array scheme it keeps.
SQN_STEP = 32
AMF_RESYNC = b"\x00\x00"  # TS 33.102 6.3.3: MAC-S is computed with a dummy AMF of zeros
ROTATIONS = (64, 0, 32, 64, 96)  # r1..r5
CONSTANTS = (0, 1, 2, 4, 8)  # c1..c5 as 128-bit integers


def _cipher(k: bytes) -> Callable[[bytes], bytes]:
    """E_K as the encryptor's update(): ECB, so one call may take several blocks."""
    if len(k) != 16:
        raise ValueError(f"K must be 16 bytes, not {len(k)}")
    return Cipher(algorithms.AES(k), modes.ECB()).encryptor().update


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _bytes(x: int) -> bytes:
    return x.to_bytes(16, "big")


def _rot(x: int, r: int) -> int:
    """Rotate a 128-bit value r bits towards the most significant end."""
    return ((x << r) | (x >> (128 - r))) & MASK128 if r else x


def opc_from_op(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP)."""
    return _bytes(_int(op) ^ _int(_cipher(k)(op)))


@dataclass(frozen=True)
class Outputs:
    mac_a: bytes  # f1, 8 bytes
    mac_s: bytes  # f1*, 8 bytes
    res: bytes  # f2, 8 bytes
    ck: bytes  # f3, 16 bytes
    ik: bytes  # f4, 16 bytes
    ak: bytes  # f5, 6 bytes
    ak_star: bytes  # f5*, 6 bytes


def milenage(k: bytes, opc: bytes, rand: bytes, sqn: bytes = bytes(6), amf: bytes = bytes(2)) -> Outputs:
    """f1, f1*, f2, f3, f4, f5 and f5* at once: two AES calls, the second on five blocks."""
    if len(opc) != 16 or len(rand) != 16 or len(sqn) != 6 or len(amf) != 2:
        raise ValueError("OPc and RAND must be 16 bytes, SQN 6 and AMF 2")
    aes, op_c = _cipher(k), _int(opc)
    temp = _int(aes(_bytes(_int(rand) ^ op_c)))
    in1 = _int(sqn + amf + sqn + amf)
    blocks = [temp ^ _rot(in1 ^ op_c, ROTATIONS[0]) ^ CONSTANTS[0]]
    blocks += [_rot(temp ^ op_c, r) ^ c for r, c in zip(ROTATIONS[1:], CONSTANTS[1:])]
    out = aes(b"".join(_bytes(b) for b in blocks))
    o1, o2, o3, o4, o5 = (_bytes(_int(out[i : i + 16]) ^ op_c) for i in range(0, 80, 16))
    return Outputs(mac_a=o1[:8], mac_s=o1[8:], res=o2[8:], ck=o3, ik=o4, ak=o2[:6], ak_star=o5[:6])


def f1(k: bytes, opc: bytes, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
    return milenage(k, opc, rand, sqn, amf).mac_a


def f1_star(k: bytes, opc: bytes, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
    return milenage(k, opc, rand, sqn, amf).mac_s


def f2345(k: bytes, opc: bytes, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(RES, CK, IK, AK)."""
    o = milenage(k, opc, rand)
    return o.res, o.ck, o.ik, o.ak


def f5_star(k: bytes, opc: bytes, rand: bytes) -> bytes:
    return milenage(k, opc, rand).ak_star


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


@dataclass(frozen=True)
class AkaVector:
    sqn: int
    rand: bytes
    xres: bytes
    ck: bytes
    ik: bytes
    ak: bytes
    autn: bytes  # (SQN xor AK) || AMF || MAC-A

    @property
    def authenticate(self) -> bytes:
        """What SIP Digest AKA puts in the nonce (RFC 3310): RAND || AUTN."""
        return self.rand + self.autn


def vector(k: bytes, opc: bytes, amf: bytes, sqn: int, rand: bytes | None = None) -> AkaVector:
    """An authentication vector for SQN `sqn` (a fresh random RAND unless one is given)."""
    rand = os.urandom(16) if rand is None else rand
    sqn_bytes = sqn.to_bytes(6, "big")
    o = milenage(k, opc, rand, sqn_bytes, amf)
    autn = _xor(sqn_bytes, o.ak) + amf + o.mac_a
    return AkaVector(sqn, rand, o.res, o.ck, o.ik, o.ak, autn)


def next_sqn(sqn: int) -> int:
    return (sqn + SQN_STEP) & MASK48


def auts(k: bytes, opc: bytes, rand: bytes, sqn_ms: int) -> bytes:
    """What a USIM sends on a sync failure (TS 33.102 6.3.3): (SQN_MS xor AK*) || MAC-S."""
    sqn_bytes = sqn_ms.to_bytes(6, "big")
    o = milenage(k, opc, rand, sqn_bytes, AMF_RESYNC)
    return _xor(sqn_bytes, o.ak_star) + o.mac_s


def resync(k: bytes, opc: bytes, rand: bytes, auts_value: bytes) -> int | None:
    """SQN_MS from AUTS when its MAC-S checks out, else None."""
    if len(rand) != 16 or len(auts_value) != 14:
        return None
    sqn_bytes = _xor(auts_value[:6], f5_star(k, opc, rand))
    expected = f1_star(k, opc, rand, sqn_bytes, AMF_RESYNC)
    if not hmac.compare_digest(expected, auts_value[6:]):
        return None
    return _int(sqn_bytes)
