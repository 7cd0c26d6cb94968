"""Recording overhead as CPU time per /v1/optimize request, in-process: robust to a loaded machine.

Run: `python bench/bench_ledger_cpu.py`. One app in this process (ASGI transport, embedded SQLite
ledger in a temporary directory, reconciler off); sequential requests with `"record": false` (the
floor, measured in the same run) and `"record": true`, alternating, 5 rounds after a warm-up.
`time.process_time()` counts every thread of the process, so the background writer's commits
(aiosqlite runs in a thread) are included. Twice: `Cache-Control: no-cache` (the engine runs
every time) and the result cache (the cheapest optimize path). Medians of the rounds.

Why not only wrk (bench/bench_ledger.py): on a shared 2-core machine the req/s of two 3 s runs
differed by up to ±50 % whatever the flag; CPU time per request is not inflated by other
processes' work the way wall-clock req/s is (it still varies between runs; run it twice).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from asgi_lifespan import LifespanManager

from bench.bench_ledger import OPTIMIZE
from carbon_optimizer.app import create_app
from carbon_optimizer.settings import DatabaseSettings, LedgerSettings, Settings


async def measure(rounds: int = 5) -> None:
    """Print CPU ms per request for record false/true, with and without the result cache."""
    settings = Settings(
        _env_file=None,
        rate_limit_enabled=False,
        database=DatabaseSettings(data_dir=tempfile.mkdtemp(prefix="co-bench-ledger-cpu-")),
        ledger=LedgerSettings(reconcile_enabled=False),
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for cache, count in (("no-cache", 60), ("cached", 400)):
                headers = {"cache-control": "no-cache"} if cache == "no-cache" else {}
                per_request: dict[bool, list[float]] = {False: [], True: []}
                for round_ in range(rounds + 1):
                    for flag in (False, True):
                        body = {**OPTIMIZE, "record": flag}
                        await asyncio.sleep(0.05)
                        started = time.process_time()
                        for _ in range(count):
                            response = await client.post("/v1/optimize", json=body, headers=headers)
                            assert response.status_code == 200, response.text
                        await asyncio.sleep(0.05)  # the writer commits what it got: counted too
                        if round_:  # round 0 warms up
                            per_request[flag].append((time.process_time() - started) / count * 1000)
                floor = statistics.median(per_request[False])
                recorded = statistics.median(per_request[True])
                print(
                    f"{cache}: CPU ms/request record=false {floor:.3f}, record=true {recorded:.3f}, "
                    f"+{recorded - floor:.3f} ms ({100 * (recorded - floor) / floor:.1f} %)",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(measure())
