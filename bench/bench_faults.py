"""The issue-11 fault matrix under load, as production runs it: figures for the closing note.

Each scenario starts `gunicorn -c gunicorn.conf.py` (2 EdgeUvicornWorker workers, uvloop) with a
real `redis-server` behind the fault proxy (`tests/support/tcp_proxy.py`) and the Electricity
Maps stub (`StubUpstream`), drives POST /v1/optimize from 8 keep-alive clients (closed loop,
rotating 8 API keys), injects the fault in the middle third and reports, for the requests that
*started during the fault*: requests, non-2xx, 5xx, transport errors and p99; plus the whole run,
and how long after the fault ended the service was back to normal (first second whose requests
were all 2xx/429 with p99 under 3x the baseline's p99).

Scenarios (`--only a,b` to pick):
- baseline      no fault (the floor the others are compared with, measured in the same run)
- redis_rst     every Redis connection reset (TCP RST) every 10 ms          (item 1)
- redis_stall   Redis accepts but forwards nothing                           (item 4)
- redis_down    Redis connections reset and new ones refused                 (item 5)
- slow_clients  300 slow-loris connections opened during the fault           (item 7)
- recycling     max_requests=800±100 per worker: workers recycle all run long (item 10;
                "during" is the whole run, the fault has no start or end)

Upstream faults (`--upstream`, items 2 and 6's "time back to live data"): ONE gunicorn (2
workers) with Redis, forecast TTL 1 s so the cache asks the stub all the time, and the stub
switched through each fault in turn for `--phase` seconds, each followed by a recovery phase:
- up_401 / up_403 / up_404   a short auth / permission / no-data blip
- up_5xx                     HTTP 500
- up_timeout                 the stub never answers (the adapter's 3 s deadline)
- up_null                    200 with every carbonIntensity null
For each: requests, non-2xx, 5xx, p99 during the fault, the share of answers on live / stale /
fallback data during it, and seconds from the fault's end until a whole second of answers all
used live data again.

    python bench/bench_faults.py [--phase 4] [--only redis_rst,redis_stall]
    python bench/bench_faults.py --upstream --only up_401,up_403,up_404
    python bench/bench_faults.py --upstream --only up_5xx,up_timeout,up_null

Loopback only; about 15 s per scenario; `--upstream` 11 s per fault (3 s fault + 8 s recovery:
the failure cool-down is 5 s), so run it in two halves of ~45 s. Needs `redis-server`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.deployment.harness import API_KEYS, start_gunicorn, start_redis  # noqa: E402
from tests.faults.load import LoadResult, run_load  # noqa: E402
from tests.support.stub_upstream import StubUpstream  # noqa: E402
from tests.support.tcp_proxy import TcpProxy  # noqa: E402

BODY = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [
        {"provider": "aws", "region": "us-east-1"},
        {"provider": "gcp", "region": "europe-west1"},
        {"provider": "azure", "region": "westeurope"},
    ],
}


class Scenario:
    """A fault with `start()`/`stop()` hooks, plus extra gunicorn settings it needs."""

    def __init__(self, name: str, proxy: TcpProxy, port: int) -> None:
        self.name = name
        self.proxy = proxy
        self.port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    def settings(self) -> dict[str, str]:
        if self.name == "recycling":
            # ~1 recycle per worker every few seconds at this load (production: 200k ± 20k); smaller
            # values recycle faster than a worker boots on 2 shared cores, which measures the box.
            return {"server__max_requests": "800", "server__max_requests_jitter": "100"}
        return {}

    def start(self) -> None:
        actions: dict[str, Callable[[], None]] = {
            "redis_rst": self._loop_resets,
            "redis_stall": self.proxy.stall,
            "redis_down": self._down,
            "slow_clients": self._slow_clients,
        }
        action = actions.get(self.name)
        if action is not None:
            self._thread = threading.Thread(target=action, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.proxy.resume()
        self.proxy.refuse(False)
        for conn in self._sockets:
            conn.close()

    def _loop_resets(self) -> None:
        while not self._stop.is_set():
            self.proxy.reset_all()
            time.sleep(0.01)

    def _down(self) -> None:
        self.proxy.refuse(True)
        self.proxy.reset_all()

    def _slow_clients(self) -> None:
        for _ in range(300):
            if self._stop.is_set():
                return
            try:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                conn.sendall(b"POST /v1/optimize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
                self._sockets.append(conn)
            except OSError:
                return


def back_to_normal_s(result: LoadResult, fault_end: float, floor_p99_ms: float) -> float | None:
    """Seconds after `fault_end` until a whole second of requests was healthy again."""
    second = 0
    while True:
        window = result.window(fault_end + second, fault_end + second + 1)
        if window.requests == 0:
            return None
        healthy = all(
            o.status is not None and (200 <= o.status < 300 or o.status == 429) for o in window.outcomes
        )
        if healthy and window.p99_ms() <= max(3 * floor_p99_ms, 50.0):
            return float(second)
        second += 1


def run(name: str, phase_s: float, floor_p99_ms: float) -> dict[str, Any]:
    redis = start_redis()
    upstream = StubUpstream().start()
    proxy = TcpProxy(("127.0.0.1", redis.port)).start()
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-faults-{name}-"))
    scenario = Scenario(name, proxy, 0)
    server = start_gunicorn(
        tmp,
        f"redis://127.0.0.1:{proxy.port}/0",
        electricitymaps__api_key="stub-token",
        electricitymaps__base_url=upstream.base_url,
        electricitymaps__max_retries="0",
        cache__local_ttl_s="0",  # every request reads the shared store: the faults are on the hot path
        rate_limit="1000000/minute",
        edge__header_timeout_s="2",
        **scenario.settings(),
    )
    scenario.port = server.port
    times: dict[str, float] = {}
    try:
        httpx.post(
            server.base_url + "/v1/optimize", json=BODY, headers={"Authorization": f"Bearer {API_KEYS[0]}"}
        )

        def inject() -> None:
            time.sleep(phase_s)
            times["start"] = time.monotonic()
            scenario.start()
            time.sleep(phase_s)
            scenario.stop()
            times["end"] = time.monotonic()

        injector = threading.Thread(target=inject)
        injector.start()
        result = run_load(
            server.base_url,
            lambda c, i: c.post(
                "/v1/optimize", json=BODY, headers={"Authorization": f"Bearer {API_KEYS[i % 8]}"}
            ),
            concurrency=8,
            duration_s=3 * phase_s,
        )
        injector.join()
    finally:
        scenario.stop()
        server.terminate()
        proxy.stop()
        upstream.stop()
        redis.kill()
    during = result if name == "recycling" else result.window(times["start"], times["end"])
    return {
        "scenario": name,
        "during_fault": during.summary(),
        "whole_run": result.summary(),
        "statuses": dict(result.statuses()),
        "back_to_normal_s": back_to_normal_s(result, times["end"], floor_p99_ms or during.p99_ms()),
    }


UPSTREAM_FAULTS = {
    "up_401": "auth",
    "up_403": "forbidden",
    "up_404": "not_found",
    "up_5xx": "error",
    "up_timeout": "hang",
    "up_null": "null",
}


def data_tag(response: httpx.Response) -> str | None:
    """live / stale / fallback: the worst carbon source any option or the baseline used."""
    if response.status_code != 200:
        return None
    body = response.json()
    rows = [*body.get("options", []), *([body["baseline"]] if body.get("baseline") else [])]
    sources = " ".join(str(row.get("carbon_source", "")) for row in rows)
    if "fallback" in sources or not sources:
        return "fallback"
    return "stale" if "(stale)" in sources else "live"


def back_to_live_s(result: LoadResult, fault_end: float, until: float) -> float | None:
    """Seconds after `fault_end` until a whole second of answers all used live data (0.25 s steps)."""
    offset = 0.0
    while fault_end + offset + 1.0 <= until:
        window = result.window(fault_end + offset, fault_end + offset + 1.0)
        if window.requests and all(o.tag == "live" for o in window.outcomes):
            return offset
        offset += 0.25
    return None


def run_upstream(names: list[str], phase_s: float, recovery_s: float) -> list[dict[str, Any]]:
    """Every upstream fault in turn against one gunicorn (2 workers) + Redis + the stub."""
    redis = start_redis()
    upstream = StubUpstream().start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-upstream-"))
    server = start_gunicorn(
        tmp,
        f"redis://127.0.0.1:{redis.port}/0",
        electricitymaps__api_key="stub-token",
        electricitymaps__base_url=upstream.base_url,
        cache__forecast_ttl_s="1",  # the cache asks upstream every second: faults are felt at once
        cache__local_ttl_s="0",
        result_cache_ttl_s="0",  # every answer is assembled anew, so it shows the data of its moment
        rate_limit="1000000/minute",
    )
    marks: list[tuple[str, float, float, float]] = []  # name, start, end, recovery end
    stop = threading.Event()
    try:
        headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
        httpx.post(server.base_url + "/v1/optimize", json=BODY, headers=headers, timeout=30)

        def inject() -> None:
            time.sleep(phase_s)  # live floor
            for name in names:
                upstream.mode = UPSTREAM_FAULTS[name]
                started = time.monotonic()
                time.sleep(phase_s)
                upstream.mode = "ok"
                ended = time.monotonic()
                time.sleep(recovery_s)
                marks.append((name, started, ended, time.monotonic()))
            stop.set()

        injector = threading.Thread(target=inject)
        injector.start()
        result = run_load(
            server.base_url,
            lambda c, i: c.post(
                "/v1/optimize", json=BODY, headers={"Authorization": f"Bearer {API_KEYS[i % 8]}"}
            ),
            concurrency=8,
            duration_s=phase_s + len(names) * (phase_s + recovery_s) + 5,
            stop=stop,
            classify=data_tag,
        )
        injector.join()
    finally:
        stop.set()
        server.terminate()
        upstream.stop()
        redis.kill()
    rows = []
    for name, started, ended, recovered in marks:
        during = result.window(started, ended)
        tags = [o.tag or "error" for o in during.outcomes]
        shares = {t: round(tags.count(t) / max(1, len(tags)), 2) for t in ("live", "stale", "fallback")}
        rows.append(
            {
                "scenario": name,
                "during_fault": during.summary(),
                "data_during_fault": shares,
                "back_to_live_s": back_to_live_s(result, ended, recovered),
            }
        )
    return rows


def main_upstream(args: argparse.Namespace) -> None:
    """`--upstream`: the upstream half of the fault matrix (one table)."""
    names = [n for n in UPSTREAM_FAULTS if not args.only or n in args.only.split(",")]
    rows = run_upstream(names, args.phase, args.recovery)
    for row in rows:
        print(json.dumps(row), flush=True)
    print()
    print(
        f"{'scenario':<12}{'requests':>9}{'non-2xx':>9}{'5xx':>6}{'p99 ms':>9}"
        f"{'live':>6}{'stale':>6}{'fallb':>6}{'back to live s':>16}"
    )
    for row in rows:
        d, share, back = row["during_fault"], row["data_during_fault"], row["back_to_live_s"]
        print(
            f"{row['scenario']:<12}{d['requests']:>9}{d['non_2xx']:>9}{d['5xx']:>6}{d['p99_ms']:>9}"
            f"{share['live']:>6}{share['stale']:>6}{share['fallback']:>6}"
            f"{'-' if back is None else back:>16}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase", type=float, default=4.0, help="seconds before, during and after the fault")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--upstream", action="store_true", help="the upstream faults (one server)")
    parser.add_argument("--recovery", type=float, default=8.0, help="--upstream: seconds after each fault")
    args = parser.parse_args()
    if args.upstream:
        main_upstream(args)
        return
    names = ["baseline", "redis_rst", "redis_stall", "redis_down", "slow_clients", "recycling"]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    floor = 0.0
    rows = []
    for name in names:
        row = run(name, args.phase, floor)
        if name == "baseline":
            floor = row["whole_run"]["p99_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        f"{'scenario':<14}{'requests':>9}{'non-2xx':>9}{'5xx':>6}{'transport':>10}{'p99 ms':>9}{'back s':>8}"
    )
    for row in rows:
        d = row["during_fault"]
        back = row["back_to_normal_s"]
        print(
            f"{row['scenario']:<14}{d['requests']:>9}{d['non_2xx']:>9}{d['5xx']:>6}{d['transport_errors']:>10}"
            f"{d['p99_ms']:>9}{'-' if back is None else back:>8}"
        )


if __name__ == "__main__":
    main()
