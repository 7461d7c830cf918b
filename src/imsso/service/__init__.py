"""Use cases: what the faces (OCCI, JSON, CLI through them) may ask, checked and turned into
operations for the engine.

Three parts along their own seams: instances (and their operations, events, figures), subscribers,
tokens. `Service` only composes them, so the faces call one object."""

from __future__ import annotations

from collections.abc import Callable

from ..auth import Validator
from ..config import Settings
from ..drivers import Driver
from ..engine import Engine
from ..profiles import ProfileRegistry, default_registry
from ..store import Store
from .common import HEX32_RE, NAME_RE, USER_RE, Caller, Context
from .instances import DECISIONS_LOOKED_AT, Instances
from .subscribers import Subscribers
from .tokens import Tokens

__all__ = [
    "DECISIONS_LOOKED_AT",
    "HEX32_RE",
    "NAME_RE",
    "USER_RE",
    "Caller",
    "Context",
    "Instances",
    "Service",
    "Subscribers",
    "Tokens",
]


class Service:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        drivers: dict[str, Driver],
        settings: Settings,
        validator: Validator,
        on_token: Callable[[str, str], None] | None = None,
        figures: Callable[[str], dict] | None = None,
        profiles: ProfileRegistry | None = None,
    ):
        context = Context(store, engine, drivers, settings, profiles or default_registry())
        self.store, self.engine, self.drivers, self.settings = store, engine, drivers, settings
        self.tokens = Tokens(validator, on_token)
        self.instances = Instances(context, figures)
        self.subscriber_data = Subscribers(context, self.instances)
        # who
        self.issue_token = self.tokens.issue_token
        self.authenticate = self.tokens.authenticate
        # instances
        self.create, self.get, self.refresh = self.instances.create, self.instances.get, self.instances.refresh
        self.failed_operation = self.instances.failed_operation
        self.profiles, self.list, self.units = self.instances.profiles, self.instances.list, self.instances.units
        self.act, self.update, self.scale = self.instances.act, self.instances.update, self.instances.scale
        self.plan, self.dispose = self.instances.plan, self.instances.dispose
        self.operation, self.operations = self.instances.operation, self.instances.operations
        self.events, self.metrics = self.instances.events, self.instances.metrics
        self.decisions = self.instances.decisions
        # subscribers
        self.subscribers, self.subscriber = self.subscriber_data.subscribers, self.subscriber_data.subscriber
        self.put_subscriber = self.subscriber_data.put_subscriber
        self.delete_subscriber = self.subscriber_data.delete_subscriber
