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

Run: `python bench/bench_edge_cpu.py [--requests 2000] [--repeat 9] [--row open|"keys + limit"]`.
One row per process gives the old tree a fair figure: `prometheus-fastapi-instrumentator`
registers its metrics once per process, and every later app's instrumentator recorded nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

for _name in list(os.environ):
    if _name.startswith("CARBON_OPTIMIZER_"):
        del os.environ[_name]

from carbon_optimizer.app import create_app  # noqa: E402
from carbon_optimizer.settings import Settings  # noqa: E402

KEY = "bench-key-0123456789abcdefghijkl"
BODY = b'{"a": 1, "b": 2}'


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
        LifespanManager(bare_app, startup_timeout=120) as bare,
        LifespanManager(edge_app, startup_timeout=120) as edged,
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


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--row", choices=["open", "keys + limit"], action="append")
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


if __name__ == "__main__":
    asyncio.run(main())
