"""CPU cost of the request edge alone: the same app with and without its middleware, interleaved.

Why beside `bench_fresh_cpu.py`: there the edge is the small difference of two large, noisy rows
(a fresh answer costs ~2–3 ms, the edge ~0.1–0.3 ms), which other work on a shared 2-core VM
swamps. Here both apps are `create_app()` with one extra trivial route (`POST /v1/bench-echo`, a
small JSON body echoed); one keeps the edge, the twin has `user_middleware` emptied. Batches
alternate between the two in one process, and the figure is the median of the per-round
differences: process CPU per request that the edge adds (client included in both, so it cancels).

Rows: `open` (the embedded default: no keys, no limit, as bench_http.py runs) and `keys + limit`
(an API key and an in-memory rate limit, the production checks). The script only uses
`create_app`, so it measures any version of the tree (`PYTHONPATH=<tree> python <this file>`).

Row `optimize` (issue 12): what everything ABOVE the service costs on a fresh POST /v1/optimize
(edge, FastAPI, validation, the route, the result cache, the response), against the
minimal-FastAPI floor (`bench/minimal_app.py`) with the same unique bodies. The route's four
calls into the layers below (`to_query`, `service.optimize`, `plan_json`, `attach_placement`)
are replaced by constants returning a real answer, so the service's ~1 ms and its noise are
out of the figure; rounds alternate floor and ours, the figure is the median difference (the
client's cost of our larger answer and its security headers is in it).

Run: `python bench/bench_edge_cpu.py [--requests 2000] [--repeat 9] [--row open|"keys + limit"]`.
One row per process gives the old tree a fair figure: `prometheus-fastapi-instrumentator`
registers its metrics once per process, and every later app's instrumentator recorded nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: its tree wins

for _name in list(os.environ):
    if _name.startswith("CARBON_OPTIMIZER_"):
        del os.environ[_name]

from bench import minimal_app  # noqa: E402
from bench.bench_http import BODY as OPTIMIZE_BODY  # noqa: E402
from carbon_optimizer.api.routes import optimize as optimize_route  # noqa: E402
from carbon_optimizer.app import create_app  # noqa: E402
from carbon_optimizer.service import OptimizerService  # noqa: E402
from carbon_optimizer.settings import Settings  # noqa: E402

KEY = "bench-key-0123456789abcdefghijkl"
BODY = b'{"a": 1, "b": 2}'
_JSON = {"content-type": "application/json"}


def build(settings: Settings, *, edge: bool) -> Any:
    app = create_app(settings)

    @app.post("/v1/bench-echo")
    async def echo(payload: dict[str, int]) -> dict[str, int]:
        return payload

    if not edge:
        app.user_middleware[:] = []
    return app


async def row(settings: Settings, headers: dict[str, str], requests: int, repeat: int) -> tuple[float, float]:
    """(ms CPU per request without the edge, median ms the edge adds)."""
    bare_app, edge_app = build(settings, edge=False), build(settings, edge=True)
    async with (
        LifespanManager(bare_app, startup_timeout=120, shutdown_timeout=60) as bare,
        LifespanManager(edge_app, startup_timeout=120, shutdown_timeout=60) as edged,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=bare.app), base_url="http://b") as bare_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=edged.app), base_url="http://b") as edge_client,
    ):
        hdrs = {"content-type": "application/json", **headers}

        async def batch(client: httpx.AsyncClient, n: int) -> float:
            t0 = time.process_time()
            for _ in range(n):
                response = await client.post("/v1/bench-echo", content=BODY, headers=hdrs)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
            return (time.process_time() - t0) / n * 1000

        await batch(bare_client, 200)
        await batch(edge_client, 200)
        size = requests // repeat
        floors, extras = [], []
        for _ in range(repeat):
            floor = await batch(bare_client, size)
            with_edge = await batch(edge_client, size)
            floors.append(floor)
            extras.append(with_edge - floor)
        return statistics.median(floors), statistics.median(extras)


def _fresh_bodies(count: int) -> list[dict[str, Any]]:
    """bench_fresh_cpu's `fresh, same hour` bodies (not imported: it sets the limiter off at import)."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return [
        {
            **OPTIMIZE_BODY,
            "workload": {"duration_minutes": 60 + (i * 7) % 600, "vcpus": 8, "memory_gib": 32},
            "window": {"earliest_start": (base + timedelta(seconds=i)).isoformat()},
        }
        for i in range(count)
    ]


