"""Savings-ledger benchmarks: recording overhead on /v1/optimize at c=16, reports over 1 M placements.

Run: `python bench/bench_ledger.py` (needs `wrk` and, for the report part, PostgreSQL on
127.0.0.1:5432 with trust auth as `postgres`; `--skip-reports` / `--skip-http` run one half;
`--postgresql` runs the HTTP part against a scratch PostgreSQL database instead of SQLite).

1. Recording overhead: one uvicorn worker with the embedded SQLite ledger, wrk c=16 against
   POST /v1/optimize with `"record": false` (the floor, measured in the same run) and with
   `"record": true` (every request commits one placement), alternating, medians of the rounds.
   The two bodies differ in `record` only (checked: same status, same answer apart from the
   placement fields, same result-cache path). Three ways: `no-cache` (the same body with
   `Cache-Control: no-cache`: the engine runs every time), `cached` (the result cache answers:
   the cheapest optimize path, so the largest relative overhead) and `unique` (every request a
   different body, its earliest start moving by seconds: nothing the ledger remembers repeats).
   Target: ≤ 10 % fewer req/s (`overhead_pct`, from the medians of the rounds;
   `overhead_pct_paired` is the median of each round's own pair, steadier on a noisy VM, and
   `overhead_pct_paired_iqr` the quartiles of those pairs: how far one run can be trusted).
   The flag that runs first alternates from round to round. The second run of a pair inherits
   the first's warm memos (unique bodies walk the same starts) and its writer's backlog, and on
   a noisy VM the first of two runs often did better. A fixed order would bias every pair the
   same way; alternating cancels that in the paired median.
   Besides req/s, from /proc around each run: the server's CPU per
   request (whole process, and its event-loop thread alone), and from `gc.callbacks` in the
   server (`instrumented_app`) its garbage collections per 1 000 requests (young, middle, old)
   and the µs per request spent in them.
   First with the default `DATABASE__WRITE_TIMEOUT_S=0` (answer without waiting for the commit),
   then with 0.25 s (wait for it; `--skip-wait` leaves that out).
2. Reports: a fresh PostgreSQL database seeded with 1 M placements in SQL (100 clients, 40
   locations, 12 months), then GET-report queries through the repository: all clients by month,
   by location, one client by day. Medians of 5. Target: < 1 s each. The database is dropped.
   Then the same over the same number of placements in a fresh SQLite file (the embedded default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._wrk import free_port, run_wrk, write_script, write_unique_script
from bench.bench_http import cpu_s, start

OPTIMIZE = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
    "locations": [
        {"provider": "aws", "region": "us-east-1"},
        {"provider": "aws", "region": "eu-west-1"},
        {"provider": "gcp", "region": "europe-west1"},
        {"provider": "azure", "region": "westeurope"},
        {"zone": "FR", "price_usd_per_hour": 0.3},
    ],
    "objective": {"mode": "balanced"},
    "max_results": 5,
}


# The `unique` mode's body: OPTIMIZE with its earliest start moving per request (see `_wrk`).
UNIQUE_TEMPLATE = {**OPTIMIZE, "window": {"earliest_start": "__START__"}}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def instrumented_app() -> Any:
    """The service's app, counting its garbage collections and their time (the server side of this bench).

    Counts go to the file named by `CO_BENCH_GC_FILE` on SIGUSR1. The callbacks cost nothing
    measurable and run for both flags alike.
    """
    import gc
    import signal

    from carbon_optimizer.app import create_app

    counts = [0, 0, 0, 0]  # collections per generation, then µs spent in them all
    started = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        else:
            counts[info["generation"]] += 1
            counts[3] += (time.perf_counter_ns() - started[0]) // 1000

    def dump(*_: Any) -> None:
        Path(os.environ["CO_BENCH_GC_FILE"]).write_text(json.dumps(counts))

    gc.callbacks.append(count)
    signal.signal(signal.SIGUSR1, dump)
    return create_app()


def _loop_cpu_s(pid: int) -> float:
    """CPU seconds of the server's main thread (the event loop): /proc/<pid>/task/<pid>/stat."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _gc_counts(pid: int, path: Path) -> list[int]:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(100):
        if path.exists() and path.read_text():
            counts: list[int] = json.loads(path.read_text())
            return counts
        time.sleep(0.01)
    raise RuntimeError("the server did not report its GC counts")


