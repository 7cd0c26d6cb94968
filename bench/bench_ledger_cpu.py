"""Recording overhead as CPU time per /v1/optimize request, in-process: robust to a loaded machine.

Run: `python bench/bench_ledger_cpu.py [--database-url postgresql+asyncpg://postgres@127.0.0.1/db]`.
One app in this process (ASGI transport, reconciler off; the embedded SQLite ledger in a temporary
directory unless `--database-url` names a database, which must exist — the script creates and
drops a scratch database when the URL's database is `auto`); sequential requests with
`"record": false` (the floor, measured in the same run) and `"record": true`, alternating,
`--rounds` rounds after a warm-up. Three ways: `Cache-Control: no-cache` (the engine runs every
time), the result cache (the cheapest optimize path) and `unique` (every body different, its
earliest start moving by seconds: nothing the ledger remembers repeats). Medians of the rounds:

- process CPU per request (`time.process_time()`, every thread: the writer's commits, the
  SQLite writer thread, the driver's work are all included);
- request-path CPU of the ledger hook itself: thread CPU time spent inside `attach_placement`
  (what a recorded request pays before its answer can be sent);
- rows written, as a check that every recorded request reached the database;
- the writer alone, without requests around it: CPU per row to build and commit realistic rows
  in batches of 1, 10 and 100, through the writer's batch path and through the generic
  SQLAlchemy path (`--writer-only` runs just this part). This isolates the ledger's share that
  the per-request differences above cannot resolve on a shared machine.

Why not only wrk (bench/bench_ledger.py): on a shared 2-core machine the req/s of two 3 s runs
differed by up to ±50 % whatever the flag; CPU time per request is not inflated by other
processes' work the way wall-clock req/s is (it still varies between runs; run it twice).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from bench.bench_ledger import OPTIMIZE
from carbon_optimizer.api.routes import ledger as ledger_routes
from carbon_optimizer.api.routes import optimize as optimize_route
from carbon_optimizer.app import create_app
from carbon_optimizer.settings import DatabaseSettings, LedgerSettings, Settings

_HOOK_CPU: list[float] = [0.0]


def _timed_hook() -> None:
    """Wrap the optimize route's ledger hook to add up the thread CPU spent inside it."""
    original = ledger_routes.attach_placement

    async def timed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started = time.thread_time()
        try:
            return await original(*args, **kwargs)
        finally:
            _HOOK_CPU[0] += time.thread_time() - started

    optimize_route.attach_placement = timed  # type: ignore[attr-defined]


