"""The one HTTP seam to every data source: deadline, retries, `Retry-After`, breaker, one error table.

Why one seam: an upstream outage must cost a request at most one bounded wait (the deadline), and
once it is established it must cost nothing at all (the breaker is open), whichever source it is.
Retries use full-jitter exponential backoff so that many workers recovering at once do not hammer
the upstream in step, and they honour `Retry-After` — but never sleep past the deadline (nor past
`max_retry_after_s`): giving up early and falling back beats answering late. This is the only
module of the service that catches httpx errors; adapters only build URLs and parse bodies.

One table turns an HTTP answer into the domain error tree (`errors.py`), for every source:

| upstream answer                              | raised                                | outcome label  |
|----------------------------------------------|---------------------------------------|----------------|
| 2xx with a JSON body                         | — (parsed by the adapter)             | `ok`           |
| 2xx with a body we cannot read               | `MalformedUpstreamResponse`           | `malformed`    |
| 400, 404                                     | `NoDataForZone`                       | `no_data`      |
| 401 (an adapter's `refine` may say more,     | `ProviderAuthError`                   | `auth_error`   |
|   e.g. a plan limit → `ProviderNotEntitled`) |                                       |                |
| 403                                          | `ProviderAuthError`                   | `auth_error`   |
| 429 (after retries, honouring `Retry-After`) | `ProviderRateLimited`                 | `rate_limited` |
| 5xx, timeout, connection error (retryable)   | `ProviderUnavailable`                 | `server_error`… |
| circuit open                                 | `ProviderUnavailable`                 | `circuit_open` |
| any other status                             | `ProviderUnavailable`                 | `client_error` |

Messages name the upstream, the endpoint and the status, plus at most 200 characters of the
upstream's own error words with every configured secret masked; never a URL or exception text
(httpx puts URLs, and so query-string keys, into its exception messages).
Everything takes its clock, sleep and random source as arguments so the tests are exact.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import httpx

from carbon_optimizer.errors import (
    CarbonOptimizerError,
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderRateLimited,
    ProviderUnavailable,
)
from carbon_optimizer.metrics import CIRCUIT_STATE, UPSTREAM_LATENCY, UPSTREAM_REQUESTS

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Deadline:
    """A point in (monotonic) time after which a logical operation must give up."""

    __slots__ = ("_clock", "_expires_at", "budget_s")

    def __init__(self, budget_s: float, *, clock: Clock = time.monotonic) -> None:
        self.budget_s = budget_s
        self._clock = clock
        self._expires_at = clock() + budget_s

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self._expires_at - self._clock())

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a retryable failure."""

    max_retries: int = 2
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    # A `Retry-After` longer than this is not waited for: the error is raised at once.
    max_retry_after_s: float = math.inf


def backoff_delay(
    attempt: int, policy: RetryPolicy, *, retry_after_s: float | None = None, rng: Callable[[], float]
) -> float:
    """Delay before retry number `attempt + 1`: Retry-After when given, else full jitter."""
    if retry_after_s is not None and retry_after_s >= 0:
        # Honour the server's hint; a little jitter spreads workers that all got the same hint.
        return retry_after_s + rng() * policy.backoff_base_s
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * (2.0**attempt))
    return rng() * ceiling


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date); None when absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


