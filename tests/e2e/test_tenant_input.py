"""A tenant with a token tries to make the orchestrator read its files or run its template code.

Against a real `imsso serve`: the attacker writes a profile folder of its own anywhere it can
(here a temporary folder) and names it in every way a profile can be named."""

from __future__ import annotations

import httpx
import pytest

from attacks import evil_profile

SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
KIND = f'orchestrator; scheme="{SCHEME}"'


@pytest.mark.parametrize(
    "name",
    [
        "{folder}",
        "{folder}/",
        "../../../../../../..{folder}",
        "sip-core/../../../../../../..{folder}",
        "./sip-core",
        "..",
        ".",
    ],
)
def test_profile_names_never_reach_the_filesystem(server, tmp_path, name):
    folder, marker = tmp_path / "evil", tmp_path / "pwned"
    evil_profile(folder, marker)
    api = server.api("attacker")
    profile = name.format(folder=folder)
    as_json = api.post("/v1/instances", json={"name": "evil", "profile": profile, "actions": ["deploy"]})
    as_occi = httpx.put(
        server.url + "/orchestrator/evil",
        timeout=30,
        headers={
            "Content-Type": "text/occi",
            "Category": KIND,
            "X-Auth-Token": api.token,
            "X-Tenant-Name": api.tenant,
            "X-OCCI-Attribute": f'imsso.profile="{profile}"',
        },
    )
    for response in (as_json, as_occi):
        assert response.status_code in (400, 404), response.text
    # the JSON document's pattern refuses it; past it, the service names the profiles that exist
    assert "profile" in as_json.json()["error"]["message"]
    assert "unknown profile" in as_occi.text and "sip-core" in as_occi.text
    assert not marker.exists()
    assert api.get("/v1/instances/evil").status_code == 404  # nothing half made
