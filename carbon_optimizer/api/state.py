"""Typed per-worker application state, built once in the lifespan and read by routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request

from carbon_optimizer.api.result_cache import ResultCache
from carbon_optimizer.ledger.ledger import Ledger
from carbon_optimizer.providers.catalog import RegionCatalog
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.serverless_prices import ServerlessPriceChain
from carbon_optimizer.providers.store import KeyValueStore
from carbon_optimizer.service import OptimizerService
from carbon_optimizer.settings import Settings


class Readiness:
    """The one mutable bit of the state: whether the worker takes traffic (set by the lifespan)."""

    __slots__ = ("ready",)

    def __init__(self) -> None:
        self.ready = False


@dataclass(frozen=True)
class AppState:
    """Everything a request needs; one frozen instance per worker, yielded by the lifespan."""

    settings: Settings
    http: httpx.AsyncClient  # the process's one HTTP client (the CLI's `prices refresh` uses it)
    price_store: KeyValueStore  # where price tables live (Redis, or the local file cache)
    service: OptimizerService
    catalog: RegionCatalog
    bundled_prices: BundledPriceProvider
    started_at: float
    # Component health reporters and readiness checks registered by the stacks in the lifespan.
    health_reporters: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    readiness_checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    result_cache: ResultCache = field(default_factory=ResultCache)
    # Serverless price chain for /v1/compare/deployment (None → bundled tables only).
    serverless_prices: ServerlessPriceChain | None = None
    # The savings ledger (issue 15); None when `database.enabled` is off.
    ledger: Ledger | None = None
    readiness: Readiness = field(default_factory=Readiness)

    @property
    def ready(self) -> bool:
        """Whether the worker has finished starting and is not shutting down."""
        return self.readiness.ready


def get_state(request: Request) -> AppState:
    """The worker's AppState (yielded by the lifespan as its typed state).

    Read from the scope's state dict, which `request.state` wraps: the `State` object that
    property builds on every request was most of this function's cost (issue 12).
    """
    state: AppState = request.scope["state"]["co"]
    return state


def request_id(request: Request) -> str:
    """The id the edge middleware assigned to this request."""
    return str(request.scope.get("state", {}).get("request_id", "-"))