def _measured(pid: int, url: str, seconds: int, script: Path, gc_file: Path) -> dict[str, Any]:
    """One wrk run at c=16 with the server's CPU ms per request and GC counts over it."""
    gc0, cpu0, loop0 = _gc_counts(pid, gc_file), cpu_s(pid), _loop_cpu_s(pid)
    result: dict[str, Any] = dict(run_wrk(url, 16, seconds, script))
    cpu1, loop1, gc1 = cpu_s(pid), _loop_cpu_s(pid), _gc_counts(pid, gc_file)
    requests = max(result["rps"] * seconds, 1.0)
    result["cpu_ms"] = (cpu1 - cpu0) * 1000 / requests
    result["loop_cpu_ms"] = (loop1 - loop0) * 1000 / requests
    result["gc_per_1000"] = [
        round((b - a) * 1000 / requests, 1) for a, b in zip(gc0[:3], gc1[:3], strict=True)
    ]
    result["gc_us"] = (gc1[3] - gc0[3]) / requests
    return result


def _same_answers(url: str, headers: dict[str, str]) -> dict[str, int]:
    """Check that the two flags' answers differ in the placement fields only; their sizes."""
    import httpx

    answers = {
        flag: httpx.post(url, json={**OPTIMIZE, "record": flag}, headers=headers, timeout=30)
        for flag in (False, True)
    }
    for flag in (False, True):  # twice each: the second is what the cached mode gets
        answers[flag] = httpx.post(url, json={**OPTIMIZE, "record": flag}, headers=headers, timeout=30)
    off, on = answers[False], answers[True]
    assert off.status_code == on.status_code == 200, (off.text, on.text)
    assert off.headers.get("x-result-cache") == on.headers.get("x-result-cache")
    extra = set(on.json()) - set(off.json())
    assert extra == {"placement_id", "recorded", "queued"}, extra
    return {"bytes_record_false": len(off.content), "bytes_record_true": len(on.content)}


