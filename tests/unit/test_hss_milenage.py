"""Milenage against the conformance test data of 3GPP TS 35.207 (test sets 1 to 6, also the first
six of TS 35.208), and the AKA vectors and resynchronisation built on it."""

from __future__ import annotations

import pytest

from imsso.hss import milenage

# K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2, f5, f3, f4, f5*
TEST_SETS = [
    (
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "23553cbe9637a89d218ae64dae47bf35",
        "ff9bb4d0b607",
        "b9b9",
        "cdc202d5123e20f62b6d676ac72cb318",
        "cd63cb71954a9f4e48a5994e37a02baf",
        "4a9ffac354dfafb3",
        "01cfaf9ec4e871e9",
        "a54211d5e3ba50bf",
        "aa689c648370",
        "b40ba9a3c58b2a05bbf0d987b21bf8cb",
        "f769bcd751044604127672711c6d3441",
        "451e8beca43b",
    ),
    (
        "0396eb317b6d1c36f19c1c84cd6ffd16",
        "c00d603103dcee52c4478119494202e8",
        "fd8eef40df7d",
        "af17",
        "ff53bade17df5d4e793073ce9d7579fa",
        "53c15671c60a4b731c55b4a441c0bde2",
        "5df5b31807e258b0",
        "a8c016e51ef4a343",
        "d3a628ed988620f0",
        "c47783995f72",
        "58c433ff7a7082acd424220f2b67c556",
        "21a8c1f929702adb3e738488b9f5c5da",
        "30f1197061c1",
    ),
    (
        "fec86ba6eb707ed08905757b1bb44b8f",
        "9f7c8d021accf4db213ccff0c7f71a6a",
        "9d0277595ffc",
        "725c",
        "dbc59adcb6f9a0ef735477b7fadf8374",
        "1006020f0a478bf6b699f15c062e42b3",
        "9cabc3e99baf7281",
        "95814ba2b3044324",
        "8011c48c0c214ed2",
        "33484dc2136b",
        "5dbdbb2954e8f3cde665b046179a5098",
        "59a92d3b476a0443487055cf88b2307b",
        "deacdd848cc6",
    ),
    (
        "9e5944aea94b81165c82fbf9f32db751",
        "ce83dbc54ac0274a157c17f80d017bd6",
        "0b604a81eca8",
        "9e09",
        "223014c5806694c007ca1eeef57f004f",
        "a64a507ae1a2a98bb88eb4210135dc87",
        "74a58220cba84c49",
        "ac2cc74a96871837",
        "f365cd683cd92e96",
        "f0b9c08ad02e",
        "e203edb3971574f5a94b0d61b816345d",
        "0c4524adeac041c4dd830d20854fc46b",
        "6085a86c6f63",
    ),
    (
        "4ab1deb05ca6ceb051fc98e77d026a84",
        "74b0cd6031a1c8339b2b6ce2b8c4a186",
        "e880a1b580b6",
        "9f07",
        "2d16c5cd1fdf6b22383584e3bef2a8d8",
        "dcf07cbd51855290b92a07a9891e523e",
        "49e785dd12626ef2",
        "9e85790336bb3fa2",
        "5860fc1bce351e7e",
        "31e11a609118",
        "7657766b373d1c2138f307e3de9242f9",
        "1c42e960d89b8fa99f2744e0708ccb53",
        "fe2555e54aa9",
    ),
    (
        "6c38a116ac280c454f59332ee35c8c4f",
        "ee6466bc96202c5a557abbeff8babf63",
        "414b98222181",
        "4464",
        "1ba00a1a7c6700ac8c3ff3e96ad08725",
        "3803ef5363b947c6aaa225e58fae3934",
        "078adfb488241a57",
        "80246b8d0186bcf1",
        "16c8233f05a0ac28",
        "45b0f69ab06c",
        "3f8c7587fe8e4b233af676aede30ba3b",
        "a7466cc1e6b2a1337d49d3b66e95d7b4",
        "1f53cd2b1113",
    ),
]
IDS = [f"test set {i}" for i in range(1, len(TEST_SETS) + 1)]


def b(hexes: str) -> bytes:
    return bytes.fromhex(hexes)


@pytest.mark.parametrize("row", TEST_SETS, ids=IDS)
def test_official_test_sets(row: tuple[str, ...]) -> None:
    k, rand, sqn, amf, op, opc, f1, f1s, f2, f5, f3, f4, f5s = map(b, row)
    assert milenage.opc_from_op(k, op) == opc
    out = milenage.milenage(k, opc, rand, sqn, amf)
    assert out.mac_a == f1
    assert out.mac_s == f1s
    assert out.res == f2
    assert out.ck == f3
    assert out.ik == f4
    assert out.ak == f5
    assert out.ak_star == f5s
    # the single-function forms agree
    assert milenage.f1(k, opc, rand, sqn, amf) == f1
    assert milenage.f1_star(k, opc, rand, sqn, amf) == f1s
    assert milenage.f2345(k, opc, rand) == (f2, f3, f4, f5)
    assert milenage.f5_star(k, opc, rand) == f5s


@pytest.mark.parametrize("row", TEST_SETS, ids=IDS)
def test_vector_autn_is_concealed_sqn_amf_mac(row: tuple[str, ...]) -> None:
    k, rand, sqn, amf, _, opc, f1, _, f2, f5, f3, f4, _ = map(b, row)
    v = milenage.vector(k, opc, amf, int.from_bytes(sqn, "big"), rand)
    assert v.autn == bytes(x ^ y for x, y in zip(sqn, f5)) + amf + f1
    assert (v.xres, v.ck, v.ik, v.ak) == (f2, f3, f4, f5)
    assert v.authenticate == rand + v.autn and len(v.authenticate) == 32


def test_fresh_vectors_get_random_rand() -> None:
    k, opc = b(TEST_SETS[0][0]), b(TEST_SETS[0][5])
    assert milenage.vector(k, opc, b"\x80\x00", 32).rand != milenage.vector(k, opc, b"\x80\x00", 32).rand


def test_resync_recovers_the_usim_sqn() -> None:
    k, rand, opc = b(TEST_SETS[1][0]), b(TEST_SETS[1][1]), b(TEST_SETS[1][5])
    sqn_ms = 0x0000_1234_5678
    auts = milenage.auts(k, opc, rand, sqn_ms)
    assert len(auts) == 14
    assert milenage.resync(k, opc, rand, auts) == sqn_ms


def test_resync_refuses_a_wrong_mac_s() -> None:
    k, rand, opc = b(TEST_SETS[1][0]), b(TEST_SETS[1][1]), b(TEST_SETS[1][5])
    auts = bytearray(milenage.auts(k, opc, rand, 99))
    auts[-1] ^= 1
    assert milenage.resync(k, opc, rand, bytes(auts)) is None
    assert milenage.resync(k, opc, rand, bytes(13)) is None
    other_k = b(TEST_SETS[2][0])
    assert milenage.resync(other_k, opc, rand, milenage.auts(k, opc, rand, 99)) is None


def test_sqn_steps_by_seq_and_wraps_at_48_bits() -> None:
    assert milenage.next_sqn(0) == 32
    assert milenage.next_sqn(milenage.MASK48 - 31) == 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        milenage.milenage(bytes(15), bytes(16), bytes(16))
    with pytest.raises(ValueError):
        milenage.milenage(bytes(16), bytes(16), bytes(8))
