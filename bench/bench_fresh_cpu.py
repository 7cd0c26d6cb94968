"""CPU cost of one fresh /v1/optimize answer, in process: the steady figure on a noisy machine.

Why beside `bench_http.py`: wrk on a shared 2-core VM measures whatever CPU is left (the other
core's load, wrk itself), so its ratios swing by 2x between runs. Process CPU time per request
through the real ASGI app (httpx's ASGITransport, every middleware, validation, the service,
serialisation) is steadier, and the minimal-FastAPI floor is measured the same way in the same
run. Rows (20 locations × 24 h × step 60, every body unique, as `bench_http.py`'s `fresh`):

- `asgi fresh, same hour`: starts move 1 s per request (a scheduler asking every few seconds);
- `asgi fresh, +16 s per request`: `bench_http.py`'s pattern (a new hour every 225 requests);
- `asgi fresh, new hour each`: every request in another hour (the memos' miss path);
- `service only`: `OptimizerService.optimize` + presentation, no HTTP (what the edge adds is the
  difference);
- `floor`: the minimal FastAPI app parsing the same bodies (`bench/minimal_app.py`).

Run: `python bench/bench_fresh_cpu.py [--requests 600] [--repeat 5]`; medians of `--repeat`
batches, ms of process CPU per request (client included for the ASGI rows, as for the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _name in list(os.environ):  # the embedded default, as bench_http.py measures it
    if _name.startswith("CARBON_OPTIMIZER_"):
        del os.environ[_name]
os.environ["CARBON_OPTIMIZER_RATE_LIMIT_ENABLED"] = "false"

from bench import minimal_app  # noqa: E402
from bench.bench_http import BODY  # noqa: E402
from carbon_optimizer.api.convert import to_query  # noqa: E402
from carbon_optimizer.api.present import plan_json  # noqa: E402
from carbon_optimizer.api.schemas import OptimizeRequest  # noqa: E402
from carbon_optimizer.app import create_app, runtime  # noqa: E402
from carbon_optimizer.settings import Settings  # noqa: E402

JSON = {"content-type": "application/json"}


def bodies(count: int, step_s: int) -> list[dict[str, Any]]:
    """Unique bodies: job length 60–659 min, earliest start moving `step_s` per request."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return [
        {
            **BODY,
            "workload": {"duration_minutes": 60 + (i * 7) % 600, "vcpus": 8, "memory_gib": 32},
            "window": {"earliest_start": (base + timedelta(seconds=i * step_s)).isoformat()},
        }
        for i in range(count)
    ]


async def timed(batches: list[list[Any]], one: Callable[[Any], Any]) -> float:
    """Median over batches of process-CPU ms per call."""
    per: list[float] = []
    for batch in batches:
        t0 = time.process_time()
        for item in batch:
            await one(item)
        per.append((time.process_time() - t0) / len(batch) * 1000)
    return statistics.median(per)


def split(items: list[Any], repeat: int) -> list[list[Any]]:
    size = len(items) // repeat
    return [items[i * size : (i + 1) * size] for i in range(repeat)]


async def asgi_row(app: Any, step_s: int, requests: int, repeat: int, warm: int = 50) -> float:
    async with (
        LifespanManager(app, startup_timeout=120) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://bench") as client,
    ):
        payloads = [json.dumps(b) for b in bodies(warm + requests, step_s)]

        async def post(body: str) -> None:
            response = await client.post("/v1/optimize", content=body, headers=JSON)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        for body in payloads[:warm]:
            await post(body)
        return await timed(split(payloads[warm:], repeat), post)


async def service_row(requests: int, repeat: int, warm: int = 50) -> float:
    async with runtime(Settings(_env_file=None)) as state:
        queries = [OptimizeRequest.model_validate(b) for b in bodies(warm + requests, 1)]

        async def answer(body: OptimizeRequest) -> None:
            plan_json(await state.service.optimize(to_query(body, "bench")))

        for body in queries[:warm]:
            await answer(body)
        return await timed(split(queries[warm:], repeat), answer)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, r = args.requests, args.repeat
    floor = await asgi_row(minimal_app.create_app(), 1, n, r)
    rows = [
        ("asgi fresh, same hour", await asgi_row(create_app(), 1, n, r)),
        ("asgi fresh, +16 s per request", await asgi_row(create_app(), 16, n, r)),
        ("asgi fresh, new hour each", await asgi_row(create_app(), 3600, max(n // 6, r * 10), r, warm=5)),
        ("service only (no HTTP)", await service_row(n, r)),
    ]
    print("20 locations x 24 h x step 60, every body unique; ms of process CPU per request (median)")
    print(f"{'row':>32} | {'ms CPU':>7} | floor / row")
    print("-" * 58)
    print(f"{'floor (minimal FastAPI)':>32} | {floor:7.3f} | 1.00")
    for name, value in rows:
        print(f"{name:>32} | {value:7.3f} | {floor / value:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
