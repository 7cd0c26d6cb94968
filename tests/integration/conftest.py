"""Integration fixtures: real redis-server processes and a local stub of the Electricity Maps API.

Reusable by every integration test (and importable by `bench/`):
- `redis_factory` (session scope) starts any number of `redis-server` processes on free ports
  (`--save "" --appendonly no`) and kills them all at the end; a `RedisServer` can be killed,
  restarted on the same port, stalled with SIGSTOP and resumed with SIGCONT.
- `redis_server` is one fresh server per test.
- `StubUpstream` is a tiny HTTP/1.1 server (plain asyncio, in its own thread, so subprocesses and
  any event loop can reach it) answering `carbon-intensity/{forecast,history,latest}` in the
  documented v3 shapes. It counts calls per (endpoint, zone), can add a delay, answer 500s or
  never answer at all (`mode="hang"`).
- `FlatOffline` is a minimal offline provider (hourly, deterministic) for stacks under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis import REDIS_BINARY, RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import (
    FlatOffline,
    StubUpstream,
    live_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def redis_factory() -> Iterator[Callable[[], RedisServer]]:
    """Session-scoped factory: call it for each redis-server you need; all are killed at the end."""
    if REDIS_BINARY is None:
        pytest.skip("redis-server binary not installed")
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer().start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(redis_factory: Callable[[], RedisServer]) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (resumed and killed afterwards even if it was stalled)."""
    server = redis_factory()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def stub_upstream() -> Iterator[StubUpstream]:
    """A running stub upstream (tests tweak `delay_s` / `mode`)."""
    stub = StubUpstream().start()
    try:
        yield stub
    finally:
        stub.stop()


async def stack_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Build the stack, wait for `start_at` (epoch s), fire `requests` concurrent series fetches."""
    zones: list[str] = config["zones"]
    settings = live_settings(config["base_url"], config.get("redis_url"), **config.get("cache", {}))
    settings.redis.key_prefix = config.get("redis_key_prefix", settings.redis.key_prefix)
    # A starved CPU makes Redis answer late; a test about single flight can say how late is "down".
    settings.redis.socket_timeout_s = config.get("redis_socket_timeout_s", settings.redis.socket_timeout_s)
    async with carbon_stack(settings, FlatOffline()) as stack:
        await asyncio.sleep(max(0.0, config["start_at"] - time.time()))
        now = datetime.now(UTC)
        window = timedelta(hours=config.get("window_hours", 24))

        async def one(index: int) -> tuple[float, str, str | None]:
            started = time.perf_counter()
            try:
                series = (await stack.provider.series(zones[index % len(zones)], now, now + window)).series
            except Exception as exc:  # a worker reports failures instead of dying
                return time.perf_counter() - started, "", type(exc).__name__
            return time.perf_counter() - started, "+".join(series.sources_between(now, now + window)), None

        results = await asyncio.gather(*(one(i) for i in range(config["requests"])))
    return {
        "latencies_s": [latency for latency, _, _ in results],
        "labels": sorted({label for _, label, error in results if error is None}),
        "errors": [error for _, _, error in results if error is not None],
    }


def run_stack_workers(configs: list[dict[str, Any]], timeout_s: float = 60) -> list[dict[str, Any]]:
    """Run one `stack_worker` per config, each in its own Python process; return their reports."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.conftest", json.dumps(config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for config in configs
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed: {err.decode()[-2000:]}")
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


if __name__ == "__main__":
    if sys.argv[1] == "stub":  # `StubProcess`: serve until terminated
        StubUpstream().start(int(sys.argv[2]))
        threading.Event().wait()
    else:
        print(json.dumps(asyncio.run(stack_worker(json.loads(sys.argv[1])))))
