"""HTTP benchmark: POST /v1/optimize under wrk vs a minimal-FastAPI floor, plus start-up and RSS.

Run: `python bench/bench_http.py` (needs `wrk`: `apt-get install wrk`; `--redis URL` measures the
two-tier cache with Redis configured). One uvicorn worker each, same machine, same run, so the
ratio is meaningful on a noisy 2-core VM. Prints a table; medians of `--repeat` runs.

Rows:
- `fresh` (the headline): every request a different body (job length and earliest start move
  with each request), as schedulers send them — data lookups, engine, serialisation every time.
- `cache-hit`: one identical body, answered by the result cache after the first request. Its own
  row: it says what the cache saves, not what a caller gets.
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
    base_epoch = int(time.time()) + 3600
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    scripts = {
        "fresh": write_unique_script(workdir / "fresh.lua", template, base_epoch),
        "cache-hit": write_script(workdir / "hit.lua", body),
        "no-cache": write_script(workdir / "nocache.lua", body, {"Cache-Control": "no-cache"}),
    }
    floor_scripts = {
        "fresh": scripts["fresh"],
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
        print(
            f"{'path':>9} {'c':>3} | {'ours req/s':>10} | {'floor req/s':>11} | {'ratio':>6} | "
            f"{'ours p50':>8} | {'ours p99':>8} | {'floor p99':>9} | errors"
        )
        print("-" * 96)
        for path, connections in [(p, c) for p in args.rows for c in args.connections]:
            runs_ours, runs_floor = [], []
            for _ in range(args.repeat):
                runs_ours.append(run_wrk(ours_url, connections, args.seconds, scripts[path]))
                runs_floor.append(run_wrk(floor_url, connections, args.seconds, floor_scripts[path]))
            errors = sum(r["errors"] + r["non2xx"] for r in runs_ours)
            rps, floor_rps = _median(runs_ours, "rps"), _median(runs_floor, "rps")
            print(
                f"{path:>9} {connections:>3} | {rps:>10.0f} | {floor_rps:>11.0f} | {rps / floor_rps:>6.2f} | "
                f"{_median(runs_ours, 'p50_ms'):>6.1f}ms | {_median(runs_ours, 'p99_ms'):>6.1f}ms | "
                f"{_median(runs_floor, 'p99_ms'):>7.1f}ms | {errors}"
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
