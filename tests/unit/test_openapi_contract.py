"""The JSON face keeps the promises of its own OpenAPI document, fuzzed by schemathesis.

Every operation of /v1/openapi.json is called with generated requests, valid and invalid, carrying a
tenant's token, against the app built around the fake driver. All of schemathesis's checks run: no
5xx, no status or content type the document does not declare, no body outside its schema, no valid
request refused, no invalid one accepted, no operation that ignores a missing token.

One thing a JSON Schema cannot say: which sizes and attribute names apply depends on the instance's
profile and driver (a role the profile has, a policy it defines). Valid-by-schema cases are therefore
kept to sizes and attributes every profile accepts; invalid cases are not filtered.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.parameters import ParameterLocation

from fakes import FakeDriver, Orchestrator
from imsso import profiles
from imsso.api.app import create_app

EXAMPLES = 20  # per operation and phase: bounded, so the suite stays quick
COUNTS: collections.Counter = collections.Counter()
OPERATIONS: set[str] = set()

# Built at import: schemathesis reads the document when it collects the tests.
_FOLDER = Path(tempfile.mkdtemp(prefix="imsso-contract-"))
ORCH = Orchestrator(_FOLDER / "data")
ORCH.drivers["openstack"] = FakeDriver("openstack")  # the document names both drivers
APP = create_app(ORCH)
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", APP)

# Sizes and attributes that hold in every profile.
COMMON_BOUNDS = {
    role: (
        max(profiles.load(p).roles[role].min for p in profiles.available()),
        min(profiles.load(p).roles[role].max for p in profiles.available()),
    )
    for role in set.intersection(*(set(profiles.load(p).roles) for p in profiles.available()))
}


DOMAINS = {profiles.load(p).domain for p in profiles.available()}


def _everywhere(body) -> bool:
    """Whether a valid-by-schema body also holds for any instance: sizes every profile has, free
    `mcn.` inputs only, a subscriber by password in the profiles' domain (AKA needs an HSS)."""
    if not isinstance(body, dict):
        return True
    sizes, attributes = body.get("sizes") or {}, body.get("attributes") or {}
    fits = all(r in COMMON_BOUNDS and COMMON_BOUNDS[r][0] <= n <= COMMON_BOUNDS[r][1] for r, n in sizes.items())
    subscriber = body.get("k") is None and body.get("domain") in (None, *DOMAINS)
    return fits and subscriber and all(name.startswith("mcn.") for name in attributes)


def _error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@schema.hook
def filter_case(context, case) -> bool:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    return _everywhere(case.body)


@pytest.fixture(scope="module")
def token(request) -> str:
    yield ORCH.token("acme")
    schemathesis.python.asgi.shutdown_lifespans()  # stops the engine the app's lifespan started
    shutil.rmtree(_FOLDER, ignore_errors=True)
    line = (
        f"schemathesis: {len(OPERATIONS)} operations, {sum(COUNTS.values())} requests checked "
        f"({', '.join(f'{k} {v}' for k, v in sorted(COUNTS.items()))})"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + line)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_operation_keeps_the_document(case, token):
    OPERATIONS.add(case.operation.label)
    header_mode = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if header_mode is None or header_mode.mode == GenerationMode.POSITIVE:  # else: the fuzzer's own tenant
        case.headers = {**(case.headers or {}), "X-Tenant-Name": "acme"}
    response = case.call(headers={"X-Auth-Token": token})
    # A request valid by the document may still not apply to the instance it names now (deploy of
    # an active instance, a plan of a local one): 400 "not_applicable" says so, which is no refusal
    # of valid data.
    not_applicable = response.status_code == 400 and _error_code(response) == "not_applicable"
    case.validate_response(response, excluded_checks=[checks.positive_data_acceptance] if not_applicable else None)
    COUNTS[f"{response.status_code // 100}xx"] += 1
