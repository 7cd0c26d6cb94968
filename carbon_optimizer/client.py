"""Typed Python client for the carbon-optimizer HTTP API, sync and async (httpx).

Why it looks like this:
- One source of truth for the wire shapes: requests are the server's own pydantic models from
  `carbon_optimizer.api.schemas` (`OptimizeRequest`, `EstimateRequest`), validated on the caller's
  side before anything is sent, and answers are parsed into the server's response models
  (`OptimizeResponse`, and `EstimateResponse` from `carbon_optimizer.api.response_models`).
- Retries only where a retry can help: 429 (rate limited) and 503 (no data source could answer),
  plus connection failures and timeouts. The wait honours `Retry-After` (seconds or an HTTP date),
  else exponential back-off with full jitter, capped by `max_backoff_s`. 4xx answers are the
  caller's mistake and raise `ApiError` at once, carrying the problem+json body.
- Timeouts are explicit (httpx's default of 5 s everywhere is too short for a cold 7-day plan and
  too long for a connect); pass `timeout=` to override.
- The API key travels as `Authorization: Bearer`, never in a URL, and never appears in `repr()`
  or in an error message.
- `transport=` accepts any httpx transport, e.g. `httpx.ASGITransport(app)` to call an app in the
  same process (tests, notebooks) without a socket.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import BaseModel

from carbon_optimizer import __version__
from carbon_optimizer.api.response_models import EstimateResponse
from carbon_optimizer.api.schemas import EstimateRequest, OptimizeRequest, OptimizeResponse, ProblemOut

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiError",
    "AsyncCarbonOptimizerClient",
    "CarbonOptimizerClient",
    "EstimateRequest",
    "EstimateResponse",
    "OptimizeRequest",
    "OptimizeResponse",
    "RetryPolicy",
    "TransportError",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=3.0)
RETRY_STATUSES = frozenset({429, 503})


class ApiError(Exception):
    """The service answered with an error status; `problem` is its RFC 9457 body when it sent one."""

    def __init__(self, status: int, problem: ProblemOut | None, retry_after_s: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after_s = retry_after_s
        detail = (problem.detail or problem.title) if problem else "no problem details"
        super().__init__(f"HTTP {status}: {detail}")


class TransportError(Exception):
    """The service could not be reached (connection refused, timeout) after every retry."""


class RetryPolicy:
    """How many times and how long to wait before retrying a 429/503 or a transport failure."""

    def __init__(
        self,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (0-based `attempt` just failed)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        ceiling = min(self.backoff_s * (2.0**attempt), self.max_backoff_s)
        return float(ceiling * self.jitter())


def parse_retry_after(
    value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now()).total_seconds(), 0.0)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"carbon-optimizer-client/{__version__}", "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _body(request: BaseModel | Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Validate a request locally (the server's own model) and dump it as the wire JSON."""
    validated = request if isinstance(request, model) else model.model_validate(request)
    dumped: dict[str, Any] = validated.model_dump(mode="json", exclude_none=True)
    return dumped


def _problem(response: httpx.Response) -> ProblemOut | None:
    try:
        return ProblemOut.model_validate(response.json())
    except ValueError:
        return None


def _error(response: httpx.Response) -> ApiError:
    return ApiError(
        response.status_code, _problem(response), parse_retry_after(response.headers.get("retry-after"))
    )


class CarbonOptimizerClient:
    """Blocking client. Use as a context manager, or call `close()`.

    >>> with CarbonOptimizerClient("http://127.0.0.1:8000", api_key="...") as co:  # doctest: +SKIP
    ...     plan = co.optimize({"workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    ...                         "locations": [{"zone": "DE"}, {"zone": "FR"}]})
    ...     print(plan.best.location.zone, plan.best.start)
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"CarbonOptimizerClient({str(self._http.base_url)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> httpx.Response:
        """Send with retries on 429/503 and transport failures; raise `ApiError` on any other 4xx/5xx."""
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if last:
                    raise TransportError(f"cannot reach {self._http.base_url}: {type(exc).__name__}") from exc
                self._sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._sleep(self.retry.delay(attempt, parse_retry_after(response.headers.get("retry-after"))))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def optimize(self, request: OptimizeRequest | Mapping[str, Any]) -> OptimizeResponse:
        """POST /v1/optimize: ranked (location, start) options."""
        response = self.request("POST", "/v1/optimize", json=_body(request, OptimizeRequest))
        return OptimizeResponse.model_validate(response.json())

    def estimate(self, request: EstimateRequest | Mapping[str, Any]) -> EstimateResponse:
        """POST /v1/estimate: list cost, energy and emissions of one instance type."""
        response = self.request("POST", "/v1/estimate", json=_body(request, EstimateRequest))
        return EstimateResponse.model_validate(response.json())

    def health(self) -> dict[str, Any]:
        """GET /health: component status (untyped: its sections belong to each data stack)."""
        payload: dict[str, Any] = self.request("GET", "/health").json()
        return payload


class AsyncCarbonOptimizerClient:
    """The same API for asyncio code (`async with AsyncCarbonOptimizerClient(...) as co`)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"AsyncCarbonOptimizerClient({str(self._http.base_url)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> httpx.Response:
        """Send with retries on 429/503 and transport failures; raise `ApiError` on any other 4xx/5xx."""
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if last:
                    raise TransportError(f"cannot reach {self._http.base_url}: {type(exc).__name__}") from exc
                await self._sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await self._sleep(
                    self.retry.delay(attempt, parse_retry_after(response.headers.get("retry-after")))
                )
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def optimize(self, request: OptimizeRequest | Mapping[str, Any]) -> OptimizeResponse:
        """POST /v1/optimize: ranked (location, start) options."""
        response = await self.request("POST", "/v1/optimize", json=_body(request, OptimizeRequest))
        return OptimizeResponse.model_validate(response.json())

    async def estimate(self, request: EstimateRequest | Mapping[str, Any]) -> EstimateResponse:
        """POST /v1/estimate: list cost, energy and emissions of one instance type."""
        response = await self.request("POST", "/v1/estimate", json=_body(request, EstimateRequest))
        return EstimateResponse.model_validate(response.json())

    async def health(self) -> dict[str, Any]:
        """GET /health: component status (untyped: its sections belong to each data stack)."""
        payload: dict[str, Any] = (await self.request("GET", "/health")).json()
        return payload
