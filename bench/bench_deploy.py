"""Cost of the security layer in the production process model: auth + Redis rate limiting on vs off.

Runs `gunicorn -c gunicorn.conf.py` with 2 Uvicorn workers (this 2-core machine) against a real
`redis-server`, warms POST /v1/optimize, then drives it with `wrk` at 64 connections:
- "off": no API keys, rate limiting disabled;
- "on":  one API key sent as `Authorization: Bearer`, rate limiting enabled with a limit high
  enough never to trigger, counters in Redis (one INCR round trip per request, as in production).
Rounds alternate off/on so drift on a shared VM hits both; the median per mode is reported.
Target (issue 6): on/off req/s >= 80 %, and p99 on <= p99 off / 0.8.

    python bench/bench_deploy.py [--duration 10] [--rounds 2] [--connections 64]

Needs `wrk` and `redis-server` (Debian packages `wrk`, `redis-server`); installs wrk with apt-get
when run as root, otherwise says how. Everything binds to 127.0.0.1.
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
from typing import Any

import httpx

if __package__ in (None, ""):  # run as `python bench/<script>.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._wrk import ensure_wrk, free_port, run_wrk, write_script

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-0123456789abcdef0123456789abcdef"
BODY = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
    "locations": [
        {"provider": "aws", "region": "us-east-1"},
        {"provider": "aws", "region": "eu-west-1"},
        {"provider": "gcp", "region": "europe-west1"},
        {"provider": "azure", "region": "westeurope"},
        {"zone": "DE", "price_usd_per_hour": 0.35},
    ],
    "objective": {"mode": "balanced", "carbon_weight": 0.5},
    "time_step_minutes": 60,
    "max_results": 5,
}


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if not binary:
        sys.exit("redis-server is required: sudo apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_gunicorn(secured: bool, redis_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    metrics_dir = workdir / f"metrics-{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "PROMETHEUS_"))}
    env.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CARBON_OPTIMIZER_SERVER__HOST": "127.0.0.1",
            "CARBON_OPTIMIZER_SERVER__PORT": str(port),
            "CARBON_OPTIMIZER_SERVER__WORKERS": "2",
            "CARBON_OPTIMIZER_SERVER__LOG_LEVEL": "warning",
            "CARBON_OPTIMIZER_ENVIRONMENT": "production",
            "CARBON_OPTIMIZER_REDIS__URL": redis_url,
            "CARBON_OPTIMIZER_RATE_LIMIT": "100000000/minute",
            "CARBON_OPTIMIZER_RATE_LIMIT_ENABLED": "true" if secured else "false",
        }
    )
    if secured:
        env["CARBON_OPTIMIZER_API_KEYS"] = API_KEY
    log = (workdir / f"gunicorn-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_and_warm(proc, base, secured, log.name)
    except BaseException:
        stop(proc)  # never leave a server behind
        kept = ROOT / "bench" / "results" / "bench_deploy_failed_gunicorn.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log.name, kept)
        print(f"gunicorn log kept at {kept}", file=sys.stderr)
        raise
    return proc, base


def wait_and_warm(proc: subprocess.Popen[bytes], base: str, secured: bool, log_name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: see {log_name}")
        time.sleep(0.2)
    headers = {"Authorization": f"Bearer {API_KEY}"} if secured else {}
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        for _ in range(40):  # warm both workers' caches and code paths
            response = client.post("/v1/optimize", json=BODY, headers={"Connection": "close"})
            if response.status_code != 200:
                raise RuntimeError(f"warm-up failed: {response.status_code} {response.text[:300]}")


def run_wrk_round(base: str, secured: bool, duration: int, connections: int, workdir: Path) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"} if secured else {}
    script = write_script(workdir / f"wrk-{'on' if secured else 'off'}.lua", json.dumps(BODY), headers)
    return dict(run_wrk(base + "/v1/optimize", connections, duration, script))


def fmt(result: dict[str, Any]) -> str:
    return (
        f"{result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
        f"  errors {result['errors']}  non-2xx {result['non2xx']}"
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    ensure_wrk()
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        workdir = Path(tmp)
        redis_proc, redis_url = start_redis()
        try:
            for round_no in range(args.rounds):
                for mode in ("off", "on"):
                    secured = mode == "on"
                    proc, base = start_gunicorn(secured, redis_url, workdir)
                    try:
                        result = run_wrk_round(base, secured, args.duration, args.connections, workdir)
                    finally:
                        stop(proc)
                    results[mode].append(result)
                    print(f"round {round_no + 1} {mode:>3}: {fmt(result)}", flush=True)
        finally:
            stop(redis_proc)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(float(r[key]) for r in results[mode]))

    # Paired per round (off and on ran back to back), then the median: robust to load drifting
    # between rounds on a shared machine.
    pairs = list(zip(results["off"], results["on"], strict=True))
    rps_ratio = float(statistics.median(on["rps"] / off["rps"] for off, on in pairs))
    p99_ratio = float(statistics.median(off["p99_ms"] / on["p99_ms"] for off, on in pairs))
    print()
    print(f"gunicorn 2 workers, wrk c={args.connections}, {args.duration}s x {args.rounds} rounds")
    print(f"{'POST /v1/optimize':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for label, mode in (("auth+rate limit off", "off"), ("auth+rate limit on (Redis)", "on")):
        print(f"{label:<28}{med(mode, 'rps'):>10.1f}{med(mode, 'p50_ms'):>10.2f}{med(mode, 'p99_ms'):>10.2f}")
    print(
        f"median of per-round ratios: req/s on/off {rps_ratio:.1%}, p99 off/on {p99_ratio:.1%}"
        " (target >= 80% for both)"
    )
    errors = sum(r["errors"] + r["non2xx"] for rs in results.values() for r in rs)
    if errors:
        print(f"WARNING: {errors} errors/non-2xx responses during the runs")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_deploy.json").write_text(
        json.dumps({"results": results, "rps_ratio": rps_ratio, "p99_ratio": p99_ratio}, indent=2)
    )
    return 0 if rps_ratio >= 0.8 and p99_ratio >= 0.8 and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
