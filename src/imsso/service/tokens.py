"""Who calls: tokens issued by this orchestrator, and every request's token checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..auth import LocalTokens, Validator, check_headers
from ..model import InvalidInput
from .common import Caller


class Tokens:
    def __init__(self, validator: Validator, on_token: Callable[[str, str], None] | None = None):
        self.validator = validator
        self.on_token = on_token  # drivers that act with the tenant's own token keep its latest

    def issue_token(self, admin_token: str | None, tenant: str, ttl: int | None) -> tuple[str, Any]:
        if not isinstance(self.validator, LocalTokens):
            raise InvalidInput("this orchestrator validates tokens with Keystone: get one from Keystone")
        return self.validator.issue(admin_token, tenant, ttl)

    def authenticate(self, token: str | None, tenant: str | None) -> Caller:
        token, tenant = check_headers(token, tenant)
        caller = Caller(self.validator.validate(token, tenant))
        if self.on_token is not None:
            self.on_token(caller.tenant, token)
        return caller
