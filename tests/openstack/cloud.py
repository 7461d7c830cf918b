"""The private OpenStack (Keystone + Heat) of scripts/openstack/start.sh, as the tests see it.

start.sh writes ``$IMSSO_OPENSTACK_DIR/env.json`` (default /var/tmp/imsso-openstack): the
Keystone URL, the region, Heat's URL pattern, and the admin and test users (alice in tenant-a,
bob in tenant-b, the service user imsso in service) with their passwords and project ids. This
module reads it; it has no pytest fixtures, so that any test or benchmark can use it:

    if not cloud.available():
        pytest.skip(cloud.unavailable_reason())
    headers = {"X-Auth-Token": cloud.token("alice")}
    url = cloud.heat_url("alice") + "/stacks"
"""

from __future__ import annotations

import datetime
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

STATE_VARIABLE = "IMSSO_OPENSTACK_DIR"
DEFAULT_STATE = "/var/tmp/imsso-openstack"
START_HINT = "run scripts/openstack/install.sh and scripts/openstack/start.sh"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_VARIABLE) or DEFAULT_STATE)


def env() -> dict[str, Any]:
    """env.json as written by start.sh."""
    return json.loads((state_dir() / "env.json").read_text())


def unavailable_reason() -> str | None:
    """Why the cloud can't be used (a sentence for pytest.skip), or None when it can."""
    path = state_dir() / "env.json"
    if not path.is_file():
        return f"no OpenStack: {path} is missing ({START_HINT})"
    try:
        url = env()["keystone_url"]
    except (OSError, ValueError, KeyError) as exc:
        return f"no OpenStack: {path} is unreadable: {exc}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        return f"no OpenStack: Keystone at {url} answered {exc.code}"
    except OSError as exc:
        return f"no OpenStack: Keystone at {url} does not answer ({exc}; {START_HINT})"
    return None


def available() -> bool:
    """env.json is there and Keystone answers."""
    return unavailable_reason() is None


def _user(user: str) -> dict[str, Any]:
    e = env()
    if user == "admin":
        return {"password": e["admin"]["password"], "project": e["admin"]["project"]}
    try:
        return e["users"][user]
    except KeyError:
        raise KeyError(f"no user {user!r} in env.json (users: {sorted(e['users'])})") from None


def session(user: str):
    """A keystoneauth1 Session for USER, scoped to the user's project (password auth)."""
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    e, u = env(), _user(user)
    auth = v3.Password(
        auth_url=e["keystone_url"],
        username=user,
        password=u["password"],
        project_name=u["project"],
        user_domain_name=e["user_domain"],
        project_domain_name=e["project_domain"],
    )
    return ks_session.Session(auth=auth)


def connection(user: str):
    """An openstacksdk Connection as USER, in USER's project (e.g. ``.orchestration``).

    Give it templates as strings, or quote heat_template_version: yaml.safe_load makes
    ``2021-04-16`` a date, which openstacksdk fails to serialise."""
    import openstack

    e, u = env(), _user(user)
    return openstack.connect(
        auth_url=e["keystone_url"],
        username=user,
        password=u["password"],
        project_name=u["project"],
        user_domain_name=e["user_domain"],
        project_domain_name=e["project_domain"],
        region_name=e["region"],
    )


def token(user: str) -> str:
    """A new project-scoped token for USER ("alice", "bob", "imsso" or "admin")."""
    return session(user).get_token()


def project_id(user: str) -> str:
    u = _user(user)
    if "project_id" in u:
        return u["project_id"]
    return session(user).get_project_id()


def heat_url(user: str) -> str:
    """Heat's API for USER's project: http://127.0.0.1:8004/v1/<project id>."""
    return env()["heat_url"].format(project_id=project_id(user))


def token_status(subject: str, user: str = "imsso") -> int:
    """What Keystone answers to GET /v3/auth/tokens for token SUBJECT, asked with USER's token
    (the service user may check any token; a user may check their own): 200 when valid, 404
    when not (expired, revoked, unknown), 401 when Keystone can't even read it."""
    return _token_status(session(user), subject)


def _token_status(sess, subject: str) -> int:
    resp = sess.get(env()["keystone_url"] + "/auth/tokens", headers={"X-Subject-Token": subject}, raise_exc=False)
    return resp.status_code


def expired_token(user: str, lifetime: float = 2.0, timeout: float = 30.0) -> str:
    """A real Keystone token for USER's project that has expired by the time it is returned.

    How, without making every token short-lived (``[token] expiration`` is Keystone-wide):
    Keystone caps the expiry of a token obtained with an application credential at the
    credential's own ``expires_at`` (the fix for CVE-2022-2447). So: with a password token,
    USER creates an application credential (all their roles in the project) that expires in
    LIFETIME seconds, gets a token with it (Fernet keeps whole seconds: it may expire up to a
    second sooner), and then this waits, polling GET /v3/auth/tokens, until Keystone answers
    404 for it. Checked on the way, so the token is known to be invalid
    because it expired and for no other reason: its expires_at is the credential's (not
    Keystone's default hour), and Keystone validates it until then. Only after that is the
    application credential deleted (which revokes nothing: the token is dead already).

    Takes about LIFETIME seconds and a few requests; raises RuntimeError when Keystone does not
    behave as described within TIMEOUT seconds.
    """
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    e = env()
    sess = session(user)
    user_id = sess.get_user_id()
    creds_url = f"{e['keystone_url']}/users/{user_id}/application_credentials"
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
    cred = sess.post(
        creds_url,
        json={
            "application_credential": {
                "name": f"expired-token-{uuid.uuid4().hex[:12]}",
                "description": "tests/openstack/cloud.py expired_token(); deleted after use",
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # UTC, as Keystone wants
            }
        },
    ).json()["application_credential"]
    try:
        access = v3.ApplicationCredential(
            auth_url=e["keystone_url"],
            application_credential_id=cred["id"],
            application_credential_secret=cred["secret"],
        ).get_access(ks_session.Session())
        subject = access.auth_token
        token_expires = access.expires  # an aware datetime
        if token_expires > expires + datetime.timedelta(seconds=1):
            raise RuntimeError(
                f"Keystone did not cap the token's expiry at the application credential's ({token_expires} > {expires})"
            )
        # Valid until then (unless the clock already passed it: LIFETIME too short).
        if datetime.datetime.now(datetime.UTC) < token_expires:
            status = _token_status(sess, subject)
            if status != 200 and datetime.datetime.now(datetime.UTC) < token_expires:
                raise RuntimeError(f"Keystone rejected the token before it expired: {status}")
        deadline = time.monotonic() + timeout
        while True:
            if datetime.datetime.now(datetime.UTC) >= token_expires:
                status = _token_status(sess, subject)
                if status in (401, 404):
                    return subject
            if time.monotonic() > deadline:
                raise RuntimeError(f"the token still validates {timeout}s after it expired")
            time.sleep(0.2)
    finally:
        sess.delete(f"{creds_url}/{cred['id']}", raise_exc=False)
