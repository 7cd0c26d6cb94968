"""A small bounded load generator for the fault tests and bench/bench_faults.py (loopback only).

`run_load(url, …)` sends requests from `concurrency` threads, each on its own keep-alive
`httpx.Client`, until `stop` is set or `duration_s` passes, and records every outcome: status
code, or the transport error's class name, with its latency and start time. Plain threads, so a
test can inject faults from its own thread while the load runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Outcome:
    started: float  # monotonic
    latency_s: float
    status: int | None  # None: transport error
    error: str | None = None


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def window(self, start: float, end: float) -> LoadResult:
        """Outcomes of requests that started in [start, end)."""
        return LoadResult([o for o in self.outcomes if start <= o.started < end])

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def server_errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status is not None and o.status >= 500)

    @property
    def transport_errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status is None)

    @property
    def non_2xx(self) -> int:
        return sum(1 for o in self.outcomes if o.status is None or not 200 <= o.status < 300)

    def statuses(self) -> Counter[str]:
        return Counter(str(o.status) if o.status is not None else str(o.error) for o in self.outcomes)

    def p99_ms(self) -> float:
        latencies = sorted(o.latency_s for o in self.outcomes)
        if not latencies:
            return 0.0
        return 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "5xx": self.server_errors,
            "transport_errors": self.transport_errors,
            "p99_ms": round(self.p99_ms(), 1),
        }


def run_load(
    base_url: str,
    request: Callable[[httpx.Client, int], httpx.Response],
    *,
    concurrency: int = 8,
    duration_s: float = 5.0,
    stop: threading.Event | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Closed-loop load from `concurrency` threads; `request(client, i)` sends one request."""
    result = LoadResult()
    lock = threading.Lock()
    stop = stop or threading.Event()
    deadline = time.monotonic() + duration_s

    def worker(index: int) -> None:
        i = 0
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    response = request(client, index * 1_000_000 + i)
                    outcome = Outcome(started, time.monotonic() - started, response.status_code)
                except httpx.HTTPError as exc:
                    outcome = Outcome(started, time.monotonic() - started, None, type(exc).__name__)
                with lock:
                    result.outcomes.append(outcome)
                i += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + timeout_s + 5)
    return result
