"""HTTP benchmark: POST /v1/optimize under wrk vs a minimal-FastAPI floor, plus start-up and RSS.

Run: `python bench/bench_http.py` (needs `wrk`: `apt-get install wrk`; `--redis URL` measures the
two-tier cache with Redis configured). One uvicorn worker each, same machine, same run, so the
ratio is meaningful on a noisy 2-core VM. Prints a table; medians of `--repeat` runs. Beside
req/s it prints each server's own CPU per request (read from /proc around every wrk run): req/s
swings with whatever else the machine runs, CPU per request much less.

Rows:
- `fresh` (the headline): every request a different body (job length and earliest start move
  with each request), as schedulers send them — data lookups, engine, serialisation every time.
  Starts move 16 s per request, so at these rates they cross an hour every ~225 requests.
- `fresh-hour`: unique bodies whose starts stay inside one hour (job length moves instead), as
  callers asking "from now" send them within an hour: the memos' steady state.
- `cache-hit`: one identical body, answered by the result cache after the first request. Its own
  row: it says what the cache saves, not what a caller gets.
- `fresh-large`: fresh bodies of 150 locations × a 7-day window × 15-minute steps (the large
  end of the contract: ~100,000 candidates per request).
- `no-cache`: the identical body with `Cache-Control: no-cache` (recomputed, same data each time).
The floor parses the same bodies with a pydantic model of the same shape and answers a constant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._wrk import free_port, run_wrk, write_script, write_unique_script

ROOT = Path(__file__).resolve().parent.parent
ZONES_20 = [
    {"provider": "aws", "region": "us-east-1"},
    {"provider": "aws", "region": "eu-west-1"},
    {"provider": "aws", "region": "eu-central-1"},
    {"provider": "aws", "region": "us-west-2"},
    {"provider": "aws", "region": "ap-northeast-1"},
    {"provider": "gcp", "region": "europe-west1"},
    {"provider": "gcp", "region": "us-central1"},
    {"provider": "gcp", "region": "europe-north1"},
    {"provider": "gcp", "region": "asia-southeast1"},
    {"provider": "gcp", "region": "us-west1"},
    {"provider": "azure", "region": "eastus"},
    {"provider": "azure", "region": "westeurope"},
    {"provider": "azure", "region": "swedencentral"},
    {"provider": "azure", "region": "uksouth"},
    {"provider": "azure", "region": "francecentral"},
    {"zone": "DE"},
    {"zone": "FR"},
    {"zone": "NO"},
    {"zone": "US-CAL-CISO"},
    {"zone": "GB"},
]
BODY = {
    "workload": {"duration_minutes": 180, "vcpus": 8, "memory_gib": 32},
    "locations": ZONES_20,
    "objective": {"mode": "carbon"},
    "time_step_minutes": 60,
    "max_results": 5,
}
# The fresh row's body: the same request, its job length and 24 h window moving per request.
UNIQUE_TEMPLATE = {
    **BODY,
    "workload": {"duration_minutes": "__DURATION__", "vcpus": 8, "memory_gib": 32},
    "window": {"earliest_start": "__START__"},
}

# 150 locations: every AWS, Azure and GCP region of the catalog, then bare zones up to 150.
_CATALOG = ROOT / "carbon_optimizer" / "data" / "cloud_regions.csv"


def _locations_150() -> list[dict[str, str]]:
    rows = [line.split(",", 2)[:2] for line in _CATALOG.read_text().splitlines()[1:]]
    cloud = [{"provider": p, "region": r} for p, r in rows if p in ("aws", "azure", "gcp")]
    zones = [{"zone": z} for z in ("DE", "FR", "NO", "GB", "ES", "SE", "PL", "IT-NO", "NL", "BE", "DK-DK1")]
    return (cloud + zones)[:150]


LARGE_TEMPLATE = {
    "workload": {"duration_minutes": "__DURATION__", "vcpus": 8, "memory_gib": 32},
    "locations": _locations_150(),
    "objective": {"mode": "carbon"},
    "window": {"earliest_start": "__START__", "deadline": "__DEADLINE__"},
    "time_step_minutes": 15,
    "max_results": 5,
}


def start(module_factory: str, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            module_factory,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = "/readyz" if "carbon_optimizer" in module_factory else "/docs"
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=0.5).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{module_factory} exited")
        time.sleep(0.02)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(pid: int, url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    """One wrk run plus the server's CPU ms per request over it."""
    before = cpu_s(pid)
    result = run_wrk(url, connections, seconds, script)
    requests = max(result["rps"] * seconds, 1.0)
    result["cpu_ms"] = (cpu_s(pid) - before) * 1000 / requests
    return result


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per point; the median is reported")
    parser.add_argument("--redis", help="Redis URL: measure with the shared cache configured")
    parser.add_argument("--rows", nargs="+", default=["fresh", "cache-hit", "no-cache"])
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 16, 64])
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBON_OPTIMIZER_")}
    env["PYTHONPATH"] = str(ROOT)
    # This measures the service's own work: no rate limit (bench_deploy.py measures auth + limits).
    env["CARBON_OPTIMIZER_RATE_LIMIT_ENABLED"] = "false"
    if args.redis:
        env["CARBON_OPTIMIZER_REDIS__URL"] = args.redis
    body = json.dumps(BODY)
    template = json.dumps(UNIQUE_TEMPLATE).replace('"__DURATION__"', "__DURATION__")
    large = json.dumps(LARGE_TEMPLATE).replace('"__DURATION__"', "__DURATION__")
    base_epoch = int(time.time()) + 3600
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    scripts = {
        "fresh": write_unique_script(workdir / "fresh.lua", template, base_epoch),
        "fresh-hour": write_unique_script(workdir / "hour.lua", template, base_epoch, same_hour=True),
        "fresh-large": write_unique_script(workdir / "large.lua", large, base_epoch, window_s=7 * 86400),
        "cache-hit": write_script(workdir / "hit.lua", body),
        "no-cache": write_script(workdir / "nocache.lua", body, {"Cache-Control": "no-cache"}),
    }
    floor_scripts = {
        "fresh": scripts["fresh"],
        "fresh-hour": scripts["fresh-hour"],
        "fresh-large": scripts["fresh-large"],
        "cache-hit": scripts["cache-hit"],
        "no-cache": scripts["cache-hit"],
    }

    ours_port, floor_port = free_port(), free_port()
    ours, ours_start = start("carbon_optimizer.app:create_app", ours_port, env)
    floor, _ = start("bench.minimal_app:create_app", floor_port, env)
    try:
        ours_url = f"http://127.0.0.1:{ours_port}/v1/optimize"
        floor_url = f"http://127.0.0.1:{floor_port}/v1/optimize"
        check = httpx.post(ours_url, json=BODY, timeout=10)
        assert check.status_code == 200, check.text
        for _ in range(50):  # warm both
            httpx.post(ours_url, json=BODY)
            httpx.post(floor_url, json=BODY)
        rss_idle = rss_mb(ours.pid)
        print(f"start-up to ready (carbon-optimizer serve, 1 worker): {ours_start:.2f} s")
        print(
            f"request body: {len(body)} bytes, 20 locations, 24 h window, step 60, 3 h job, "
            f"{check.json()['candidates_evaluated']} candidates"
        )
        print("fresh = every body different (the headline); cache-hit = one identical body (result cache);")
        print(
            "no-cache = the identical body with Cache-Control: no-cache. Floor: same bodies, pydantic parse."
        )
        print()
        print("CPU = the server process's own CPU ms per request (from /proc, the steady figure on a")
        print(
            "shared machine); CPU ratio = floor CPU / ours. fresh-hour = unique bodies, starts in one hour."
        )
        print()
        print(
            f"{'path':>11} {'c':>3} | {'ours req/s':>10} | {'floor req/s':>11} | {'ratio':>6} | "
            f"{'ours p50':>8} | {'ours p99':>8} | {'floor p99':>9} | {'CPU':>5} | {'floor':>5} | "
            f"{'ratio':>5} | errors"
        )
        print("-" * 124)
        for path, connections in [(p, c) for p in args.rows for c in args.connections]:
            runs_ours, runs_floor = [], []
            for _ in range(args.repeat):
                runs_ours.append(_measured(ours.pid, ours_url, connections, args.seconds, scripts[path]))
                runs_floor.append(
                    _measured(floor.pid, floor_url, connections, args.seconds, floor_scripts[path])
                )
            errors = sum(r["errors"] + r["non2xx"] for r in runs_ours)
            rps, floor_rps = _median(runs_ours, "rps"), _median(runs_floor, "rps")
            cpu, floor_cpu = _median(runs_ours, "cpu_ms"), _median(runs_floor, "cpu_ms")
            print(
                f"{path:>11} {connections:>3} | {rps:>10.0f} | {floor_rps:>11.0f} | "
                f"{rps / floor_rps:>6.2f} | "
                f"{_median(runs_ours, 'p50_ms'):>6.1f}ms | {_median(runs_ours, 'p99_ms'):>6.1f}ms | "
                f"{_median(runs_floor, 'p99_ms'):>7.1f}ms | {cpu:>5.3f} | {floor_cpu:>5.3f} | "
                f"{floor_cpu / cpu:>5.2f} | {errors}"
            )
        print()
        after = rss_mb(ours.pid)
        print(f"RSS of the serving process: {rss_idle:.0f} MB after warm-up, {after:.0f} MB after load")
    finally:
        for proc in (ours, floor):
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
