"""Upstream call budgets: per request, per request's retries, and per client per minute (issue 11 item 6).

Why: one cold `POST /v1/optimize` over 100 zones made 200 upstream calls (600 while the upstream
answered 500, every zone retrying on its own), and each distinct past window cost more; only the
HTTP rate limit bounded a client's share of the Electricity Maps quota. Three bounds, charged in
`upstream.Upstream.get_json` before every HTTP attempt (first tries and retries alike):

- `max_calls_per_request`: a request stops calling upstream after this many attempts; the rest of
  its zones are answered from stale cache or bundled data, with a warning naming the budget.
- `max_retries_per_request`: ONE retry allowance for the whole request, shared by all its zones,
  so an erroring upstream costs about one call per zone, not `1 + max_retries` per zone.
- `calls_per_client_per_minute`: counted per client id (the hash of its API key, never the key)
  in the shared store (`INCR` of `<prefix>:upbudget:<client>:<minute>`) so every worker and
  replica shares one budget; with no store, or while it fails, each worker counts locally.

The budget travels in a `ContextVar` set by `api/upstream_budget.py` for each API request, so
the tasks a request fans out (zones, kinds, past chunks) inherit it and a single-flight fetch
started by one request is charged to that request. Calls outside a request (the CLI, background
refresh) carry no budget and are counted under the client label `internal`.
Refusals are `UpstreamBudgetExhausted`: not an upstream failure, so the breaker and the cache's
failure cool-down ignore them (another client's request asks upstream normally).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from carbon_optimizer.errors import ProviderUnavailable
from carbon_optimizer.metrics import UPSTREAM_BUDGET_REFUSALS, UPSTREAM_CALLS_BY_CLIENT, child

RETRY_REFUSED = "the request's retry budget is spent"
INTERNAL_CLIENT = "internal"
ANONYMOUS_CLIENT = "anonymous"


class UpstreamBudgetExhausted(ProviderUnavailable):
    """An upstream call refused by a budget (the upstream itself was not asked)."""


@runtime_checkable
class CountingStore(Protocol):
    """A store with an atomic counter (Redis INCR; memory)."""

    async def incr(self, key: str, ttl_s: float) -> int | None:
        """Increment `key` (created with `ttl_s`); the new value, or None when the store failed."""
        ...


class ClientMinuteBudget:
    """Upstream calls per client per wall-clock minute, shared through the store when it can count."""

    def __init__(
        self,
        limit_per_minute: int,
        store: object | None,
        *,
        key_prefix: str = "co:v1",
        clock: Callable[[], float] = time.time,
        max_local_clients: int = 4096,
    ) -> None:
        self.limit = limit_per_minute
        self._store = store if isinstance(store, CountingStore) else None
        self._prefix = key_prefix
        self._clock = clock
        self._local: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._max_local = max_local_clients

    @property
    def shared(self) -> bool:
        """Whether counts are shared across workers (a counting store is configured)."""
        return self._store is not None

    async def take(self, client: str) -> bool:
        """Count one call for `client`; False when its minute's budget is already spent."""
        minute = int(self._clock() // 60)
        if self._store is not None:
            count = await self._store.incr(f"{self._prefix}:upbudget:{client}:{minute}", 120.0)
            if count is not None:
                return count <= self.limit
        key = (client, minute)  # store down or absent: this worker's own count
        count = self._local.get(key, 0) + 1
        self._local[key] = count
        self._local.move_to_end(key)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)
        return count <= self.limit


@dataclass
class RequestBudget:
    """The upstream allowance of one API request (shared by every task the request fans out)."""

    client: str
    max_calls: int
    max_retries: int
    per_client: ClientMinuteBudget | None = None
    calls: int = 0
    retries: int = 0
    refused: int = 0
    reasons: set[str] = field(default_factory=set)

    async def charge(self, upstream: str, *, retry: bool) -> None:
        """Spend one attempt on `upstream`, or raise `UpstreamBudgetExhausted`.

        The request's counters are claimed before the (awaited) per-client count, so concurrent
        zones of one request can never overspend them between a check and an increment.
        """
        reason: str | None = None
        if self.calls >= self.max_calls:
            reason = f"this request's upstream call budget ({self.max_calls}) is spent"
        elif retry and self.retries >= self.max_retries:
            reason = f"this request's retry budget ({self.max_retries}) is spent"
        else:
            self.calls += 1
            self.retries += int(retry)
            if self.per_client is not None and not await self.per_client.take(self.client):
                self.calls -= 1
                self.retries -= int(retry)
                reason = f"this client's upstream budget ({self.per_client.limit}/minute) is spent"
        if reason is not None:
            self.refused += 1
            self.reasons.add(reason)
            child(UPSTREAM_BUDGET_REFUSALS, self.client, upstream).inc()
            raise UpstreamBudgetExhausted(f"{upstream}: {reason}", source=upstream)
        child(UPSTREAM_CALLS_BY_CLIENT, self.client, upstream).inc()


_CURRENT: ContextVar[RequestBudget | None] = ContextVar("carbon_optimizer_upstream_budget", default=None)


def current_budget() -> RequestBudget | None:
    """The budget of the request this task serves (None outside a request)."""
    return _CURRENT.get()


@contextlib.contextmanager
def request_budget(budget: RequestBudget | None) -> Iterator[RequestBudget | None]:
    """Make `budget` the current one for the code (and the tasks it starts) inside the block."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


async def charge(upstream: str, *, retry: bool) -> None:
    """Charge the current request's budget, or count an internal call when there is none."""
    budget = _CURRENT.get()
    if budget is None:
        child(UPSTREAM_CALLS_BY_CLIENT, INTERNAL_CLIENT, upstream).inc()
        return
    await budget.charge(upstream, retry=retry)
