"""The user guide's curl commands, each joined into one line as a user pastes it, against
`imsso serve` on 127.0.0.1:8051 with a locally issued token; then what they left behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from guide import DELETE, DEPLOY, GET, INIT, PROVISION, UPDATE, attributes, curl
from harness import wait_for


def test_guide_commands_match_the_guide():
    """Our copies are the guide's commands, if the guide is at hand."""
    guide = Path(__file__).resolve().parents[3] / "shared" / "seed" / "imsso-user-guide.txt"
    if not guide.exists():
        return
    text = " ".join(guide.read_text().split())
    for command in (INIT, DEPLOY, UPDATE, DELETE):
        assert command in text, command


def test_user_guide_end_to_end(server):
    kid, tenant = server.token("guide-tenant"), "guide-tenant"
    status, body = curl(INIT, kid, tenant)
    assert status == 201, body
    attrs = attributes(curl(GET, kid, tenant)[1])
    assert attrs["mcn.service.state"] == '"initialised"'
    assert attrs["occi.mcn.stack.state"] != '"CREATE_COMPLETE"'  # the original's demo hack, not ours

    status, body = curl(DEPLOY, kid, tenant)
    assert status == 200, body
    attrs = wait_for(lambda: _in_state(kid, tenant, "deployed"), 60, "deployed")
    assert attrs["occi.mcn.stack.state"] == '"CREATE_COMPLETE"'
    endpoints = {k: v for k, v in attrs.items() if k.startswith("mcn.endpoint.")}
    assert {
        "mcn.endpoint.pcscf-1.local.private",
        "mcn.endpoint.scscf-1.local.private",
        "mcn.endpoint.dns-1.local.private",
    } <= set(endpoints)

    status, body = curl(PROVISION, kid, tenant)
    assert status == 200, body
    wait_for(lambda: _in_state(kid, tenant, "active"), 60, "active")

    status, body = curl(UPDATE, kid, tenant)
    assert status == 200, body
    attrs = wait_for(lambda: _in_state(kid, tenant, "active"), 60, "active after update")
    assert attrs["mcn.endpoint.maas"] == '"160.85.4.50"'

    assert server.unit_processes(), "the deployed units run as processes"
    status, body = curl(DELETE, kid, tenant)
    assert status == 200, body
    wait_for(lambda: curl(GET, kid, tenant)[0] == 404, 60, "the instance to be gone")
    assert server.unit_processes() == []
    assert list((server.data_dir / "instances").iterdir()) == []


def _in_state(kid: str, tenant: str, state: str) -> dict[str, str] | None:
    status, body = curl(GET, kid, tenant)
    attrs = attributes(body)
    if attrs.get("mcn.service.state") == '"failed"':
        raise AssertionError(f"instance failed: {attrs.get('imsso.error')}")
    return attrs if attrs.get("mcn.service.state") == f'"{state}"' else None


def test_service_manager_collection_creates_deploys_and_provisions(server):
    kid, tenant = server.token("sm-tenant"), "sm-tenant"
    created = subprocess.run(
        [
            "curl",
            "-s",
            "-i",
            "-X",
            "POST",
            "http://127.0.0.1:8051/ims/",
            "-H",
            "Content-Type: text/occi",
            "-H",
            'Category: ims; scheme="http://schemas.mobile-cloud-networking.eu/occi/sm#"',
            "-H",
            f"X-Auth-Token: {kid}",
            "-H",
            f"X-Tenant-Name: {tenant}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert created.startswith("HTTP/1.1 201"), created
    location = re.search(r"^location: (\S+)", created, re.M | re.I).group(1)
    assert re.match(r"http://127\.0\.0\.1:8051/ims/[0-9a-f-]{36}$", location)
    listed = subprocess.run(
        [
            "curl",
            "-s",
            "http://127.0.0.1:8051/ims/",
            "-H",
            "Accept: text/uri-list",
            "-H",
            f"X-Auth-Token: {kid}",
            "-H",
            f"X-Tenant-Name: {tenant}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert location in listed.split()

    def active():
        body = subprocess.run(
            ["curl", "-s", location, "-H", f"X-Auth-Token: {kid}", "-H", f"X-Tenant-Name: {tenant}"],
            capture_output=True,
            text=True,
        ).stdout
        return 'mcn.service.state="active"' in body

    wait_for(active, 60, "the /ims/ instance to be deployed and provisioned")
    deleted = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            location,
            "-H",
            f"X-Auth-Token: {kid}",
            "-H",
            f"X-Tenant-Name: {tenant}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert deleted == "200"