def http_overhead(
    seconds: int,
    rounds: int,
    write_timeout_s: float | None = None,
    database_url: str | None = None,
    modes: tuple[str, ...] = ("no-cache", "cached", "unique"),
) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="co-bench-ledger-")
    port = free_port()
    env = {
        **os.environ,
        "CARBON_OPTIMIZER_DATABASE__DATA_DIR": data_dir,
        "CARBON_OPTIMIZER_RATE_LIMIT_ENABLED": "false",
        "CARBON_OPTIMIZER_LEDGER__RECONCILE_ENABLED": "false",
    }
    if database_url is not None:
        env["CARBON_OPTIMIZER_DATABASE__URL"] = database_url
    if write_timeout_s is not None:
        env["CARBON_OPTIMIZER_DATABASE__WRITE_TIMEOUT_S"] = str(write_timeout_s)
    gc_file = Path(data_dir) / "gc.json"
    env["CO_BENCH_GC_FILE"] = str(gc_file)
    proc, _ = start("bench.bench_ledger:instrumented_app", port, env)
    url = f"http://127.0.0.1:{port}/v1/optimize"
    results: dict[str, Any] = {}
    base_epoch = int(time.time()) + 3600
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                headers = {"Cache-Control": "no-cache"} if mode == "no-cache" else {}
                if mode == "unique":  # both flags walk the same sequence of starts
                    scripts = {
                        flag: write_unique_script(
                            Path(tmp) / f"{mode}-{flag}.lua",
                            json.dumps({**UNIQUE_TEMPLATE, "record": flag}),
                            base_epoch,
                        )
                        for flag in (False, True)
                    }
                    sizes: dict[str, int] = {}
                else:
                    sizes = _same_answers(url, headers)
                    scripts = {
                        flag: write_script(
                            Path(tmp) / f"{mode}-{flag}.lua",
                            json.dumps({**OPTIMIZE, "record": flag}),
                            headers,
                        )
                        for flag in (False, True)
                    }
                for flag in (False, True):  # warm both paths
                    run_wrk(url, 16, 1, scripts[flag])
                runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for round_ in range(rounds):  # which flag goes first alternates (module doc)
                    for flag in (False, True) if round_ % 2 == 0 else (True, False):
                        runs[flag].append(_measured(proc.pid, url, seconds, scripts[flag], gc_file))

                def median(flag: bool, key: str, runs: dict[bool, list[dict[str, Any]]] = runs) -> float:
                    return round(float(statistics.median(r[key] for r in runs[flag])), 3)

                floor, recorded = median(False, "rps"), median(True, "rps")
                # Each round's own pair (back to back): the machine's slow swings cancel within a
                # pair, not across the medians of all rounds.
                pairs = zip(runs[False], runs[True], strict=True)
                each = [100.0 * (a["rps"] - b["rps"]) / a["rps"] for a, b in pairs]
                paired = statistics.median(each)
                quartiles = statistics.quantiles(each, n=4) if len(each) > 1 else [paired] * 3
                results[mode] = {
                    "rps_record_false": round(floor, 1),
                    "rps_record_true": round(recorded, 1),
                    "overhead_pct": round(100.0 * (floor - recorded) / floor, 1),
                    "overhead_pct_paired": round(paired, 1),
                    "overhead_pct_paired_iqr": [round(quartiles[0], 1), round(quartiles[2], 1)],
                    "cpu_ms_per_request": [median(False, "cpu_ms"), median(True, "cpu_ms")],
                    "loop_cpu_ms_per_request": [median(False, "loop_cpu_ms"), median(True, "loop_cpu_ms")],
                    "gc_per_1000_requests": {
                        str(flag).lower(): [
                            statistics.median(r["gc_per_1000"][g] for r in runs[flag]) for g in range(3)
                        ]
                        for flag in (False, True)
                    },
                    "gc_us_per_request": [median(False, "gc_us"), median(True, "gc_us")],
                    "p50_ms": [median(False, "p50_ms"), median(True, "p50_ms")],
                    "p99_ms": [median(False, "p99_ms"), median(True, "p99_ms")],
                    "rounds_rps": [
                        [round(a["rps"]), round(b["rps"])]
                        for a, b in zip(runs[False], runs[True], strict=True)
                    ],
                    **sizes,
                    "errors": sum(
                        r.get("errors", 0) + r.get("non2xx", 0) for rs in runs.values() for r in rs
                    ),
                }
                print(f"  {mode}: {json.dumps(results[mode])}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if database_url is None:
        results["placements_written"] = _count_sqlite(Path(data_dir) / "ledger.sqlite3")
    else:
        results["placements_written"] = asyncio.run(_count_url(database_url))
    return results


async def _count_url(url: str) -> int:
    from pydantic import SecretStr

    from carbon_optimizer.ledger import db
    from carbon_optimizer.ledger.repository import LedgerRepository
    from carbon_optimizer.settings import DatabaseSettings

    engine = db.create_engine(DatabaseSettings(url=SecretStr(url)))
    try:
        return await LedgerRepository(engine).count()
    finally:
        await engine.dispose()


def _admin_sql(host: str, port: int, statement: str) -> None:
    """Run one statement on the server's `postgres` database (CREATE/DROP DATABASE)."""
    import asyncpg

    async def run() -> None:
        admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(run())


def _scratch_pg(host: str, port: int) -> tuple[str, str]:
    """Create an empty PostgreSQL database for one run; (name, URL)."""
    name = f"co_ledger_bench_{uuid.uuid4().hex[:10]}"
    _admin_sql(host, port, f'CREATE DATABASE "{name}"')
    return name, f"postgresql+asyncpg://postgres@{host}:{port}/{name}"


def _drop_pg(host: str, port: int, name: str) -> None:
    _admin_sql(host, port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count_sqlite(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM ledger_placements").fetchone()[0])


# ----- reports over 1 M rows -----


# The columns both seeds fill (the rest keep their defaults or NULL).
_SEED_INTO = """INSERT INTO ledger_placements (id, client_id, created_at, origin, workload, signal,
  location, zone, start_at, end_at, energy_kwh, intensity_g_per_kwh, emissions_g, cost_usd,
  baseline_name, baseline_location, baseline_zone, baseline_start_at, baseline_end_at,
  baseline_energy_kwh, baseline_intensity_g_per_kwh, baseline_emissions_g, baseline_cost_usd,
  quality, status, due_at, attempts, realised_energy_kwh, realised_emissions_g,
  realised_baseline_emissions_g, realised_source, reconciled_at)"""

# Generated inside PostgreSQL (INSERT … SELECT generate_series): no rows cross the wire.
SEED_SQL = (
    _SEED_INTO
    + """
SELECT gen_random_uuid()::text, 'client' || lpad((i % 100)::text, 3, '0'), t - interval '1 hour',
  'optimize', '{"duration_minutes": 120}'::json, 'location-based average, lifecycle',
  'zone/Z' || (i % 40), 'Z' || (i % 40), t, t + interval '2 hours', kwh, fc, kwh * fc, 1.0, 'bench',
  'zone/Z0', 'Z0', t, t + interval '2 hours', kwh, base, kwh * base, 0.9, '{"warnings": []}'::json,
  CASE WHEN rec THEN 'reconciled' ELSE 'recorded' END, t + interval '2 hours',
  CASE WHEN rec THEN 1 ELSE 0 END, CASE WHEN rec THEN kwh END,
  CASE WHEN rec THEN kwh * fc * (0.8 + 0.4 * r2) END, CASE WHEN rec THEN kwh * base * 1.05 END,
  CASE WHEN rec THEN 'bench' END, CASE WHEN rec THEN t + interval '3 hours' END
FROM (SELECT i, timestamp '2026-01-01' + random() * interval '365 days' AS t, 1 + random() AS kwh,
        50 + 300 * random() AS fc, 200 + 300 * random() AS base, random() < 0.8 AS rec,
        random() AS r2
      FROM generate_series(1, $1) AS i) AS s
"""
)


async def _timed_reports(engine: Any, begin: datetime) -> dict[str, Any]:
    """The report cases through the repository: medians of 5 after one warm-up each."""
    from carbon_optimizer.ledger.repository import LedgerRepository

    repo = LedgerRepository(engine)
    end = begin + timedelta(days=366)
    cases = {
        "all clients, 12 months, by month": ("month", begin, end, None),
        "all clients, 12 months, by location": ("location", begin, end, None),
        "all clients, 1 month, by day": ("day", begin, begin + timedelta(days=31), None),
        "one client, 12 months, by day": ("day", begin, end, "client007"),
        "one client, 12 months, by week": ("week", begin, end, "client007"),
    }
    timings: dict[str, Any] = {}

    async def median_ms(case: tuple[str, datetime, datetime, str | None], rollups: bool) -> float:
        await repo.aggregate(*case, rollups=rollups)  # warm the buffer cache
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            await repo.aggregate(*case, rollups=rollups)
            samples.append(time.perf_counter() - t0)
        return round(1000 * statistics.median(samples), 1)

    try:
        for label, case in cases.items():
            result = await repo.aggregate(*case)
            timings[label] = {
                # What a report request runs: the daily rollups plus the raw edges (headline).
                "median_ms": await median_ms(case, True),
                # The same sums over the placements themselves (what reports did before 0003).
                "raw_median_ms": await median_ms(case, False),
                "groups": len(result),
                "placements": int(sum(r["placements"] for r in result)),
            }
    finally:
        await repo.close()
    return timings


# The same placements for SQLite (the embedded default), generated by a recursive CTE in the file's
# own connection: 100 clients, 40 locations, starts spread over 2026, in SQLAlchemy's stored text
# form ("YYYY-MM-DD HH:MM:SS.ffffff"), 80 % reconciled.
SQLITE_SEED_SQL = (
    """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?),
r AS (SELECT i, datetime('2026-01-01', '+' || (abs(random()) % 31536000) || ' seconds') AS t,
        1 + (abs(random()) % 1000) / 1000.0 AS kwh, 50 + (abs(random()) % 300) AS fc,
        200 + (abs(random()) % 300) AS base, (abs(random()) % 10) < 8 AS rec,
        (abs(random()) % 1000) / 1000.0 AS r2 FROM s)
"""
    + _SEED_INTO
    + """
SELECT printf('%08d-bench', i), 'client' || printf('%03d', i % 100), datetime(t, '-1 hour') || '.000000',
  'optimize', '{"duration_minutes": 120}', 'location-based average, lifecycle', 'zone/Z' || (i % 40),
  'Z' || (i % 40), t || '.000000', datetime(t, '+2 hours') || '.000000', kwh, fc, kwh * fc, 1.0, 'bench',
  'zone/Z0', 'Z0', t || '.000000', datetime(t, '+2 hours') || '.000000', kwh, base, kwh * base, 0.9,
  '{"warnings": []}', CASE WHEN rec THEN 'reconciled' ELSE 'recorded' END,
  datetime(t, '+2 hours') || '.000000', CASE WHEN rec THEN 1 ELSE 0 END, CASE WHEN rec THEN kwh END,
  CASE WHEN rec THEN kwh * fc * (0.8 + 0.4 * r2) END, CASE WHEN rec THEN kwh * base * 1.05 END,
  CASE WHEN rec THEN 'bench' END, CASE WHEN rec THEN datetime(t, '+3 hours') || '.000000' END
FROM r
"""
)


async def reports_sqlite(n: int) -> dict[str, Any]:
    """The report cases over `n` placements in a fresh SQLite ledger file (deleted afterwards)."""
    import sqlite3

    from carbon_optimizer.ledger import db
    from carbon_optimizer.ledger.repository import LedgerRepository
    from carbon_optimizer.settings import DatabaseSettings

    with tempfile.TemporaryDirectory(prefix="co-bench-reports-") as data_dir:
        engine = db.create_engine(DatabaseSettings(data_dir=data_dir))
        out: dict[str, Any] = {"placements": n}
        try:
            await db.upgrade(engine)
            t0 = time.perf_counter()
            with contextlib.closing(sqlite3.connect(str(engine.url.database))) as conn:
                conn.execute(SQLITE_SEED_SQL, (n,))
                conn.commit()
                out["seed_s"] = round(time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                conn.execute("ANALYZE")
                out["analyze_s"] = round(time.perf_counter() - t0, 1)
            # The seed went around the writer: take it into the rollups as a bulk import would.
            t0 = time.perf_counter()
            repo = LedgerRepository(engine)
            await repo.roll_up()
            await repo.close()
            out["roll_up_s"] = round(time.perf_counter() - t0, 1)
            out["reports"] = await _timed_reports(engine, datetime(2026, 1, 1, tzinfo=UTC))
        finally:
            await engine.dispose()
    return out


async def reports(n: int, host: str, port: int) -> dict[str, Any]:
    import asyncpg

    from carbon_optimizer.ledger import db
    from carbon_optimizer.settings import DatabaseSettings

    name = f"co_ledger_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@{host}:{port}/{name}"
    engine = db.create_engine(DatabaseSettings(url=url))
    out: dict[str, Any] = {"placements": n}
    try:
        await db.upgrade(engine)
        begin = datetime(2026, 1, 1, tzinfo=UTC)
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=name)
        try:
            t0 = time.perf_counter()
            await conn.execute(SEED_SQL, n)
            out["seed_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            await conn.execute("VACUUM ANALYZE ledger_placements")
            out["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
        finally:
            await conn.close()
        out["reports"] = await _timed_reports(engine, begin)
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument("--skip-wait", action="store_true", help="only the default (no-wait) overhead")
    parser.add_argument(
        "--modes",
        default="no-cache,cached,unique",
        help="HTTP part: which of no-cache, cached, unique to run (comma-separated)",
    )
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="HTTP part: the ledger on a scratch PostgreSQL database (--pg-host/--pg-port) instead of SQLite",
    )
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if not args.skip_http:
        name, url = _scratch_pg(args.pg_host, args.pg_port) if args.postgresql else (None, None)
        engine = "postgresql" if args.postgresql else "sqlite"
        try:
            modes = tuple(args.modes.split(","))
            result["recording_overhead_c16"] = http_overhead(
                args.seconds, args.rounds, database_url=url, modes=modes
            )
            print(
                f"{engine}, write_timeout_s=0 (default, no wait):",
                json.dumps(result["recording_overhead_c16"], indent=2),
                flush=True,
            )
            if not args.skip_wait:
                result["recording_overhead_c16_wait"] = http_overhead(
                    args.seconds, args.rounds, 0.25, database_url=url, modes=modes
                )
                print(
                    f"{engine}, write_timeout_s=0.25 (wait for the commit):",
                    json.dumps(result["recording_overhead_c16_wait"], indent=2),
                    flush=True,
                )
        finally:
            if name is not None:
                _drop_pg(args.pg_host, args.pg_port, name)
    if not args.skip_reports:
        result["reports_postgresql"] = asyncio.run(reports(args.rows, args.pg_host, args.pg_port))
        print(json.dumps(result["reports_postgresql"], indent=2), flush=True)
        result["reports_sqlite"] = asyncio.run(reports_sqlite(args.rows))
        print(json.dumps(result["reports_sqlite"], indent=2), flush=True)


if __name__ == "__main__":
    main()
