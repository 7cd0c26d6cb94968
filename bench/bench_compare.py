"""Benchmark of POST /v1/compare/deployment: one comparison over 10 regions × every option.

Run: `python bench/bench_compare.py [--runs N]`. Prints figures; it is a script, not a test.

What is timed (wall clock, `time.perf_counter`, median and p90 over N runs after warm-up):
- `service`: `DeploymentComparer.compare` in-process — price lookups (bundled tables, already
  loaded), 10 regions × (serverless options + a VM fleet) at the stated volume, the break-even
  search (3 vectorised scans) and a 41-point cost-vs-volume curve. This is the server time.
- `http`: the same request through the full ASGI app (validation, middleware, orjson) on an
  in-process transport, no sockets.
- `floor`: GET /healthz through the same transport: the fixed per-request cost of the stack, so
  `http - floor` is what the comparison adds on top of any request.
Target: `service` ≤ 20 ms median (4 AWS + 3 Azure + 3 GCP regions: 7 + 6 + 3 = 16 serverless
options and 10 VM fleets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
from asgi_lifespan import LifespanManager

from carbon_optimizer.api.routes.compare import to_query
from carbon_optimizer.api.schemas_compare import CompareDeploymentRequest
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.compare_deployment import DeploymentComparer
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.settings import Settings

REGIONS = [
    ("aws", "us-east-1"),
    ("aws", "eu-west-1"),
    ("aws", "ap-southeast-2"),
    ("aws", "eu-north-1"),
    ("azure", "eastus"),
    ("azure", "westeurope"),
    ("azure", "southeastasia"),
    ("gcp", "us-central1"),
    ("gcp", "europe-west1"),
    ("gcp", "asia-southeast1"),
]
BODY = {
    "invocations_per_month": 3_000_000,
    "duration_ms": 120,
    "memory_mb": 1536,
    "response_kb": 20,
    "locations": [{"provider": p, "region": r} for p, r in REGIONS],
}


async def measure(fn: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float]:
    for _ in range(3):
        await fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


async def main(runs: int) -> None:
    bundled = BundledPriceProvider()
    comparer = DeploymentComparer(
        catalog=load_region_catalog(),
        prices=bundled,
        fallback_prices=bundled,
        clock=lambda: datetime.now(UTC),
    )
    query = to_query(CompareDeploymentRequest.model_validate(BODY), "bench")
    answer = await comparer.compare(query)
    feasible = sum(1 for o in answer["options"] if o["feasible"])
    service = await measure(lambda: comparer.compare(query), runs)

    app = create_app(Settings(_env_file=None), AppOverrides())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def post() -> object:
                r = await client.post("/v1/compare/deployment", json=BODY)
                assert r.status_code == 200, r.text
                return r

            http = await measure(post, runs)
            floor = await measure(lambda: client.get("/healthz"), runs)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; runs={runs}")
    print(f"comparison: {len(REGIONS)} regions, {len(answer['options'])} options ({feasible} feasible)")
    print(f"break-even: {answer['break_even']['invocations_per_month']:,.0f} invocations/month")
    print(f"{'what':<10} {'median ms':>10} {'p90 ms':>8}")
    for name, (median, p90) in (("service", service), ("http", http), ("floor", floor)):
        print(f"{name:<10} {median:>10.2f} {p90:>8.2f}")
    verdict = "met" if service[0] <= 20 else "MISSED"
    print(f"http - floor = {http[0] - floor[0]:.2f} ms; target service ≤ 20 ms: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
