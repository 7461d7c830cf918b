"""`imsso serve` in front of the test cloud's Keystone and Heat."""

from __future__ import annotations

from pathlib import Path

import cloud

from harness import Server

ENVIRONMENTS = Path(__file__).parent / "environments"


def keystone_server(data_dir: Path, listen: str, keystone_url: str) -> Server:
    """`imsso serve` validating tokens with Keystone (the guide's v2.0 URL) and deploying on Heat."""
    return Server(
        data_dir,
        listen,
        "127.106.0.0/16",
        env={
            "DESIGN_URI": keystone_url,
            "IMSSO_DRIVER": "openstack",
            "IMSSO_OS_REGION": cloud.env()["region"],
            "IMSSO_HEAT_ENVIRONMENT": str(ENVIRONMENTS / "no-compute.yaml"),
            "IMSSO_HEAT_ENVIRONMENT_DIR": str(ENVIRONMENTS),
            "IMSSO_KEYSTONE_CACHE": "5",
        },
    )
