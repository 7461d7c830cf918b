"""The openstack driver: an instance is one Heat stack, rendered from the same plan as local units.

It realises whole plans (create or update the stack and wait), rather than one unit at a time:
the engine asks it for the stack request, applies it, and reads the outputs back.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ...model import Instance, InvalidInput, Subscriber, Unit
from ...planning import Plan, UnitLayout
from ...profiles import Profile
from .. import Capabilities, DriverContext, DriverError, PlanDriver
from . import heat, template
from .heat import Credentials, StackRequest, StackStatus

FIRST_HOST = 10  # .1-.9 are the subnet's router, DHCP and whatever the operator keeps
DELETE_TIMEOUT = 600.0


class OpenStackDriver(PlanDriver):
    name = "openstack"
    option_prefix = template.ATTRIBUTE_PREFIX
    create_only = template.CREATE_ONLY  # attributes that cannot change once units have addresses
    # Servers are Heat's: no unit is probed, healed or called from here yet.
    capabilities = Capabilities(preview=True)
    plan_noun = "Heat stacks"

    def __init__(
        self,
        credentials: Credentials,
        defaults: dict[str, str],
        environment_file: str = "",
        environment_dir: Path | None = None,
    ):
        self.credentials = credentials
        self.defaults = defaults
        self.environment_file = environment_file
        self.environment_dir = environment_dir

    @classmethod
    def build(cls, context: DriverContext) -> OpenStackDriver:
        settings = context.settings
        credentials = Credentials(context.keystone_catalog, settings.os_region, settings.os_cloud, context.keystone_url)
        return cls(credentials, settings.os_defaults, settings.heat_environment, Path(settings.heat_environment_dir))

    def remember_token(self, tenant: str, token: str) -> None:
        self.credentials.remember(tenant, token)

    def options(self, instance: Instance) -> template.Options:
        return template.options(instance.attributes, self.defaults)

    def check_options(self, instance: Instance) -> None:
        self.options(instance)

    # planning
    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        net = ipaddress.IPv4Network(self.options(instance).cidr)
        for number, host in enumerate(net.hosts(), start=1):
            if number >= FIRST_HOST and str(host) not in taken:
                return str(host)
        raise DriverError(f"no free address left in {net} for instance {instance.name}")

    def layout(self, instance: Instance, unit_name: str) -> UnitLayout:
        return template.layout(self.options(instance), unit_name)

    def request(self, instance: Instance, profile: Profile, plan: Plan, subscribers: list[Subscriber]) -> StackRequest:
        """The template, environment and files a create or update of the instance's stack sends."""
        opts = self.options(instance)
        body = template.render(instance, profile, plan, subscribers, opts, template.script_sources())
        environment, files = self.environment(opts)
        return StackRequest(
            name=template.stack_name(instance),
            template=body,
            environment=environment,
            files=files,
            timeout_mins=max(1, -(-opts.boot_timeout // 60)) + 10,
        )

    def environment(self, opts: template.Options) -> tuple[dict[str, Any], dict[str, str]]:
        """The named environment (instance attribute), else the configured one, with the files its
        resource_registry names (provider templates), read next to it."""
        if opts.environment:
            if self.environment_dir is None:
                raise InvalidInput(
                    "imsso.os.environment names an environment, but this orchestrator "
                    "has no environments folder (IMSSO_HEAT_ENVIRONMENT_DIR)"
                )
            path = self.environment_dir / f"{opts.environment}.yaml"
        elif self.environment_file:
            path = Path(self.environment_file)
        else:
            return {}, {}
        try:
            environment = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DriverError(f"cannot read the Heat environment {path}", str(exc)) from exc
        if not isinstance(environment, dict):
            raise DriverError(f"the Heat environment {path} is not a mapping")
        files = {}
        for name in _provider_templates(environment.get("resource_registry", {})):
            try:
                files[name] = (path.parent / name).read_text()
            except OSError as exc:
                raise DriverError(f"{path} names {name}, which cannot be read", str(exc)) from exc
        return environment, files

    # stacks
    def apply(
        self, instance: Instance, request: StackRequest, record_id: Callable[[str], None], deadline: float
    ) -> StackStatus:
        conn = self.credentials.connect(instance.tenant)
        return heat.create_or_update(conn, instance.stack_id, request, record_id, deadline)

    def preview(self, instance: Instance, request: StackRequest) -> dict[str, Any]:
        return heat.preview(self.credentials.connect(instance.tenant), instance.stack_id, request)

    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        if not instance.stack_id and not units:
            return ["no stack was created"]
        conn = self.credentials.connect(instance.tenant)
        return [heat.delete(conn, instance.stack_id, template.stack_name(instance), time.monotonic() + DELETE_TIMEOUT)]

    # what the engine asks every driver
    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        """Subscribers travel in the S-CSCFs' user data: they take effect at the next provision."""

    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None, deadline: float) -> str:
        return (
            f"every server signalled its wait condition after its unit answered its own probe ({len(plan.units)} units)"
        )

    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        """Servers are Heat's: their health is not observed unit by unit yet."""
        return True

    def answers(self, instance: Instance, unit: Unit, probe: str) -> bool:
        return True  # the same: no probe reaches into the tenant's network yet


def _provider_templates(registry: Any) -> list[str]:
    """Values of a resource_registry that name template files rather than resource types."""
    found: list[str] = []
    if isinstance(registry, dict):
        for value in registry.values():
            found += _provider_templates(value)
    elif (
        isinstance(registry, str)
        and registry.endswith((".yaml", ".yml", ".template"))
        and "::" not in registry
        and not registry.startswith(("http:", "https:", "file:"))
    ):
        found.append(registry)
    return sorted(set(found))
