"""Heat through openstacksdk: reach a tenant's orchestration service, create, update, preview and
delete its stacks, and wait for them with a deadline.

Two ways in, as an operator has them:
- Keystone mode (DESIGN_URI / IMSSO_KEYSTONE_URL): the tenant's own token, remembered from its
  last request, and the orchestration endpoint of that token's catalog. The stack is the tenant's.
- Cloud mode (IMSSO_OS_CLOUD): an account of clouds.yaml; every tenant's stacks live in its project.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable
from typing import Any

import openstack.connection
import yaml
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

import openstack
from openstack import exceptions as os_exc

from .. import DriverError, PlanRequest, PlanStatus

CLOUD_ERRORS = (os_exc.SDKException, ks_exc.ClientException)  # the SDK's, and the transport's
TRANSIENT = (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.ServiceUnavailable)
POLL = 0.5  # seconds between stack status reads: a Heat action takes seconds


# A stack request and status are the plan drivers' neutral types, under Heat's names here.
StackRequest = PlanRequest
StackStatus = PlanStatus


class Credentials:
    """How to reach a tenant's Heat. Tokens are kept in memory only: after a restart, the tenant's
    next request brings a fresh one (cloud mode needs none)."""

    def __init__(self, catalog: Callable[[str], list[dict]] | None, region: str, cloud: str, auth_url: str = ""):
        self.catalog = catalog
        self.auth_url = auth_url  # Keystone v3, for the tenant's token
        self.region = region
        self.cloud = cloud
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, tenant: str, token: str) -> None:
        with self._lock:
            self._tokens[tenant] = token

    def connect(self, tenant: str) -> openstack.connection.Connection:
        if self.catalog is None:
            if not self.cloud:
                raise DriverError(
                    "the openstack driver needs Keystone (DESIGN_URI or IMSSO_KEYSTONE_URL) "
                    "or a clouds.yaml account (IMSSO_OS_CLOUD)"
                )
            try:
                return openstack.connect(cloud=self.cloud, region_name=self.region or None)
            except os_exc.OpenStackCloudException as exc:
                raise DriverError(f"cannot use cloud '{self.cloud}' of clouds.yaml", str(exc)) from exc
        with self._lock:
            token = self._tokens.get(tenant)
        if token is None:
            raise DriverError(
                f"no Keystone token of project {tenant} since the orchestrator started: "
                "send the request again (it brings a fresh token)"
            )
        self.orchestration_endpoint(token, tenant)  # a clear error when the catalog has none
        # Token auth scoped to the tenant's project: the SDK reads the same catalog and does Heat's
        # version discovery itself.
        auth = v3.Token(auth_url=self.auth_url, token=token, project_id=tenant)
        session = ks_session.Session(auth=auth, timeout=60)
        return openstack.connection.Connection(session=session, region_name=self.region or None)

    def orchestration_endpoint(self, token: str, tenant: str) -> str:
        """The public orchestration endpoint of the token's catalog, in the configured region."""
        if self.catalog is None:
            raise DriverError("no Keystone catalog to find Heat in: set DESIGN_URI or IMSSO_KEYSTONE_URL")
        for service in self.catalog(token):
            if service.get("type") != "orchestration":
                continue
            for endpoint in service.get("endpoints", []):
                if endpoint.get("interface") == "public" and (
                    not self.region or self.region in (endpoint.get("region"), endpoint.get("region_id"))
                ):
                    return endpoint["url"].rstrip("/")
        where = f" in region {self.region}" if self.region else ""
        raise DriverError(
            f"the catalog of project {tenant} has no public orchestration (Heat) "
            f"endpoint{where}: ask the cloud's operator, or set IMSSO_OS_REGION"
        )


def find(conn, stack_id: str, name: str):
    """The stack by id, else by name (a create whose id we never recorded); None when gone."""
    try:
        for ref in filter(None, (stack_id, name)):
            stack = conn.orchestration.find_stack(ref, ignore_missing=True, resolve_outputs=False)
            if stack is not None and stack.status != "DELETE_COMPLETE":
                return stack
    except CLOUD_ERRORS as exc:
        raise _error(f"cannot read stack {name}", exc) from exc
    return None


def create_or_update(
    conn, stack_id: str, request: StackRequest, record_id: Callable[[str], None], deadline: float
) -> StackStatus:
    """Create the stack, or update it to `request`; wait for Heat to finish, fail with its reason."""
    stack = find(conn, stack_id, request.name)
    if stack is not None and stack.status.endswith("IN_PROGRESS"):
        stack = _wait(conn, stack.id, deadline)  # ours, from before a restart: let it end first
    body = {
        "template": request.template,
        "environment": request.environment,
        "files": request.files,
        "timeout_mins": request.timeout_mins,
    }
    try:
        if stack is None:
            stack = conn.orchestration.create_stack(name=request.name, disable_rollback=True, **body)
        else:
            conn.orchestration.update_stack(stack, **body)
    except CLOUD_ERRORS as exc:
        raise _error(f"Heat refused the {'update' if stack else 'creation'} of stack {request.name}", exc) from exc
    record_id(stack.id)
    final = _wait(conn, stack.id, deadline)
    status = _status(conn, final)
    if not status.status.endswith("_COMPLETE"):
        raise DriverError(f"stack {request.name} is {status.status}: {status.reason}", _failed_resources(conn, final))
    return status


