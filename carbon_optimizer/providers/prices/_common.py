"""Plumbing shared by the live price clients: one HTTP seam, error translation, source status.

Why one helper: every client must turn transport failures into the `errors.py` tree, record the
same metrics (`upstream`, `endpoint`, `outcome`) and never leak a credential. Keys therefore travel
only in headers (never in a URL, which httpx puts into its exception texts), and the messages built
here name the upstream, the endpoint and a status code, never exception text or a URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

import httpx

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import InvalidInput, MalformedUpstreamResponse
from carbon_optimizer.providers.tiered import SingleFlight
from carbon_optimizer.providers.upstream import RetryPolicy, SourceStatus, Upstream, safe_message

log = logging.getLogger("carbon_optimizer.providers.prices")

# Region codes of all four providers are lower-case letters, digits and hyphens. Anything else is
# refused before it reaches an OData filter or a URL (no filter injection through a region name).
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Headers whose values are credentials: masked out of any upstream error text we keep.
_SECRET_HEADERS = frozenset({"authorization", "x-goog-api-key", "api-key", "x-api-key"})
__all__ = ["SourceStatus", "safe_message"]  # re-exported for the price package


def utc_now() -> datetime:
    """Current time, aware UTC (the default clock of every component here)."""
    return datetime.now(UTC)


def check_region(provider: str, region: str) -> str:
    """Return `region` if it looks like a provider region code, else raise InvalidInput."""
    if not _REGION.match(region):
        raise InvalidInput(f"not a valid {provider} region code: {region[:64]!r}", loc=("region",))
    return region


@runtime_checkable
class LivePriceSource(Protocol):
    """A live price API client, as the cache chain and the refresh job see it.

    It is a `PriceProvider` plus what caching and refreshing need: which price types it can
    answer and which regions to refresh. (Which providers' tables are partial — GCP composes some
    families only — is a fixed fact the chain knows even when no live client exists.)
    """

    name: str

    def supports(self, price_type: PriceType) -> bool:
        """True when this API publishes prices of `price_type`."""
        ...

    async def regions(self) -> list[str]:
        """Every region this API can price (used by the refresh job)."""
        ...

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Fetch the live table of one region (None when the API has nothing for it)."""
        ...

    async def aclose(self) -> None:
        """Release clients and background work."""
        ...


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeouts and retries for one upstream. Backoff doubles per attempt."""

    timeout_s: float = 10.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    max_retry_after_s: float = 30.0

    @property
    def deadline_s(self) -> float:
        """Budget of one logical fetch: every attempt's timeout plus the longest wait we honour."""
        return self.timeout_s * (self.max_retries + 1) + self.max_retry_after_s


async def get_json(
    http: httpx.AsyncClient,
    url: str,
    *,
    upstream: str,
    endpoint: str,
    policy: HttpPolicy,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> object:
    """GET a JSON document through the shared upstream seam (retries on 429/5xx/timeouts)."""
    seam = Upstream(
        upstream,
        http,
        deadline_s=policy.deadline_s,
        read_timeout_s=policy.timeout_s,
        retry=RetryPolicy(
            max_retries=policy.max_retries,
            backoff_base_s=policy.backoff_base_s,
            backoff_cap_s=max(policy.backoff_base_s * 4, 0.0),
            max_retry_after_s=policy.max_retry_after_s,
        ),
        secrets=tuple(
            v.split(" ", 1)[-1] for k, v in (headers or {}).items() if k.lower() in _SECRET_HEADERS
        ),
        sleep=sleep,
    )
    document: object = await seam.get_json(endpoint, url, params=params, headers=headers)
    return document


def expect_mapping(value: object, upstream: str, what: str) -> Mapping[str, object]:
    """Return `value` as a JSON object or raise MalformedUpstreamResponse."""
    if not isinstance(value, Mapping):
        raise MalformedUpstreamResponse(f"{upstream}: {what} is not a JSON object", source=upstream)
    return value


def expect_list(value: object, upstream: str, what: str) -> Sequence[object]:
    """Return `value` as a JSON array or raise MalformedUpstreamResponse."""
    if not isinstance(value, list):
        raise MalformedUpstreamResponse(f"{upstream}: {what} is not a JSON array", source=upstream)
    return value


K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class Memo(Generic[K, V]):
    """A short-TTL memo over the shared `SingleFlight`: one upstream fetch serves every caller.

    Used inside the clients where one upstream answer feeds several tables (Azure returns on-demand
    and spot items in one query; GCP's catalog covers every region).
    """

    ttl_s: float
    _values: dict[K, tuple[float, V]] = field(default_factory=dict)
    _flights: SingleFlight[K, V] = field(default_factory=SingleFlight)

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """Return a memoised value, joining an in-flight fetch or starting one."""
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]

        async def fetch_and_remember() -> V:
            value = await fetch()
            self._values[key] = (time.monotonic(), value)
            return value

        return await self._flights.run(key, fetch_and_remember)

    def clear(self) -> None:
        """Forget every memoised value."""
        self._values.clear()


def as_of_today(now: datetime) -> date:
    """The `as_of` of a price read at `now` (UTC date)."""
    return now.astimezone(UTC).date()
