"""Benchmark the live carbon data path against a local stub of Electricity Maps.

Three scenarios, each printed as a table row:
  1. cold fetch of 20 zones, stub answering after 200 ms: p50/p99 of the fetch-all-zones step
     (target p50 ≤ 350 ms: the zone fetches run concurrently, not one after another);
  2. 3 processes sharing one Redis, 100 concurrent cold requests: upstream calls per zone (target 1);
  3. upstream down (stub never answers): latency while the breaker is closed (≤ deadline + 100 ms)
     and once it is open (≤ 20 ms), with zero failures.

In-process mode (default) drives `build_carbon_stack` directly and starts its own stub and
redis-server. Server mode (`--base-url`, repeatable) sends `POST /v1/optimize` to running servers
instead; start them pointing at this script's stub, e.g.

  CARBON_OPTIMIZER_ELECTRICITYMAPS__API_KEY=x \
  CARBON_OPTIMIZER_ELECTRICITYMAPS__BASE_URL=http://127.0.0.1:18080/v3 \
  CARBON_OPTIMIZER_CACHE__FORECAST_TTL_S=1 CARBON_OPTIMIZER_REDIS__URL=redis://127.0.0.1:6379/0 \
  carbon-optimizer serve --port 8000
  python bench/bench_upstream.py --base-url http://127.0.0.1:8000 --stub-port 18080 --scenario 1

(with `FORECAST_TTL_S=1` each server-mode iteration waits for the entries to expire, so it is cold).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carbon_optimizer.providers.carbon.base import BundledSeries
from carbon_optimizer.providers.carbon.stack import CarbonStack, build_carbon_stack
from tests.integration.conftest import run_stack_workers
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubProcess, live_settings

ZONES = [
    "DE", "FR", "ES", "GB", "NO", "AU-NSW", "AU-VIC", "BR-CS", "CA-ON", "CL-SEN",
    "IN-WE", "JP-TK", "KR", "SG", "US-CAL-CISO", "US-MIDA-PJM", "US-NY-NYIS", "US-TEX-ERCO", "ZA", "BE",
]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    """q-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index] * 1000


def offline_provider() -> BundledSeries:
    """The bundled offline provider when present (warmed), else a flat stand-in."""
    try:
        from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
    except ImportError:
        return FlatOffline()
    provider = OfflineCarbonProvider()
    provider.preload()
    return provider


def optimize_body(zones: list[str]) -> dict[str, Any]:
    """A minimal /v1/optimize request over grid zones."""
    return {
        "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
        "locations": [{"zone": zone} for zone in zones],
        "objective": {"mode": "carbon"},
    }


async def timed(call: Awaitable[object]) -> tuple[float, bool]:
    """(seconds, ok) of one awaited call (the coroutine starts running only here)."""
    started = time.perf_counter()
    try:
        result = await call
    except Exception:
        return time.perf_counter() - started, False
    ok = not isinstance(result, httpx.Response) or result.status_code == 200
    return time.perf_counter() - started, ok


async def fetch_all(stack: CarbonStack, zones: list[str]) -> None:
    """The fetch-all-zones step the service performs for one optimisation."""
    now = datetime.now(UTC)
    await asyncio.gather(*(stack.provider.series(z, now, now + timedelta(hours=24)) for z in zones))


async def post_optimize(
    http: httpx.AsyncClient, args: argparse.Namespace, base_url: str, zones: list[str]
) -> httpx.Response:
    """One POST /v1/optimize to a running server (server mode)."""
    return await http.post(f"{base_url}/v1/optimize", json=optimize_body(zones), headers=args.headers)


# ----- scenario 1 -----


async def scenario_cold(args: argparse.Namespace, stub: StubProcess, redis_url: str | None) -> dict[str, Any]:
    stub.control(mode="ok", delay_s=0.2)
    samples: list[float] = []
    failures = 0
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as http:
        offline = offline_provider()
        for _ in range(args.iterations):
            if args.base_url:
                await asyncio.sleep(args.server_ttl_s)  # let the server's entries expire: cold again
                seconds, ok = await timed(post_optimize(http, args, args.base_url[0], ZONES))
            else:
                settings = live_settings(stub.base_url, redis_url)
                settings.redis.key_prefix = f"bench:{uuid.uuid4().hex[:8]}"  # a cold cache each time
                async with carbon_stack(settings, offline, http=http) as stack:
                    seconds, ok = await timed(fetch_all(stack, ZONES))
            samples.append(seconds)
            failures += not ok
    return {
        "scenario": f"1 cold fetch, {len(ZONES)} zones, stub 200 ms",
        "n": len(samples),
        "p50_ms": pct(samples, 50),
        "p99_ms": pct(samples, 99),
        "result": f"failures={failures}",
    }


# ----- scenario 2 -----


