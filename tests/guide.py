"""The user guide's curl commands (seed/imsso-user-guide.txt), each joined into one line as a user
pastes it, and how to run them: shared by the tests on this machine and on OpenStack."""

from __future__ import annotations

import re
import subprocess

SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
# As written in the guide (seed/imsso-user-guide.txt), lines joined.
INIT = (
    "curl -v -X PUT http://127.0.0.1:8051/orchestrator/default -H 'Content-Type: text/occi' "
    f"-H 'Category: orchestrator; scheme=\"{SCHEME}\"' -H 'X-Auth-Token: '$KID "
    "-H 'X-Tenant-Name: '$TENANT"
)
DEPLOY = (
    "curl -v -X POST http://127.0.0.1:8051/orchestrator/default?action=deploy "
    f"-H 'Content-Type: text/occi' -H 'Category: deploy; scheme=\"{SCHEME}\"' "
    "-H 'X-Auth-Token: '$KID -H 'X-Tenant-Name: '$TENANT"
)
UPDATE = (
    "curl -v -X POST http://127.0.0.1:8051/orchestrator/default -H 'Content-Type: text/occi' "
    "-H 'X-Auth-Token: '$KID -H 'X-Tenant-Name: '$TENANT "
    "-H 'X-OCCI-Attribute: mcn.endpoint.maas=\"160.85.4.50\"'"
)
DELETE = (
    "curl -v -X DELETE http://127.0.0.1:8051/orchestrator/default -H 'X-Auth-Token: '$KID -H 'X-Tenant-Name: '$TENANT"
)
# Not in the guide, which stops at deploy: the same form for our provision action.
PROVISION = DEPLOY.replace("deploy", "provision")
GET = "curl -v http://127.0.0.1:8051/orchestrator/default -H 'X-Auth-Token: '$KID -H 'X-Tenant-Name: '$TENANT"


def curl(command: str, kid: str, tenant: str) -> tuple[int, str]:
    done = subprocess.run(
        ["bash", "-c", command],
        env={"KID": kid, "TENANT": tenant, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Not anchored: curl's progress meter may share the line when the answer takes a while.
    status = re.search(r"< HTTP/[\d.]+ (\d{3})", done.stderr)
    assert status, done.stderr
    return int(status.group(1)), done.stdout


def attributes(body: str) -> dict[str, str]:
    return dict(re.findall(r"^X-OCCI-Attribute: ([\w.\-]+)=(.*)$", body, re.M))
