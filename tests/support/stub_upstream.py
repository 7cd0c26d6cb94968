"""A stand-in Electricity Maps server on a real socket, plus what a stack under test needs.

- `StubUpstream`: a tiny HTTP/1.1 server (plain asyncio, in its own thread, so subprocesses and
  any event loop can reach it) answering `carbon-intensity/{forecast,history,latest}` in the
  documented v3 shapes. It counts calls per (endpoint, zone), can add a delay, answer 500s,
  answer 401s (`mode="auth"`) or never answer at all (`mode="hang"`).
- `StubProcess`: the same in its own process, remote-controlled.
- `FlatOffline`: a minimal bundled-data stand-in (hourly, deterministic).
- `live_settings`: settings of a live stack against the stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.settings import Settings
from tests.support.redis import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)
REDIS_BINARY = shutil.which("redis-server")


def hour_floor(when: datetime) -> datetime:
    """UTC hour containing `when`."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# ----- redis-server -----


def stub_intensity(zone: str, when: datetime) -> float:
    """Deterministic value per zone and hour (so tests can recognise live data)."""
    return float(100 + sum(map(ord, zone)) % 200 + when.hour)


class StubUpstream:
    """Local HTTP stub of the Electricity Maps v3 carbon-intensity endpoints, counting calls."""

    def __init__(self, *, delay_s: float = 0.0, mode: str = "ok") -> None:
        self.delay_s = delay_s
        # "ok" | "error" (HTTP 500) | "auth" (HTTP 401) | "forbidden" (HTTP 403) | "not_found"
        # (HTTP 404) | "null" (200 with every carbonIntensity null) | "hang" (never answers)
        self.mode = mode
        self.calls: Counter[tuple[str, str]] = Counter()
        self.tokens: set[str] = set()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        """Base URL to configure as `electricitymaps.base_url`."""
        return f"http://127.0.0.1:{self.port}/v3"

    def count(self, endpoint: str, zone: str | None = None) -> int:
        """Calls received for an endpoint (optionally one zone)."""
        return sum(n for (ep, z), n in self.calls.items() if ep == endpoint and zone in (None, z))

    def start(self, port: int = 0) -> StubUpstream:
        """Serve in a background thread; returns once listening."""
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True, name="stub-upstream")
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("stub upstream did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", port, backlog=512)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
                # Let the transports the cancelled handlers closed finish closing (connection_lost
                # runs on a later loop turn); otherwise they are collected "closing" and warn later.
                loop.run_until_complete(self._server.wait_closed())
                loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                _, target, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (h.split(":", 1) for h in header_lines if ":" in h)
                }
                status, body = await self._respond(target, headers)
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        url = urlsplit(target)
        endpoint = url.path.rsplit("/", 1)[-1]
        query = parse_qs(url.query)
        if endpoint == "__control":  # remote control for `StubProcess`: configure, then report counts
            self.mode = query.get("mode", [self.mode])[0]
            self.delay_s = float(query.get("delay_s", [self.delay_s])[0])
            if query.get("reset"):
                self.calls.clear()
            return 200, json.dumps([[ep, z, n] for (ep, z), n in self.calls.items()]).encode()
        zone = query.get("zone", [""])[0]
        self.calls[(endpoint, zone)] += 1
        if "auth-token" in headers:
            self.tokens.add(headers["auth-token"])
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "error":
            return 500, b'{"status": "error", "message": "Unknown error occured."}'
        if self.mode == "auth":
            return 401, b'{"status": "error", "message": "Invalid auth-token"}'
        if self.mode == "forbidden":
            return 403, b"<html>Forbidden</html>"
        if self.mode == "not_found":
            return 404, json.dumps({"error": f'No recent data for zone "{zone}"'}).encode()
        now = hour_floor(datetime.now(UTC))

        def row(when: datetime) -> dict[str, object]:
            return {
                "zone": zone,
                "carbonIntensity": None if self.mode == "null" else stub_intensity(zone, when),
                "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }

        if endpoint == "forecast":
            hours = int(parse_qs(url.query).get("horizonHours", ["24"])[0])
            payload: object = {
                "zone": zone,
                "forecast": [row(now + HOUR * i) for i in range(hours + 1)],
                "updatedAt": datetime.now(UTC).isoformat(),
            }
        elif endpoint == "history":
            payload = {"zone": zone, "history": [row(now - HOUR * (23 - i)) for i in range(24)]}
        elif endpoint == "latest":
            payload = row(now)
        elif endpoint == "past-range":
            begin = hour_floor(datetime.fromisoformat(query["start"][0].replace("Z", "+00:00")))
            finish = datetime.fromisoformat(query["end"][0].replace("Z", "+00:00"))
            hours = int((finish - begin) / HOUR)
            payload = {"zone": zone, "data": [row(begin + HOUR * i) for i in range(hours)]}
        else:
            return 404, json.dumps({"error": f'No recent data for zone "{zone}"'}).encode()
        return 200, json.dumps(payload).encode()


class StubProcess:
    """`StubUpstream` in its own Python process (so its CPU does not share our GIL), remote-controlled."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.conftest", "stub", str(self.port)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                self.control()
                return
            time.sleep(0.05)
        raise RuntimeError("stub process did not start")

    @property
    def base_url(self) -> str:
        """Base URL to configure as `electricitymaps.base_url`."""
        return f"http://127.0.0.1:{self.port}/v3"

    def control(
        self, *, mode: str | None = None, delay_s: float | None = None, reset: bool = False
    ) -> Counter[tuple[str, str]]:
        """Change mode/delay (and reset counts); returns the call counts."""
        params: dict[str, str] = {}
        if mode is not None:
            params["mode"] = mode
        if delay_s is not None:
            params["delay_s"] = str(delay_s)
        if reset:
            params["reset"] = "1"
        rows = httpx.get(f"{self.base_url}/__control", params=params, timeout=2).json()
        return Counter({(ep, z): n for ep, z, n in rows})

    def count(self, endpoint: str, zone: str | None = None) -> int:
        """Calls received for an endpoint (optionally one zone)."""
        return sum(n for (ep, z), n in self.control().items() if ep == endpoint and zone in (None, z))

    def stop(self) -> None:
        """Terminate the process."""
        self.process.terminate()
        self.process.wait(5)


class FlatOffline:
    """Offline provider stand-in: hourly 400 g/kWh, labelled like the bundled replay data."""

    name = "offline-fake"
    label = "fallback:replay-2023"

    def __init__(self) -> None:
        self.calls = 0

    async def series(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Hourly series covering [start, end)."""
        return self.series_sync(zone, start, end)

    def series_sync(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """`series`, synchronously (the chain paints bundled-only zones with it)."""
        self.calls += 1
        begin = hour_floor(start)
        count = max(1, -(-(end - begin) // HOUR))
        return CarbonSeries(zone, begin, HOUR, np.full(count, 400.0), (SourceRun(0, count, self.label),))


# ----- a worker process running the real stack (cross-process tests and bench) -----


def live_settings(base_url: str, redis_url: str | None, **cache: object) -> Settings:
    """Settings for a live stack against the stub (explicit values: env and .env do not leak in)."""
    return Settings(
        electricitymaps={
            "api_key": "stub-token",
            "base_url": base_url,
            "request_deadline_s": 5.0,
            "max_retries": 0,
        },
        redis={"url": redis_url, "retry_after_failure_s": 0.2},
        cache=cache,
    )