async def call_with_retries(
    attempt: Callable[[Deadline], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: Deadline,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run `attempt` until it succeeds, fails for good, runs out of retries or out of time.

    `attempt` raises `ProviderError`s; those with `retryable=True` are retried. A retry whose
    backoff would end after the deadline is not attempted: the last error is raised at once.
    """
    tries = 0
    while True:
        if deadline.expired:
            raise ProviderUnavailable(f"deadline of {deadline.budget_s:g}s exceeded", retryable=True)
        try:
            return await attempt(deadline)
        except ProviderError as exc:
            if not exc.retryable or tries >= policy.max_retries:
                raise
            retry_after = exc.retry_after_s if isinstance(exc, ProviderRateLimited) else None
            if retry_after is not None and retry_after > policy.max_retry_after_s:
                raise
            delay = backoff_delay(tries, policy, retry_after_s=retry_after, rng=rng)
            if delay >= deadline.remaining():
                raise
            tries += 1
            await sleep(delay)


class CircuitState(StrEnum):
    """Breaker states; the gauge value is the index (0 closed, 1 half-open, 2 open)."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one upstream.

    Closed: calls pass; `failure_threshold` consecutive failures open it. Open: calls are refused
    (callers fall back at once) until `reset_s` has passed; then one probe is let through
    (half-open). The probe's success closes the breaker, its failure re-opens it.
    """

    def __init__(
        self, name: str, *, failure_threshold: int, reset_s: float, clock: Clock = time.monotonic
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._publish()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"

    @property
    def state(self) -> CircuitState:
        """Current state; an open breaker whose reset time has passed reports half-open."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return CircuitState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go upstream now (claims the single probe when half-open)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        if self._probe_in_flight:
            return False
        self._transition(CircuitState.HALF_OPEN)
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        """The upstream answered (any definite answer, including 4xx): close the breaker."""
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not CircuitState.CLOSED:
            log.info("circuit %s closed", self.name)
            self._transition(CircuitState.CLOSED)

    def record_failure(self) -> None:
        """The upstream failed (timeout, 5xx, 429, connection): count towards opening."""
        self._probe_in_flight = False
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            if self._state is not CircuitState.OPEN:
                log.warning("circuit %s open after %d consecutive failures", self.name, self._failures)
            self._opened_at = self._clock()
            self._transition(CircuitState.OPEN)

    def release(self) -> None:
        """A call ended without an outcome (cancelled): free the half-open probe slot."""
        self._probe_in_flight = False

    def _transition(self, state: CircuitState) -> None:
        self._state = state
        self._publish()

    def _publish(self) -> None:
        CIRCUIT_STATE.labels(self.name).set(_GAUGE_VALUE[self._state])


# ----- the status table and the HTTP attempt -----

_MAX_ERROR_TEXT = 200
# Refines the table for one source: (status, upstream's error words) -> an error, or None for the table's.
Refine = Callable[[int, str, str], ProviderError | None]
# Replaces the table for a source whose answers need more than (status, words), e.g. an empty 2xx
# body meaning an outage: (endpoint, response) -> the decoded body, or raises the domain error.
Interpret = Callable[[str, httpx.Response], Any]

_OUTCOMES: dict[type[ProviderError], str] = {
    ProviderNotEntitled: "not_entitled",
    ProviderAuthError: "auth_error",
    NoDataForZone: "no_data",
    ProviderRateLimited: "rate_limited",
    MalformedUpstreamResponse: "malformed",
}

# Definite answers: the upstream is up, it just says no (the breaker counts them as successes).
DEFINITE_ERRORS: tuple[type[ProviderError], ...] = (ProviderAuthError, ProviderNotEntitled, NoDataForZone)


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every (non-trivial) secret replaced by `***`."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def error_text(response: httpx.Response, secrets: Sequence[str] = ()) -> str:
    """The upstream's own error words (JSON `error`/`message`, else plain text), shortened and masked."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        parts = (
            [str(body[k]) for k in ("error", "message") if isinstance(body.get(k), str)]
            if isinstance(body, Mapping)
            else []
        )
        text = " — ".join(parts)
    return mask(text, secrets)[:_MAX_ERROR_TEXT]


def status_error(
    upstream: str,
    endpoint: str,
    response: httpx.Response,
    *,
    zone: object = None,
    refine: Refine | None = None,
    secrets: Sequence[str] = (),
) -> ProviderError:
    """THE status → error table (see the module docstring) for a non-2xx answer."""
    status = response.status_code
    where = f"{upstream} {endpoint}"
    text = error_text(response, secrets)
    if refine is not None and (refined := refine(status, text, where)) is not None:
        return refined
    subject = f" for zone {zone!s}" if zone is not None else ""
    if status == 401:
        return ProviderAuthError(f"{where}: credentials rejected ({text or 'HTTP 401'})", source=upstream)
    if status == 403:
        return ProviderAuthError(f"{where}: access denied (HTTP 403)", source=upstream)
    if status == 404:
        return NoDataForZone(f"{where}: no data{subject} ({text or 'HTTP 404'})", source=upstream)
    if status == 400:
        return NoDataForZone(f"{where}: request rejected{subject} ({text or 'HTTP 400'})", source=upstream)
    if status == 429:
        return ProviderRateLimited(
            f"{where}: rate limited (HTTP 429)",
            source=upstream,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        return ProviderUnavailable(f"{where}: HTTP {status}", source=upstream, retryable=True)
    return ProviderUnavailable(f"{where}: unexpected HTTP {status}", source=upstream)


def outcome_of(exc: ProviderError) -> str:
    """Metric outcome label of an error raised by the table or a parser."""
    for kind in type(exc).__mro__:  # a source's own subclass (e.g. a rejected token) counts as its base
        found = _OUTCOMES.get(kind)
        if found is not None:
            return found
    return "server_error" if exc.retryable else "client_error"


@dataclass
class SourceStatus:
    """Last outcomes of one upstream, for /health (messages never contain secrets).

    The one status type of every source: `enabled`/`skipped_reason` say whether it is configured,
    `newest_data_at` how old the newest data served from it is, `cooldown_until` (monotonic) whether
    its live calls are paused after a failure.
    """

    enabled: bool = True
    skipped_reason: str | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    newest_data_at: datetime | None = None
    cooldown_until: float | None = None

    def record_success(self, now: datetime) -> None:
        """Note a successful fetch."""
        self.last_success = now
        self.last_error = None
        self.cooldown_until = None
        self.saw_data(now)

    def record_failure(self, now: datetime, exc: BaseException, cooldown_s: float = 0.0) -> None:
        """Note a failed fetch and pause live calls for `cooldown_s`."""
        self.last_failure = now
        self.last_error = safe_message(exc)
        self.cooldown_until = time.monotonic() + cooldown_s if cooldown_s > 0 else None

    def saw_data(self, fetched_at: datetime) -> None:
        """Track the newest live or cached data this process has served."""
        if self.newest_data_at is None or fetched_at > self.newest_data_at:
            self.newest_data_at = fetched_at

    def in_cooldown(self) -> bool:
        """True while live calls are paused after a failure."""
        return self.cooldown_until is not None and time.monotonic() < self.cooldown_until

    def as_dict(self, now: datetime | None = None) -> dict[str, object]:
        """JSON-ready view for /health."""
        out: dict[str, object] = {
            "last_success": iso(self.last_success),
            "last_failure": iso(self.last_failure),
            "last_error": self.last_error,
        }
        if now is not None:
            newest = self.newest_data_at
            age = None if newest is None else round((now - newest).total_seconds(), 1)
            out = {
                "enabled": self.enabled,
                "skipped_reason": self.skipped_reason,
                **out,
                "as_of": None if self.newest_data_at is None else self.newest_data_at.date().isoformat(),
                "age_s": age,
                "in_cooldown": self.in_cooldown(),
            }
        return out


def safe_message(exc: BaseException) -> str:
    """A log/health-safe description of a failure: our own messages, or only the type name."""
    message = getattr(exc, "message", None)
    if isinstance(exc, CarbonOptimizerError) and isinstance(message, str):
        return message
    return type(exc).__name__


def iso(dt: datetime | None) -> str | None:
    """`YYYY-MM-DDTHH:MM:SSZ` or None."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


class Upstream:
    """One upstream API: breaker + deadline + retries around GETs, one `SourceStatus`, metrics.

    An adapter owns one `Upstream` and calls `get_json(endpoint, url, parse=...)`; the parser runs
    inside the attempt, so a 2xx body it cannot read counts as an upstream failure (and is retried
    no more than any other malformed answer: not at all).
    """

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        deadline_s: float,
        read_timeout_s: float,
        connect_timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        refine: Refine | None = None,
        interpret: Interpret | None = None,
        secrets: Sequence[str] = (),
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._http = http
        self.deadline_s = deadline_s
        self._read_timeout_s = read_timeout_s
        self._connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else read_timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self._refine = refine
        self._interpret = interpret
        self._secrets = tuple(secrets)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng
        self.status = SourceStatus()

    def __repr__(self) -> str:
        state = self.breaker.state.value if self.breaker is not None else "none"
        return f"Upstream({self.name!r}, breaker={state})"

    async def get_json(
        self,
        endpoint: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[Any], T] | None = None,
        zone: object = None,
        auth: httpx.Auth | None = None,
        deadline: Deadline | None = None,
    ) -> T:
        """One logical GET (retries inside the deadline, breaker around it), parsed by `parse`.

        `auth` is for a request that authenticates differently from the client's default (a
        source's login with HTTP Basic credentials). `deadline` lets several calls of one logical
        fetch (a login, the data call, a re-login after a refused token) share one time budget;
        without it each call gets `deadline_s` of its own.
        """
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            UPSTREAM_REQUESTS.labels(self.name, endpoint, "circuit_open").inc()
            raise ProviderUnavailable(f"{self.name} circuit open", source=self.name)
        if deadline is None:
            deadline = Deadline(self.deadline_s, clock=self._monotonic)
        parser: Callable[[Any], Any] = parse if parse is not None else _identity
        try:
            result: T = await call_with_retries(
                lambda d: self._attempt(endpoint, url, params, headers, d, parser, zone, auth),
                policy=self.retry,
                deadline=deadline,
                sleep=self._sleep,
                rng=self._rng,
            )
        except DEFINITE_ERRORS as exc:
            if breaker is not None:
                breaker.record_success()
            self._note_failure(exc)
            raise
        except ProviderError as exc:
            if breaker is not None:
                breaker.record_failure()
            self._note_failure(exc)
            raise
        except BaseException:
            if breaker is not None:
                breaker.release()  # cancelled: no verdict on the upstream
            raise
        if breaker is not None:
            breaker.record_success()
        self.status.last_success = self._wall_clock()
        return result

    async def _attempt(
        self,
        endpoint: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        deadline: Deadline,
        parse: Callable[[Any], T],
        zone: object,
        auth: httpx.Auth | None = None,
    ) -> T:
        remaining = deadline.remaining()
        timeout = httpx.Timeout(
            min(self._read_timeout_s, remaining), connect=min(self._connect_timeout_s, remaining)
        )
        started = self._monotonic()
        outcome = "error"
        where = f"{self.name} {endpoint}"
        try:
            try:
                async with asyncio.timeout(remaining):
                    response = await self._http.get(
                        url,
                        params=params,
                        headers=headers,
                        auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                        timeout=timeout,
                    )
            except (httpx.TimeoutException, TimeoutError) as exc:
                outcome = "timeout"
                raise ProviderUnavailable(f"{where}: timed out", source=self.name, retryable=True) from exc
            except httpx.HTTPError as exc:
                outcome = "connect_error"
                raise ProviderUnavailable(
                    f"{where}: {type(exc).__name__}", source=self.name, retryable=True
                ) from exc
            if self._interpret is not None:
                payload = self._interpret(endpoint, response)
            else:
                if not response.is_success:
                    raise status_error(
                        self.name, endpoint, response, zone=zone, refine=self._refine, secrets=self._secrets
                    )
                try:
                    payload = response.json()
                except ValueError as exc:
                    raise MalformedUpstreamResponse(f"{where}: body is not JSON", source=self.name) from exc
            result = parse(payload)
            outcome = "ok"
            return result
        except ProviderError as exc:
            if outcome not in ("timeout", "connect_error"):
                outcome = outcome_of(exc)
            raise
        finally:
            UPSTREAM_REQUESTS.labels(self.name, endpoint, outcome).inc()
            UPSTREAM_LATENCY.labels(self.name, endpoint).observe(self._monotonic() - started)

    def _note_failure(self, exc: ProviderError) -> None:
        self.status.last_failure = self._wall_clock()
        self.status.last_error = f"{type(exc).__name__}: {exc.message}"


def _identity(payload: Any) -> Any:
    return payload
