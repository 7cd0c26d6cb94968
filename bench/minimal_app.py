"""The throughput floor: a minimal FastAPI app whose endpoint parses a pydantic body of the same size.

`bench_http.py` serves this next to carbon-optimizer and reports our req/s as a fraction of it,
so the ratio says how much our own work (data, engine, serialisation) costs per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class _Loc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str | None = None
    region: str | None = None
    zone: str | None = None


class _Workload(BaseModel):
    duration_minutes: int
    vcpus: int
    memory_gib: float


class _Window(BaseModel):
    earliest_start: str | None = None
    deadline: str | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workload: _Workload
    locations: list[_Loc]
    window: _Window | None = None
    objective: dict[str, Any] | None = None
    time_step_minutes: int = 60
    max_results: int = 5


def create_app() -> FastAPI:
    """Factory for uvicorn --factory."""
    app = FastAPI()

    @app.post("/v1/optimize")
    async def optimize(body: _Body) -> dict[str, Any]:
        return {"locations": len(body.locations), "ok": True}

    return app
