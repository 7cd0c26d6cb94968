"""One manual clock for tests: time moves only when a test (or an awaited `sleep`) says so."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class ManualClock:
    """Callable as a float clock (epoch or monotonic seconds); `wall()` gives the same instant.

    `sleep` advances the clock instead of waiting, so retry and back-off paths run instantly and
    their delays can be asserted (`slept` records them).
    """

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

    def wall(self) -> datetime:
        """The current instant as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now, UTC)

    async def sleep(self, seconds: float) -> None:
        """Record and skip the wait."""
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
