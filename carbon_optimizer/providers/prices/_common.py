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
from email.utils import parsedate_to_datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

import httpx

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import (
    CarbonOptimizerError,
    InvalidInput,
    MalformedUpstreamResponse,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from carbon_optimizer.metrics import UPSTREAM_LATENCY, UPSTREAM_REQUESTS

log = logging.getLogger("carbon_optimizer.providers.prices")

# Region codes of all four providers are lower-case letters, digits and hyphens. Anything else is
# refused before it reaches an OData filter or a URL (no filter injection through a region name).
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - utc_now()).total_seconds())


def _status_error(upstream: str, endpoint: str, response: httpx.Response) -> tuple[ProviderError, str]:
    status = response.status_code
    where = f"{upstream} {endpoint}"
    if status in (401, 403):
        return ProviderAuthError(
            f"{where}: credentials rejected (HTTP {status})", source=upstream
        ), "auth_error"
    if status == 429:
        return (
            ProviderRateLimited(
                f"{where}: rate limited (HTTP 429)", source=upstream, retry_after_s=_retry_after(response)
            ),
            "rate_limited",
        )
    if status >= 500:
        return ProviderUnavailable(f"{where}: HTTP {status}", source=upstream, retryable=True), "server_error"
    return ProviderUnavailable(f"{where}: HTTP {status}", source=upstream), "client_error"


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
    """GET a JSON document with retries on 429/5xx/timeouts; failures become ProviderErrors."""
    attempt = 0
    while True:
        started = time.perf_counter()
        error: ProviderError
        try:
            response = await http.get(url, params=params, headers=headers, timeout=policy.timeout_s)
        except httpx.TimeoutException as exc:
            outcome = "timeout"
            error = ProviderUnavailable(f"{upstream} {endpoint}: timed out", source=upstream, retryable=True)
            cause: BaseException = exc
        except httpx.HTTPError as exc:
            outcome = "connect_error"
            error = ProviderUnavailable(
                f"{upstream} {endpoint}: {type(exc).__name__}", source=upstream, retryable=True
            )
            cause = exc
        else:
            if response.is_success:
                try:
                    document: object = response.json()
                except ValueError as exc:
                    UPSTREAM_REQUESTS.labels(upstream, endpoint, "malformed").inc()
                    raise MalformedUpstreamResponse(
                        f"{upstream} {endpoint}: body is not JSON", source=upstream
                    ) from exc
                finally:
                    UPSTREAM_LATENCY.labels(upstream, endpoint).observe(time.perf_counter() - started)
                UPSTREAM_REQUESTS.labels(upstream, endpoint, "ok").inc()
                return document
            error, outcome = _status_error(upstream, endpoint, response)
            cause = error
        UPSTREAM_LATENCY.labels(upstream, endpoint).observe(time.perf_counter() - started)
        UPSTREAM_REQUESTS.labels(upstream, endpoint, outcome).inc()
        if not error.retryable or attempt >= policy.max_retries:
            if cause is error:
                raise error
            raise error from cause
        delay = policy.backoff_base_s * (2**attempt)
        if isinstance(error, ProviderRateLimited) and error.retry_after_s is not None:
            if error.retry_after_s > policy.max_retry_after_s:
                raise error
            delay = max(delay, error.retry_after_s)
        attempt += 1
        log.info("%s; retry %d/%d in %.1f s", error.message, attempt, policy.max_retries, delay)
        await sleep(delay)


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


def safe_message(exc: BaseException) -> str:
    """A log/health-safe description of a failure: our own messages, or only the type name."""
    message = getattr(exc, "message", None)
    if isinstance(exc, CarbonOptimizerError) and isinstance(message, str):
        return message
    return type(exc).__name__


@dataclass(slots=True)
class SourceStatus:
    """What /health says about one price source (no secrets: messages come from `safe_message`)."""

    enabled: bool
    skipped_reason: str | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    newest_data_at: datetime | None = None  # fetch time of the newest live/cached table seen
    cooldown_until: float | None = None  # monotonic; live calls paused after a failure

    def record_success(self, now: datetime) -> None:
        """Note a successful fetch."""
        self.last_success = now
        self.last_error = None
        self.cooldown_until = None
        self.saw_data(now)

    def record_failure(self, now: datetime, exc: BaseException, cooldown_s: float) -> None:
        """Note a failed fetch and pause live calls for `cooldown_s`."""
        self.last_failure = now
        self.last_error = safe_message(exc)
        self.cooldown_until = time.monotonic() + cooldown_s

    def saw_data(self, fetched_at: datetime) -> None:
        """Track the newest live or cached table this process has served."""
        if self.newest_data_at is None or fetched_at > self.newest_data_at:
            self.newest_data_at = fetched_at

    def in_cooldown(self) -> bool:
        """True while live calls are paused after a failure."""
        return self.cooldown_until is not None and time.monotonic() < self.cooldown_until

    def as_dict(self, now: datetime) -> dict[str, object]:
        """JSON-ready view for /health."""
        age = None if self.newest_data_at is None else round((now - self.newest_data_at).total_seconds(), 1)
        return {
            "enabled": self.enabled,
            "skipped_reason": self.skipped_reason,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
            "last_error": self.last_error,
            "as_of": None if self.newest_data_at is None else self.newest_data_at.date().isoformat(),
            "age_s": age,
            "in_cooldown": self.in_cooldown(),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class Memo(Generic[K, V]):
    """Single-flight memo with a short TTL: one upstream fetch serves every concurrent caller.

    Used inside the clients where one upstream answer feeds several tables (Azure returns on-demand
    and spot items in one query; GCP's catalog covers every region).
    """

    ttl_s: float
    _values: dict[K, tuple[float, V]] = field(default_factory=dict)
    _inflight: dict[K, asyncio.Future[V]] = field(default_factory=dict)

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """Return a memoised value, joining an in-flight fetch or starting one."""
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._inflight[key] = future
        try:
            value = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no "exception was never retrieved" warning
            raise
        else:
            self._values[key] = (time.monotonic(), value)
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]

    def clear(self) -> None:
        """Forget every memoised value."""
        self._values.clear()


def as_of_today(now: datetime) -> date:
    """The `as_of` of a price read at `now` (UTC date)."""
    return now.astimezone(UTC).date()