def delete(conn, stack_id: str, name: str, deadline: float) -> str:
    stack = find(conn, stack_id, name)
    if stack is None:
        return f"no stack {name} left"
    try:
        conn.orchestration.delete_stack(stack)
    except CLOUD_ERRORS as exc:
        raise _error(f"Heat refused to delete stack {name}", exc) from exc
    while time.monotonic() < deadline:
        current = find(conn, stack.id, "")
        if current is None:
            return f"deleted stack {name} ({stack.id})"
        if current.status == "DELETE_FAILED":
            raise DriverError(
                f"stack {name} is DELETE_FAILED: {current.status_reason}", _failed_resources(conn, current)
            )
        time.sleep(POLL)
    raise DriverError(f"stack {name} was not deleted in time (still {current.status})")


def preview(conn, stack_id: str, request: StackRequest) -> dict[str, Any]:
    """What an update would do, without doing it: Heat's own preview and the template's diff."""
    stack = find(conn, stack_id, request.name)
    if stack is None:
        return {
            "stack": None,
            "action": "create",
            "resources": {"added": sorted(request.template.get("resources", {}))},
        }
    body = {"template": request.template, "environment": request.environment, "files": request.files}
    try:
        live = conn.orchestration.get_stack_template(stack).to_dict()
        live_env = conn.orchestration.get_stack_environment(stack).to_dict()
        # Heat's update preview; the SDK drops its "resource_changes", so it is read as sent.
        response = conn.orchestration.put(f"/stacks/{stack.name}/{stack.id}/preview", json=body)
        os_exc.raise_from_response(response)
        changes = response.json().get("resource_changes", {})
    except CLOUD_ERRORS as exc:
        raise _error(f"Heat refused to preview the update of stack {request.name}", exc) from exc
    summary = {
        key: sorted(r.get("resource_name", "?") for r in changes.get(key, []))
        for key in ("added", "deleted", "replaced", "updated")
    }
    return {
        "stack": {"id": stack.id, "status": stack.status},
        "action": "update",
        "resources": summary,
        "diff": template_diff(_clean(live), request.template)
        + template_diff(_clean(live_env), request.environment, "environment"),
    }


def template_diff(live: dict[str, Any], new: dict[str, Any], label: str = "template") -> str:
    """A unified diff of two templates as YAML (keys sorted, so only real changes show)."""

    def lines(doc: dict[str, Any]) -> list[str]:
        return yaml.dump(doc, Dumper=_BlockDumper, sort_keys=True, width=1000).splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(live), lines(new), f"live {label}", f"new {label}"))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (user data, configs) as literal blocks, so a diff shows their lines."""


def _block_strings(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text and all(line == line.rstrip() for line in text.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _block_strings)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Heat's copy of a document, without the keys the SDK adds to every resource."""
    return {k: v for k, v in doc.items() if v not in (None, {}, []) and k not in ("id", "name", "location")}


def _wait(conn, stack_id: str, deadline: float):
    while True:
        try:
            stack = conn.orchestration.get_stack(stack_id, resolve_outputs=False)
        except TRANSIENT as exc:  # Heat's API restarting or a dropped connection: ask again
            if time.monotonic() > deadline:
                raise _error(f"cannot read stack {stack_id}", exc) from exc
            time.sleep(POLL)
            continue
        except CLOUD_ERRORS as exc:
            raise _error(f"cannot read stack {stack_id}", exc) from exc
        if not stack.status.endswith("IN_PROGRESS"):
            return stack
        if time.monotonic() > deadline:
            raise DriverError(f"stack {stack.name} still {stack.status} at the deadline", stack.status_reason)
        time.sleep(POLL)


def _status(conn, stack) -> StackStatus:
    try:
        full = conn.orchestration.get_stack(stack.id)
    except CLOUD_ERRORS as exc:
        raise _error(f"cannot read the outputs of stack {stack.name}", exc) from exc
    outputs = {
        o["output_key"]: str(o["output_value"]) for o in (full.outputs or []) if o.get("output_value") not in (None, "")
    }
    return StackStatus(id=full.id, name=full.name, status=full.status, reason=full.status_reason or "", outputs=outputs)


def _failed_resources(conn, stack) -> str:
    """Which resources failed and why: Heat's stack reason names only the first."""
    try:
        failed = [r for r in conn.orchestration.resources(stack) if r.status.endswith("FAILED")]
    except CLOUD_ERRORS:
        return ""
    return "; ".join(f"{r.name} {r.status}: {r.status_reason}" for r in failed)


def _error(message: str, exc: Exception) -> DriverError:
    detail = getattr(exc, "details", None) or str(exc)
    return DriverError(f"{message}: {detail}", type(exc).__name__)
