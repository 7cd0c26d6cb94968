"""Each API request's upstream call budget (see providers/budget.py), built by the edge.

The edge (api/edge.py) asks for it inside the API-key check, so the client id (the hash of the
caller's key, `anonymous` when the API is open) is known; the per-client minute budget counts in
the worker's shared store (Redis when configured) found in the lifespan state. Only `/v1/`
requests get a budget: probes and `/metrics` never call upstream. The edge runs the request
inside `providers.budget.request_budget(...)`, so tasks it starts inherit the budget.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from carbon_optimizer.logging_config import client_id_from_scope
from carbon_optimizer.providers.budget import ANONYMOUS_CLIENT, ClientMinuteBudget, RequestBudget
from carbon_optimizer.settings import Settings


class UpstreamBudgets:
    """A fresh `RequestBudget` for every `/v1/` request (the per-client budget is per worker)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings.upstream_budget
        self._key_prefix = settings.redis.key_prefix
        self._per_client: ClientMinuteBudget | None = None

    def _client_budget(self, scope: Scope) -> ClientMinuteBudget:
        if self._per_client is None:
            state: Any = scope.get("state", {})
            co = state.get("co") if isinstance(state, dict) else None
            store = getattr(co, "price_store", None)  # the runtime's one shared store (Redis) or a file cache
            self._per_client = ClientMinuteBudget(
                self._settings.calls_per_client_per_minute, store, key_prefix=self._key_prefix
            )
        return self._per_client

    def for_request(self, scope: Scope) -> RequestBudget | None:
        """The budget to run this request in, or None (budgets off, or not an API path)."""
        if not self._settings.enabled or not scope["path"].startswith("/v1/"):
            return None
        return RequestBudget(
            client=client_id_from_scope(scope) or ANONYMOUS_CLIENT,
            max_calls=self._settings.max_calls_per_request,
            max_retries=self._settings.max_retries_per_request,
            per_client=self._client_budget(scope),
        )