async def scenario_shared(args: argparse.Namespace, stub: StubProcess, redis_url: str) -> dict[str, Any]:
    stub.control(mode="ok", delay_s=0.2, reset=True)
    latencies: list[float] = []
    failures = 0
    if args.base_url:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as http:
            await asyncio.sleep(args.server_ttl_s)
            results = await asyncio.gather(
                *(
                    timed(
                        post_optimize(
                            http, args, args.base_url[i % len(args.base_url)], [ZONES[i % len(ZONES)]]
                        )
                    )
                    for i in range(100)
                )
            )
        latencies = [s for s, _ in results]
        failures = sum(not ok for _, ok in results)
    else:
        prefix = f"bench:{uuid.uuid4().hex[:8]}"
        start_at = time.time() + 3.0
        configs = [
            {
                "base_url": stub.base_url,
                "redis_url": redis_url,
                "redis_key_prefix": prefix,
                "zones": ZONES[offset:] + ZONES[:offset],
                "requests": n,
                "start_at": start_at,
            }
            for offset, n in ((0, 34), (7, 33), (14, 33))
        ]
        reports = await asyncio.to_thread(run_stack_workers, configs)
        latencies = [s for r in reports for s in r["latencies_s"]]
        failures = sum(len(r["errors"]) for r in reports)
    per_zone = [stub.count("forecast", zone) for zone in ZONES]
    return {
        "scenario": "2 three processes, one Redis, 100 cold requests",
        "n": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "result": f"upstream forecast calls/zone min={min(per_zone)} max={max(per_zone)} "
        f"total={sum(per_zone)} failures={failures}",
    }


# ----- scenario 3 -----


async def scenario_down(args: argparse.Namespace, stub: StubProcess) -> list[dict[str, Any]]:
    stub.control(mode="hang")
    threshold = 5
    closed: list[float] = []
    opened: list[float] = []
    failures = 0
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as http:
        stack: CarbonStack | None = None
        if not args.base_url:
            settings = live_settings(stub.base_url, None, breaker_failure_threshold=threshold)
            settings.electricitymaps.request_deadline_s = args.deadline_s
            stack = await build_carbon_stack(settings, http=http, offline=offline_provider())
        for i in range(threshold + args.iterations):
            zones = [ZONES[i % len(ZONES)]] if i < threshold else ZONES
            step = fetch_all(stack, zones) if stack else post_optimize(http, args, args.base_url[0], zones)
            seconds, ok = await timed(step)
            (closed if i < threshold else opened).append(seconds)
            failures += not ok
        if stack is not None:
            await stack.aclose()
    stub.control(mode="ok")
    return [
        {
            "scenario": f"3a upstream down, breaker closed (deadline {args.deadline_s:g} s)",
            "n": len(closed),
            "p50_ms": pct(closed, 50),
            "p99_ms": pct(closed, 99),
            "result": f"target <= {args.deadline_s * 1000 + 100:.0f} ms; failures={failures}",
        },
        {
            "scenario": f"3b upstream down, breaker open ({len(ZONES)} zones)",
            "n": len(opened),
            "p50_ms": pct(opened, 50),
            "p99_ms": pct(opened, 99),
            "result": "target <= 20 ms",
        },
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    """Fixed-width table on stdout."""
    print(f"{'scenario':<52} {'n':>4} {'p50 ms':>9} {'p99 ms':>9}  result")
    print("-" * 120)
    for row in rows:
        figures = f"{row['n']:>4} {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f}"
        print(f"{row['scenario']:<52} {figures}  {row['result']}")


async def main(args: argparse.Namespace) -> None:
    stub = StubProcess(args.stub_port)
    redis_server: RedisServer | None = None
    redis_url = args.redis_url
    if redis_url is None and not args.base_url and {1, 2} & set(args.scenario):
        redis_server = RedisServer().start()
        redis_url = redis_server.url
    print(f"stub upstream: {stub.base_url}   redis: {'external' if args.redis_url else 'own redis-server'}")
    rows: list[dict[str, Any]] = []
    try:
        if 1 in args.scenario:
            rows.append(await scenario_cold(args, stub, redis_url))
        if 2 in args.scenario:
            assert redis_url is not None or args.base_url
            rows.append(await scenario_shared(args, stub, redis_url or ""))
        if 3 in args.scenario:
            rows.extend(await scenario_down(args, stub))
    finally:
        stub.stop()
        if redis_server is not None:
            redis_server.kill()
    print_table(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", type=int, action="append", choices=[1, 2, 3])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--deadline-s", type=float, default=1.0, help="upstream deadline (in-process mode)")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting one (keys are prefixed per run)"
    )
    parser.add_argument("--base-url", action="append", help="server(s) to drive through POST /v1/optimize")
    parser.add_argument("--api-key", help="client API key for server mode")
    parser.add_argument("--stub-port", type=int, default=0, help="fixed stub port (server mode)")
    parser.add_argument("--server-ttl-s", type=float, default=1.1, help="server-mode wait for cache expiry")
    args = parser.parse_args(argv)
    args.scenario = args.scenario or [1, 2, 3]
    args.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
