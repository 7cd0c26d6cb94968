"""Resilience primitives for calls to external data sources: deadline, retry, circuit breaker.

Why these exist: an upstream outage must cost a request at most one bounded wait (the deadline),
and once the outage is established it must cost nothing at all (the breaker is open), so that
`/v1/optimize` keeps answering from fallback data at normal speed. Retries use full-jitter
exponential backoff so that many workers recovering at once do not hammer the upstream in step,
and they honour `Retry-After` — but never sleep past the deadline: giving up early and falling
back beats answering late.

Everything takes its clock, sleep and random source as arguments so the tests are exact.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from carbon_optimizer.errors import ProviderError, ProviderRateLimited, ProviderUnavailable
from carbon_optimizer.metrics import CIRCUIT_STATE

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