@asynccontextmanager
async def scratch_database(url: str | None) -> AsyncIterator[DatabaseSettings]:
    """Settings for the ledger database: SQLite in a temp dir, the URL, or a scratch PostgreSQL db."""
    if url is None:
        yield DatabaseSettings(data_dir=tempfile.mkdtemp(prefix="co-bench-ledger-cpu-"))
        return
    if not url.endswith("/auto"):
        yield DatabaseSettings(url=SecretStr(url))
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"co_ledger_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database="postgres"
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield DatabaseSettings(url=SecretStr(url.rsplit("/", 1)[0] + "/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def bench_client(
    url: str | None, write_timeout_s: float | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, LifespanManager]]:
    """The app on a scratch ledger database (reconciler off), behind an in-process client."""
    async with scratch_database(url) as database:
        if write_timeout_s is not None:
            database = database.model_copy(update={"write_timeout_s": write_timeout_s})
        settings = Settings(
            _env_file=None,
            rate_limit_enabled=False,
            database=database,
            ledger=LedgerSettings(reconcile_enabled=False),
        )
        async with LifespanManager(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                yield client, manager


async def measure(rounds: int, url: str | None, write_timeout_s: float) -> None:
    """Print CPU ms per request for record false/true, with and without the result cache."""
    _timed_hook()
    async with bench_client(url, write_timeout_s) as (client, manager):
        recorded_requests = 0
        base = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        for cache, count in (("no-cache", 60), ("cached", 400), ("unique", 60)):
            headers = {"cache-control": "no-cache"} if cache == "no-cache" else {}
            per_request: dict[bool, list[float]] = {False: [], True: []}
            hook: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(rounds + 1):
                for flag in (False, True):
                    body = {**OPTIMIZE, "record": flag}
                    await asyncio.sleep(0.2)  # the writer commits what it got before
                    _HOOK_CPU[0] = 0.0
                    started = time.process_time()
                    for i in range(count):
                        if cache == "unique":  # every body different (both flags walk the same starts)
                            start = base + timedelta(seconds=round_ * count + i)
                            body["window"] = {"earliest_start": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
                        response = await client.post("/v1/optimize", json=body, headers=headers)
                        assert response.status_code == 200, response.text
                    await asyncio.sleep(0.2)  # the writer commits what it got: counted too
                    if flag:
                        recorded_requests += count
                    if round_:  # round 0 warms up
                        per_request[flag].append((time.process_time() - started) / count * 1000)
                        hook[flag].append(_HOOK_CPU[0] / count * 1000)
            floor = statistics.median(per_request[False])
            recorded = statistics.median(per_request[True])
            extra = recorded - floor
            print(
                f"{cache}: process CPU ms/request record=false {floor:.3f}, record=true "
                f"{recorded:.3f}, +{extra:.3f} ms ({100 * extra / floor:.1f} %);"
                f" in the ledger hook: {statistics.median(hook[False]) * 1000:.1f} µs (false), "
                f"{statistics.median(hook[True]) * 1000:.1f} µs (true)",
                flush=True,
            )
        await asyncio.sleep(0.3)
        ledger = manager._state["co"].ledger
        written = await ledger.repository.count()
        print(f"placements written {written} of {recorded_requests} recorded requests", flush=True)


async def writer_cpu(url: str | None) -> None:
    """CPU µs per row to build and commit rows in batches, batch path vs generic path."""
    from carbon_optimizer.api.schemas import OptimizeRequest
    from carbon_optimizer.ledger.repository import LedgerRepository

    async with bench_client(url) as (client, manager):
        answer = (await client.post("/v1/optimize", json={**OPTIMIZE, "record": False})).json()
        ledger = manager._state["co"].ledger
        await asyncio.sleep(0.5)  # migrated
        body = OptimizeRequest.model_validate({**OPTIMIZE, "record": True})
        now = ledger.clock()

        # Ids as the ledger makes them (their order decides where the primary-key index grows).
        new_id = getattr(ledger, "_new_id", None) or (lambda: str(uuid.uuid4()))

        def rows(n: int) -> list[Any]:
            return [ledger._optimize_row(new_id(), body, answer, "bench", now, "rid", None) for _ in range(n)]

        started = time.process_time()
        rows(2000)
        build = (time.process_time() - started) / 2000 * 1e6
        print(f"writer: build a row {build:.1f} µs", flush=True)
        for fast in (True, False):
            repository = LedgerRepository(ledger.repository.engine, fast_insert=fast)
            figures = []
            for size in (1, 10, 100):
                batches = max(20, 2000 // size)
                prepared = [rows(size) for _ in range(batches)]
                await repository.insert_placements(prepared[0])  # connect, prepare
                started = time.process_time()
                for batch in prepared[1:]:
                    await repository.insert_placements(batch)
                per_row = (time.process_time() - started) / ((batches - 1) * size) * 1e6
                figures.append(f"batch {size}: {per_row:.1f}")
            await repository.close()
            path = "batch path" if fast else "generic path"
            print(f"writer: commit, {path}, CPU µs/row: {', '.join(figures)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--database-url",
        default=None,
        help="ledger database (default: SQLite in a temp dir); a PostgreSQL URL ending in /auto "
        "creates and drops a scratch database",
    )
    parser.add_argument("--write-timeout-s", type=float, default=0.0, help="DATABASE__WRITE_TIMEOUT_S")
    parser.add_argument("--writer-only", action="store_true", help="only the writer-alone figures")
    args = parser.parse_args()
    if not args.writer_only:
        asyncio.run(measure(args.rounds, args.database_url, args.write_timeout_s))
    asyncio.run(writer_cpu(args.database_url))


if __name__ == "__main__":
    main()
