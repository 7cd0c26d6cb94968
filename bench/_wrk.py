"""What the HTTP benchmarks share: a free port, `wrk` (installed if missing) and its JSON summary."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# A wrk script that POSTs one JSON body and prints a one-line JSON summary at the end.
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{extra_headers}
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {{\\"rps\\": %f, \\"p50_ms\\": %f, \\"p99_ms\\": %f, \\"errors\\": %d, \\"non2xx\\": %d}}\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    """Path of `wrk`, installing Debian's package when running as root."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk) ...", flush=True)
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is required: sudo apt-get install wrk (Debian/Ubuntu)")
    return path


def write_script(path: Path, body: str, headers: dict[str, str] | None = None) -> Path:
    """Write a wrk Lua script posting `body` with extra `headers`."""
    extra = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items())
    path.write_text(WRK_LUA.format(extra_headers=extra, body=body))
    return path


def run_wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    """Run wrk against `url`; return its summary (rps, p50_ms, p99_ms, errors, non2xx)."""
    out = subprocess.run(
        [
            ensure_wrk(),
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, float] = json.loads(line[5:])
    return result