async def above_service_row(requests: int, repeat: int) -> tuple[float, float]:
    """(ms CPU per request of the floor, median ms ours adds above the service), service stubbed."""
    payloads = [json.dumps(b).encode() for b in _fresh_bodies(requests + 201)]
    ours_app = create_app(Settings(_env_file=None, rate_limit_enabled=False))  # as bench_http.py runs
    floor_app = minimal_app.create_app()
    async with (
        LifespanManager(ours_app, startup_timeout=120, shutdown_timeout=60) as ours,
        LifespanManager(floor_app, startup_timeout=120, shutdown_timeout=60) as floor,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ours.app), base_url="http://b") as ours_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=floor.app), base_url="http://b") as floor_client,
    ):
        real = await ours_client.post("/v1/optimize", content=payloads[-1], headers=_JSON)
        answer = real.json()

        async def planned(_service: Any, _query: Any) -> None:
            return None

        async def attached(
            _request: Any, _body: Any, result: dict[str, Any], _rid: str, _raw: bytes
        ) -> dict[str, Any]:
            return result

        stubs: dict[str, Any] = {
            "to_query": lambda _body, _rid: None,
            "plan_json": lambda _plan: dict(answer),
            "attach_placement": attached,
        }
        for name, stub in stubs.items():  # the route's calls into the layers below it
            setattr(optimize_route, name, stub)
        OptimizerService.optimize = planned  # type: ignore[method-assign,assignment]

        async def batch(client: httpx.AsyncClient, items: list[bytes]) -> float:
            t0 = time.process_time()
            for body in items:
                response = await client.post("/v1/optimize", content=body, headers=_JSON)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
            return (time.process_time() - t0) / len(items) * 1000

        await batch(ours_client, payloads[:100])
        await batch(floor_client, payloads[100:200])
        size = requests // repeat
        floors, extras = [], []
        for i in range(repeat):
            part = payloads[200 + i * size : 200 + (i + 1) * size]
            floor_ms = await batch(floor_client, part)
            floors.append(floor_ms)
            extras.append(await batch(ours_client, part) - floor_ms)
        return statistics.median(floors), statistics.median(extras)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--row", choices=["open", "keys + limit", "optimize"], action="append")
    args = parser.parse_args()
    rows = [
        ("open", Settings(_env_file=None, rate_limit_enabled=False), {}),
        (
            "keys + limit",
            Settings(_env_file=None, api_keys=KEY, rate_limit="10000000/minute"),
            {"x-api-key": KEY},
        ),
    ]
    print("POST /v1/bench-echo (16-byte JSON), ms of process CPU per request (medians)")
    print(f"{'row':>14} | {'no edge':>8} | {'edge adds':>9} | edge / no edge")
    print("-" * 56)
    for name, settings, headers in rows:
        if args.row and name not in args.row:
            continue
        floor, extra = await row(settings, headers, args.requests, args.repeat)
        print(f"{name:>14} | {floor:8.3f} | {extra:9.3f} | {extra / floor:.2f}")
    if not args.row or "optimize" in args.row:
        # The service stubbed (see the module doc): last, it patches the process's classes.
        print("POST /v1/optimize, fresh bodies, the service stubbed: ms of process CPU per request")
        print(f"{'row':>14} | {'floor':>8} | {'ours adds':>9} | ours adds / floor")
        floor, extra = await above_service_row(args.requests, args.repeat)
        print(f"{'optimize':>14} | {floor:8.3f} | {extra:9.3f} | {extra / floor:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
