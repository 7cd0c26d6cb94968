"""Real processes for the deployment tests: `redis-server` and `gunicorn -c gunicorn.conf.py`.

Shared by tests/deployment and tests/api/test_schemathesis.py (a plain module, not a conftest,
so both can import it).

Why real ones: the promises under test (metrics aggregated across forked workers, one rate-limit
count shared by every worker, graceful drain on SIGTERM, surviving a dead Redis) live in process
boundaries, signals and sockets that an in-process ASGI client never exercises.
Everything binds to 127.0.0.1 on free ports and is torn down by the fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEYS = [f"deploy-test-key-{i:02d}-0123456789abcdef" for i in range(24)]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """A throwaway redis-server (no persistence) on a free port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_redis() -> RedisProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return RedisProcess(port, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@dataclass
class GunicornProcess:
    """A running `gunicorn -c gunicorn.conf.py` with its combined output in a log file."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line the master and workers printed so far."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

    def access_records(self) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("logger") == "carbon_optimizer.access"]

    def worker_pids(self) -> set[int]:
        """PIDs of the master's live children (the workers)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(p) for p in children.read_text().split()} if children.exists() else set()

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_gunicorn(tmp_path: Path, redis_url: str | None, **settings: str) -> GunicornProcess:
    """Start gunicorn with 2 workers from the repo root and wait until both workers answer."""
    if shutil.which("gunicorn") is None and not _module_available("gunicorn"):
        pytest.skip("gunicorn is not installed (pip install .[server])")
    port = free_port()
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale file from a previous run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_OPTIMIZER_", "PROMETHEUS_"))}
    env.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CARBON_OPTIMIZER_SERVER__HOST": "127.0.0.1",
            "CARBON_OPTIMIZER_SERVER__PORT": str(port),
            "CARBON_OPTIMIZER_SERVER__WORKERS": "2",
            "CARBON_OPTIMIZER_SERVER__GRACEFUL_TIMEOUT_S": "15",
            "CARBON_OPTIMIZER_SERVER__LOG_LEVEL": "info",
            "CARBON_OPTIMIZER_SERVER__JSON_LOGS": "true",
            "CARBON_OPTIMIZER_ENVIRONMENT": "test",
            "CARBON_OPTIMIZER_API_KEYS": ",".join(API_KEYS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["CARBON_OPTIMIZER_REDIS__URL"] = redis_url
    env.update({f"CARBON_OPTIMIZER_{k.upper()}": v for k, v in settings.items()})
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    server = GunicornProcess(port, process, log_path, metrics_dir, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        ready_workers = {
            r.get("pid")
            for r in server.log_records()
            if str(r.get("msg", "")).startswith("Application startup")
        }
        if len(ready_workers) >= 2 and _get_ok(server.base_url + "/readyz"):
            return server
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"gunicorn did not become ready:\n{log_path.read_text()[-4000:]}")


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
