"""Deadline, retry/backoff and circuit breaker, with an injected clock (no real waiting)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carbon_optimizer.errors import NoDataForZone, ProviderRateLimited, ProviderUnavailable
from carbon_optimizer.providers.upstream import (
    CircuitBreaker,
    CircuitState,
    Deadline,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    parse_retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """Read through a call so mypy does not narrow the property between assertions."""
    return breaker.state


def test_deadline_counts_down() -> None:
    clock = Clock()
    deadline = Deadline(2.0, clock=clock)
    assert deadline.remaining() == 2.0
    clock.now = 1.5
    assert deadline.remaining() == pytest.approx(0.5)
    clock.now = 3
    assert deadline.remaining() == 0
    assert deadline.expired


def test_full_jitter_backoff_is_bounded_and_capped() -> None:
    policy = RetryPolicy(max_retries=5, backoff_base_s=0.1, backoff_cap_s=0.5)
    assert backoff_delay(0, policy, rng=lambda: 1.0) == pytest.approx(0.1)
    assert backoff_delay(2, policy, rng=lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay(6, policy, rng=lambda: 1.0) == pytest.approx(0.5)
    assert backoff_delay(3, policy, rng=lambda: 0.0) == 0.0
    assert backoff_delay(0, policy, retry_after_s=2.0, rng=lambda: 0.0) == 2.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("Fri, 02 Jun 2023 12:00:10 GMT", 10.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2023, 6, 2, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


async def test_retries_only_retryable_errors() -> None:
    clock = Clock()
    calls = 0

    async def definite(_: Deadline) -> int:
        nonlocal calls
        calls += 1
        raise NoDataForZone("no data")

    with pytest.raises(NoDataForZone):
        await call_with_retries(
            definite, policy=RetryPolicy(3), deadline=Deadline(5, clock=clock), sleep=clock.sleep
        )
    assert calls == 1


async def test_retries_until_success_within_max() -> None:
    clock = Clock()
    outcomes: list[Exception | int] = [
        ProviderUnavailable("x", retryable=True),
        ProviderUnavailable("y", retryable=True),
        7,
    ]

    async def flaky(_: Deadline) -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await call_with_retries(
        flaky,
        policy=RetryPolicy(max_retries=2, backoff_base_s=0.1),
        deadline=Deadline(5, clock=clock),
        sleep=clock.sleep,
        rng=lambda: 1.0,
    )
    assert result == 7
    assert clock.sleeps == pytest.approx([0.1, 0.2])


async def test_gives_up_after_max_retries() -> None:
    clock = Clock()
    calls = 0

    async def down(_: Deadline) -> int:
        nonlocal calls
        calls += 1
        raise ProviderUnavailable("down", retryable=True)

    with pytest.raises(ProviderUnavailable):
        await call_with_retries(
            down, policy=RetryPolicy(max_retries=3), deadline=Deadline(50, clock=clock), sleep=clock.sleep
        )
    assert calls == 4


async def test_never_sleeps_past_the_deadline() -> None:
    clock = Clock()

    async def limited(_: Deadline) -> int:
        clock.now += 0.9  # each attempt takes 0.9 s
        raise ProviderRateLimited("slow down", retry_after_s=0.5)

    with pytest.raises(ProviderRateLimited):
        await call_with_retries(
            limited,
            policy=RetryPolicy(max_retries=10),
            deadline=Deadline(2.0, clock=clock),
            sleep=clock.sleep,
            rng=lambda: 0.0,
        )
    assert clock.now <= 2.0 + 0.9


async def test_expired_deadline_fails_without_calling() -> None:
    clock = Clock()
    deadline = Deadline(1, clock=clock)
    clock.now = 5

    async def never(_: Deadline) -> int:
        raise AssertionError("called")

    with pytest.raises(ProviderUnavailable, match="deadline"):
        await call_with_retries(never, policy=RetryPolicy(), deadline=deadline, sleep=clock.sleep)


def test_breaker_lifecycle() -> None:
    clock = Clock()
    breaker = CircuitBreaker("test-lifecycle", failure_threshold=3, reset_s=10, clock=clock)
    assert breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # success resets the consecutive count
    breaker.record_failure()
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    assert not breaker.allow()

    clock.now = 10
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert breaker.allow()  # the single probe
    assert not breaker.allow()  # others still refused while it runs
    breaker.record_failure()  # probe failed: open again, timer restarted
    assert state_of(breaker) is CircuitState.OPEN
    clock.now = 15
    assert not breaker.allow()
    clock.now = 20
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED
    assert "closed" in repr(breaker)


def test_breaker_release_frees_the_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("test-release", failure_threshold=1, reset_s=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    assert breaker.allow()
    breaker.release()  # cancelled probe: no verdict
    assert breaker.allow()
