"""The edge's share of a py-spy profile of fresh answers (issue 12's "edge layers" figure).

Two commands:

- `python bench/profile_edge.py drive 3000`: the `asgi fresh, same hour` row of
  `bench_fresh_cpu.py` alone (3000 unique /v1/optimize bodies through `create_app()`), to run
  under `py-spy record -r 200 -f raw -o edge.raw -- python bench/profile_edge.py drive 3000`;
- `python bench/profile_edge.py shares edge.raw`: each sample goes to the first frame, walking from
  the leaf up, that belongs to a known group (the edge's modules and the instrumentator, FastAPI's
  and Starlette's own middleware, the httpx client, the app); stdlib and prometheus_client frames
  count for whoever called them. Prints each group's share and the edge's top frames.

Why not cProfile: it inflates small frames; why leaf-first rather than inclusive time: the edge
wraps the whole app, so only the samples whose nearest known frame is the edge are its own cost.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from pathlib import Path

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "edge",
        (
            "carbon_optimizer/api/edge.py",
            "carbon_optimizer/api/middleware.py",
            "carbon_optimizer/api/security.py",
            "carbon_optimizer/api/ratelimit.py",
            "carbon_optimizer/api/upstream_budget.py",
            "carbon_optimizer/logging_config.py",
            "carbon_optimizer/api/http_metrics.py",
            "prometheus_fastapi_instrumentator/",
            "starlette/middleware/cors.py",
        ),
    ),
    (
        "framework middleware",
        (
            "starlette/middleware/errors.py",
            "starlette/middleware/exceptions.py",
            "fastapi/middleware/asyncexitstack.py",
            "fastapi/telemetry/",
            "fastapi/_body_limit.py",
        ),
    ),
    ("client", ("httpx/", "httpcore/", "asgi_lifespan/", "bench/")),
    ("app", ("carbon_optimizer/", "fastapi/", "starlette/", "pydantic", "orjson", "numpy")),
)
_FILE = re.compile(r"\((.*):\d+\)$")
_ROOT = Path(__file__).resolve().parent.parent


def _group(frame: str) -> str | None:
    match = _FILE.search(frame)
    path = match.group(1) if match else frame
    for name, parts in GROUPS:
        if any(part in path for part in parts):
            return name
    return None


def shares(raw: Path) -> None:
    totals: Counter[str] = Counter()
    edge_frames: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        kind = "other (event loop, stdlib)"
        for frame in reversed(stack.split(";")):
            group = _group(frame)
            if group is not None:
                kind = group
                if group == "edge":
                    edge_frames[re.sub(r":\d+\)$", ")", frame)] += samples
                break
        totals[kind] += samples
    total = sum(totals.values())
    for kind, samples in totals.most_common():
        print(f"{kind:>28}: {samples:7d} samples {100 * samples / total:5.1f} %")
    print("edge frames (nearest known frame from the leaf):")
    for frame, samples in edge_frames.most_common(12):
        print(f"  {100 * samples / total:5.2f} %  {frame}")


async def drive(requests: int) -> None:
    sys.path.insert(0, str(_ROOT))
    from bench import bench_fresh_cpu  # clears CARBON_OPTIMIZER_* and turns the limiter off
    from carbon_optimizer.app import create_app

    ms = await bench_fresh_cpu.asgi_row(create_app(), 1, requests, 1)
    print(f"{ms:.3f} ms CPU per request")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("drive", "shares"):
        sys.exit(__doc__)
    if sys.argv[1] == "drive":
        asyncio.run(drive(int(sys.argv[2])))
    else:
        shares(Path(sys.argv[2]))
