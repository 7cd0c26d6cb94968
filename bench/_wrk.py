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


# A wrk script whose every request is a different body: schedulers never send the same body twice
# (times move, durations and lists differ), so the headline must not be a cache answering repeats.
# Each wrk thread numbers its requests; the body's job duration and its earliest start (seconds
# after a fixed future base) both move with the number, so no two requests of a run are equal.
WRK_UNIQUE_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local threads = {{}}
setup = function(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local n = counter * 16 + (thread_no or 0)
  local body = [[{body}]]
  local offset = n
  local minutes = 60 + (n % {duration_span})
  if {hour_span} > 0 then  -- every start inside one hour; the job length moves once per lap
    offset = n % {hour_span}
    minutes = 60 + (math.floor(n / {hour_span}) % {duration_span})
  end
  body = body:gsub("__DURATION__", tostring(minutes))
  body = body:gsub("__START__", os.date("!%Y-%m-%dT%H:%M:%SZ", {base_epoch} + offset))
  body = body:gsub("__DEADLINE__", os.date("!%Y-%m-%dT%H:%M:%SZ", {base_epoch} + offset + {window_s}))
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {{\\"rps\\": %f, \\"p50_ms\\": %f, \\"p99_ms\\": %f, \\"errors\\": %d, \\"non2xx\\": %d}}\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def write_unique_script(
    path: Path,
    template: str,
    base_epoch: int,
    duration_span: int = 600,
    window_s: int = 86400,
    *,
    same_hour: bool = False,
) -> Path:
    """Write a wrk script posting a different body each request.

    `template` is a JSON body with `__DURATION__` (job minutes) and `__START__` (earliest start:
    `base_epoch` plus the request's number in seconds, UTC) placeholders, and optionally
    `__DEADLINE__` (that start plus `window_s`). Request numbers step by 16, so at a few thousand
    requests a second the starts cross an hour every ~225 requests — far faster than real time.
    `same_hour` keeps every start inside the hour of `base_epoch` (as a scheduler asking "from
    now" does within an hour) and moves the job length once per lap instead, so bodies stay unique.
    """
    hour_span = 3000 if same_hour else 0
    base = int(base_epoch) // 3600 * 3600 if same_hour else int(base_epoch)
    path.write_text(
        WRK_UNIQUE_LUA.format(
            body=template,
            duration_span=duration_span,
            base_epoch=base,
            window_s=int(window_s),
            hour_span=hour_span,
        )
    )
    return path


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
