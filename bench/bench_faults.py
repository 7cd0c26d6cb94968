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

    python bench/bench_faults.py [--phase 4] [--only redis_rst,redis_stall]

Loopback only; about 15 s per scenario. Needs `redis-server`.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase", type=float, default=4.0, help="seconds before, during and after the fault")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
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
