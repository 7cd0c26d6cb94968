"""Where one fresh /v1/optimize answer's CPU goes, stage by stage, next to the framework floor.

Why beside `bench_fresh_cpu.py`: that one gives the totals; this one says which part of the path
costs what, so the next change is aimed at the largest stage, not at a guess. It runs the real
ASGI app in process (httpx's ASGITransport, every middleware) while SIGPROF samples the stack
per tick of CPU time, gives each sample to the outermost stage call on the stack (so stages never
overlap) and scales the shares onto the CPU per request of an unsampled run of the same bodies.
No deterministic profiler: cProfile inflates every Python call several times and would skew the
shares towards Python-heavy stages. A signal is handled between bytecodes, so a long C call is
counted at its caller, where it belongs. Read the shares as "where to look", and confirm a
change with `bench_fresh_cpu.py`.

Rows: the bench's 20 locations × 24 h × step 60 body (`--large`: 150 locations × 7 days ×
step 15), every body unique, starts moving 1 s per request (the memos' steady state; `--step-s
3600` puts every request in a new hour: what the first answers of each hour cost).

Run: `python bench/bench_fresh_stages.py [--requests 1500] [--large] [--step-s 1]`. SIGPROF fires at most once
per kernel tick of CPU (~4 ms here), so 1,500 requests give about 1,000 samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# First: importing it sets the embedded default (no CARBON_OPTIMIZER_* settings, no rate limit).
from bench.bench_fresh_cpu import JSON, bodies  # noqa: I001
from bench import minimal_app
from bench.bench_http import LARGE_TEMPLATE
from carbon_optimizer.app import create_app

VALIDATION = "request validation (FastAPI + pydantic)"

# Stage → its calls (file suffix, function name); a sample goes to the outermost one on its stack.
STAGES: dict[str, list[tuple[str, str]]] = {
    VALIDATION: [
        ("fastapi/dependencies/utils.py", "solve_dependencies"),
        ("api/json_route.py", "_validated"),  # the optimize route's fast path (pydantic-core)
    ],
    "to_query (API → domain)": [("api/convert.py", "to_query")],
    "location resolution": [("service.py", "_resolve_all")],
    "prices, instance, power (_place)": [("service.py", "_place")],
    "carbon series lookups": [("service.py", "_zone_series")],
    "intensity grid": [("service.py", "_grid")],
    "engine (rank_candidates)": [("domain/scoring.py", "rank_candidates")],
    "options (dataclasses)": [("service.py", "_option")],
    "uncertainty step": [("uncertainty_step.py", "apply")],
    "data quality": [
        ("domain/data_quality.py", "data_quality_warnings"),
        ("domain/data_quality.py", "summary"),
    ],
    "baseline": [("service.py", "_baseline")],
    "presentation (plan_json)": [("api/present.py", "plan_json")],
    "savings ledger hook": [("api/routes/ledger.py", "attach_placement")],
    "result cache": [("api/result_cache.py", name) for name in ("get", "put", "key", "lookup", "store")],
}
ROUTE = ("api/routes/optimize.py", "_optimize")
OTHER_SERVICE = "service, outside the stages above"
OTHER_ROUTE = "route, outside the stages above"
EDGE = "edge middleware + framework (outside the route)"
CLIENT = "the in-process client, event loop (floor too)"
# Innermost first: in the service is "service"; in the app but not the route is "edge".
CONTAINERS = {
    OTHER_SERVICE: ("service.py", "optimize"),
    OTHER_ROUTE: ROUTE,
    EDGE: ("fastapi/applications.py", "__call__"),
}


def large_bodies(count: int) -> list[dict[str, Any]]:
    """The large end of the contract, unique per request: 150 locations × 7 days × step 15."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    template: dict[str, Any] = dict(LARGE_TEMPLATE)
    out = []
    for i in range(count):
        start = base + timedelta(seconds=i)
        out.append(
            {
                **template,
                "workload": {**template["workload"], "duration_minutes": 60 + (i * 7) % 600},
                "window": {
                    "earliest_start": start.isoformat(),
                    "deadline": (start + timedelta(days=7)).isoformat(),
                },
            }
        )
    return out


