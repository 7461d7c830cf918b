"""The HTTP edge under abuse, against a real `imsso serve` (uvicorn with h11), as an attacker with a token.

Raw sockets where a client library would be too polite: a declared body over the limit, a chunked
body that never ends, a request head over the HTTP parser's own limit.
"""

from __future__ import annotations

import json
import re
import socket

import httpx

SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
KIND = f'orchestrator; scheme="{SCHEME}"'
LIMIT = 1024 * 1024  # IMSSO_MAX_BODY's default
FORGED = 'X-OCCI-Attribute: occi.mcn.stack.state="CREATE_COMPLETE"'


def connect(server) -> socket.socket:
    host, port = server.listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)  # a guard against a hang, not a figure
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of one response read until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body.decode()


def request_head(server, method: str, path: str, token: str, tenant: str, *extra: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {server.listen}",
        f"X-Auth-Token: {token}",
        f"X-Tenant-Name: {tenant}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    token = server.token("abuse-length")
    with connect(server) as sock:
        # The head alone: were the server waiting for the 2 MiB it was promised, this would hang.
        sock.sendall(
            request_head(
                server,
                "PUT",
                "/orchestrator/default",
                token,
                "abuse-length",
                "Content-Type: text/plain",
                f"Content-Length: {2 * LIMIT}",
            )
        )
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"].startswith("text/plain") and headers["connection"] == "close"
    assert f"at most {LIMIT} bytes" in body and "IMSSO_MAX_BODY" in body
    with connect(server) as sock:
        sock.sendall(
            request_head(
                server,
                "POST",
                "/v1/instances",
                token,
                "abuse-length",
                "Content-Type: application/json",
                f"Content-Length: {LIMIT + 1}",
            )
        )
        status, headers, body = read_response(sock)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "too_large"


def test_a_chunked_body_is_refused_once_it_passes_the_limit(server):
    token = server.token("abuse-chunked")
    chunk = b"X-OCCI-Attribute: mcn.pad=1\n" * 2340  # about 64 KiB of valid lines
    with connect(server) as sock:
        sock.sendall(
            request_head(
                server,
                "PUT",
                "/orchestrator/default",
                token,
                "abuse-chunked",
                "Content-Type: text/plain",
                "Transfer-Encoding: chunked",
            )
        )
        for _ in range(LIMIT // len(chunk) + 1):  # the last one passes the limit; no final chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, headers, body = read_response(sock)
    assert status == 413 and f"at most {LIMIT} bytes" in body
    assert (
        httpx.get(
            server.url + "/orchestrator/default",
            timeout=30,
            headers={"X-Auth-Token": token, "X-Tenant-Name": "abuse-chunked"},
        ).status_code
        == 404
    )  # nothing created


def test_request_heads_are_bounded_by_h11_and_by_the_app(server):
    """h11 (uvicorn's HTTP/1.1 parser) refuses an incomplete head over 16 KiB; a whole head read at
    once passes it, so the app bounds headers itself at 32 KiB."""
    token = server.token("abuse-head")
    attributes = [f'X-OCCI-Attribute: mcn.a{i}="{"x" * 1000}"' for i in range(17)]
    head = request_head(
        server,
        "PUT",
        "/orchestrator/default",
        token,
        "abuse-head",
        "Content-Type: text/occi",
        f"Category: {KIND}",
        *attributes,
    )
    with connect(server) as sock:
        sock.sendall(head[:-4])  # never finished: h11 stops buffering at 16 KiB
        status, _, body = read_response(sock)
    assert status == 400 and "Traceback" not in body
    attributes = [f'X-OCCI-Attribute: mcn.a{i}="{"x" * 1000}"' for i in range(35)]
    with connect(server) as sock:
        sock.sendall(
            request_head(
                server,
                "PUT",
                "/orchestrator/default",
                token,
                "abuse-head",
                "Content-Type: text/occi",
                f"Category: {KIND}",
                *attributes,
            )
        )
        status, _, body = read_response(sock)
    assert status == 431 and "at most 32768 bytes of headers" in body
    # Under the head limit, the OCCI parser's own bounds answer, naming the attribute and the bound.
    r = httpx.put(
        server.url + "/orchestrator/default",
        timeout=30,
        content=(f"Category: {KIND}\n" + "".join(f"X-OCCI-Attribute: mcn.a{i}=1\n" for i in range(201))),
        headers={"X-Auth-Token": token, "X-Tenant-Name": "abuse-head", "Content-Type": "text/plain"},
    )
    assert r.status_code == 400 and "'mcn.a200' is one too many - a request carries at most 200" in r.text


def test_values_and_names_cannot_forge_a_line_of_any_rendering(server):
    token = server.token("abuse-forge")
    headers = {"X-Auth-Token": token, "X-Tenant-Name": "abuse-forge"}
    url = server.url + "/orchestrator/default"
    # A value with quotes and a tab is accepted and comes back escaped.
    r = httpx.put(
        url,
        timeout=30,
        headers={
            **headers,
            "Content-Type": "text/occi",
            "Category": KIND,
            "X-OCCI-Attribute": 'mcn.note="a \\"b\\"\tc=d, e"',
        },
    )
    assert r.status_code == 201, r.text
    # CRLF in a value: refused, naming the attribute, on both faces.
    crlf = httpx.post(
        url,
        timeout=30,
        headers={
            **headers,
            "Content-Type": "text/occi",
            "Category": KIND,
            "X-OCCI-Attribute": 'mcn.endpoint.maas="1.2.3.4\\r\\n' + FORGED.replace('"', '\\"') + '"',
        },
    )
    assert crlf.status_code == 400 and "attribute 'mcn.endpoint.maas'" in crlf.text, crlf.text
    crlf = httpx.patch(
        server.url + "/v1/instances/default",
        timeout=30,
        headers=headers,
        json={"attributes": {"mcn.endpoint.maas": "1.2.3.4\r\n" + FORGED}},
    )
    assert crlf.status_code == 400, crlf.text
    # A name with a newline and a quote: refused, naming it (escaped, so the message stays one line).
    evil = 'mcn.x"\n' + FORGED
    named = httpx.post(
        url,
        timeout=30,
        headers={**headers, "Content-Type": "application/occi+json"},
        content=json.dumps({"kind": SCHEME + "orchestrator", "attributes": {evil: "1"}}),
    )
    assert named.status_code == 400 and "invalid attribute name 'mcn.x\"\\x0aX-OCCI-Attribute" in named.text
    assert "\nX-OCCI-Attribute" not in named.text

    text = httpx.get(url, timeout=30, headers=headers).text
    assert re.findall(r"^X-OCCI-Attribute: occi\.mcn\.stack\.state=.*$", text, re.M) == [
        'X-OCCI-Attribute: occi.mcn.stack.state="INIT_COMPLETE"'
    ]
    assert 'X-OCCI-Attribute: mcn.note="a \\"b\\"\tc=d, e"' in text.splitlines()
    occi = httpx.get(url, timeout=30, headers={**headers, "Accept": "text/occi"})
    assert 'mcn.note="a \\"b\\"\tc=d, e"' in occi.headers["x-occi-attribute"]
    doc = httpx.get(url, timeout=30, headers={**headers, "Accept": "application/occi+json"}).json()
    assert doc["attributes"]["mcn.note"] == 'a "b"\tc=d, e'
    assert doc["attributes"]["occi.mcn.stack.state"] == "INIT_COMPLETE"
    assert httpx.delete(url, timeout=30, headers=headers).status_code == 200
