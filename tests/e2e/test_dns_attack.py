"""An attacker against a deployed instance's DNS unit: malformed queries and held TCP connections
do not stop it, and it still tells clients where the P-CSCF is."""

from __future__ import annotations

import socket

from dnslib import RCODE, DNSRecord

from dns_payloads import KILLERS, QUERY_ID
from harness import DNS_PORT
from imsso.dns.server import MAX_QUERY
from imsso.drivers.local import probes


def _ask_raw(address: str, data: bytes, tcp: bool) -> DNSRecord | None:
    if tcp:
        with socket.create_connection((address, DNS_PORT), timeout=3) as conn:
            conn.sendall(len(data).to_bytes(2, "big") + data)
            stream = conn.makefile("rb")
            head = stream.read(2)
            return DNSRecord.parse(stream.read(int.from_bytes(head, "big"))) if head else None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(data, (address, DNS_PORT))
        return DNSRecord.parse(sock.recv(65535))


def test_the_dns_unit_survives_malformed_queries_and_200_held_connections(server):
    api = server.api("dnsattack")
    instance = api.create("dnsattack")
    dns = next(u["address"] for u in instance["units"] if u["role"] == "dns")
    pcscf = next(u for u in instance["units"] if u["role"] == "pcscf")
    domain = instance["domain"]

    for tcp in (False, True):
        for name, data in KILLERS.items():
            if tcp and len(data) > MAX_QUERY:
                continue  # closed unanswered, as the unit tests show
            reply = _ask_raw(dns, data, tcp)
            assert reply is not None and reply.header.id == QUERY_ID, name
            assert reply.header.rcode in (RCODE.FORMERR, RCODE.NOTIMP), name

    held = [socket.create_connection((dns, DNS_PORT), timeout=3) for _ in range(200)]
    try:
        for tcp in (False, True):  # UDP, and a new TCP connection while 200 are held
            assert probes.dns_query(dns, DNS_PORT, f"{pcscf['name']}.{domain}", "A", tcp=tcp) == [pcscf["address"]]
            srv = probes.dns_query(dns, DNS_PORT, f"_sip._udp.{domain}", "SRV", tcp=tcp)
            assert srv and all(f"{pcscf['name']}.{domain}." in record for record in srv), srv
    finally:
        for conn in held:
            conn.close()
    assert api.wait_operation(api.delete("/v1/instances/dnsattack").json()["id"])["state"] == "succeeded"