def _stage_of(stack: list[tuple[str, str]]) -> str:
    """The outermost stage call on a stack (outermost first), else the container it is in."""
    inside = {OTHER_SERVICE: False, OTHER_ROUTE: False, EDGE: False}
    for path, name in stack:
        for stage, calls in STAGES.items():
            if any(name == fn and path.endswith(suffix) for suffix, fn in calls):
                return stage
        for container, (suffix, fn) in CONTAINERS.items():
            inside[container] = inside[container] or (name == fn and path.endswith(suffix))
    return next((container for container, yes in inside.items() if yes), CLIENT)


class Sampler:
    """CPU-time stack samples of the serving (main) thread: SIGPROF every `interval_s` of CPU.

    The handler runs in the main thread between bytecodes and gets the frame that was running,
    so samples are uniform in CPU time (a C call is counted at its caller, where it belongs).
    """

    def __init__(self, interval_s: float = 0.0005) -> None:
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        stack: list[tuple[str, str]] = []
        while frame is not None:
            stack.append((frame.f_code.co_filename, frame.f_code.co_name))
            frame = frame.f_back
        stack.reverse()
        self.counts[_stage_of(stack)] += 1

    def __enter__(self) -> Sampler:
        self._previous = signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)
        return self

    def __exit__(self, *_: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._previous)


async def measure(app: Any, payloads: list[str], sample: bool) -> tuple[float, Counter[str]]:
    """CPU ms per request over `payloads` (after 30 warm-up requests), and stage samples if asked."""
    async with (
        LifespanManager(app, startup_timeout=120) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://bench") as client,
    ):

        async def post(body: str) -> None:
            response = await client.post("/v1/optimize", content=body, headers=JSON)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        for body in payloads[:30]:
            await post(body)
        t0 = time.process_time()
        if not sample:
            for body in payloads[30:]:
                await post(body)
            return (time.process_time() - t0) / (len(payloads) - 30) * 1000, Counter()
        with Sampler() as sampler:
            for body in payloads[30:]:
                await post(body)
        return (time.process_time() - t0) / (len(payloads) - 30) * 1000, sampler.counts


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--large", action="store_true", help="150 locations × 7 days × step 15")
    parser.add_argument(
        "--step-s",
        type=int,
        default=1,
        help="seconds the earliest start moves per request (3600: each in a new hour, the memos' miss path)",
    )
    args = parser.parse_args()
    count = args.requests + 30
    made = large_bodies(count) if args.large else bodies(count, args.step_s)
    payloads = [json.dumps(b) for b in made]
    floor_ms, _ = await measure(minimal_app.create_app(), payloads, sample=False)
    ours_ms, _ = await measure(create_app(), payloads, sample=False)
    _, counts = await measure(create_app(), payloads, sample=True)
    samples = sum(counts.values())
    shape = "150 locations x 7 days x step 15" if args.large else "20 locations x 24 h x step 60"
    print(f"{shape}, every body unique; CPU per request: floor {floor_ms:.3f} ms, ours {ours_ms:.3f} ms")
    print(
        f"(floor / ours = {floor_ms / ours_ms:.2f}; in process, client included in both; {samples} samples)"
    )
    print(f"{'stage':>44} | {'ms':>6} | share")
    print("-" * 62)
    for stage in [*STAGES, OTHER_SERVICE, OTHER_ROUTE, EDGE, CLIENT]:
        share = counts[stage] / samples if samples else 0.0
        print(f"{stage:>44} | {share * ours_ms:6.3f} | {share:5.1%}")


if __name__ == "__main__":
    asyncio.run(main())
