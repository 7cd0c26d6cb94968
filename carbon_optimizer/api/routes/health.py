"""Probes: /healthz (liveness, no I/O), /readyz (readiness), /health (component status)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from carbon_optimizer import __version__
from carbon_optimizer.api.schemas_out import HealthOut, LivenessOut, ReadinessOut
from carbon_optimizer.api.state import get_state
from carbon_optimizer.health import ComponentStatus, overall
from carbon_optimizer.logging_config import settings_secrets
from carbon_optimizer.redact import redact_tree

router = APIRouter(tags=["health"])


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.get(
    "/healthz",
    summary="Liveness: the process serves (no I/O)",
    responses={200: {"model": LivenessOut, "description": "OK"}},
)
async def healthz() -> Response:
    """Always 200 while the event loop answers."""
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: data loaded and cache reachable (never calls Electricity Maps)",
    responses={
        200: {"model": ReadinessOut, "description": "Ready"},
        503: {"model": ReadinessOut, "description": "Not ready (Retry-After: 5)"},
    },
)
async def readyz(request: Request) -> Response:
    """200 when this worker can answer optimisations, else 503."""
    state = get_state(request)
    ready = state.ready
    if ready:
        for check in state.readiness_checks:
            if not await check():
                ready = False
                break
    if ready:
        return _json({"status": "ready"})
    return Response(
        orjson.dumps({"status": "not ready"}),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": "5"},
    )


@router.get(
    "/health",
    summary="Component status: cache, data sources, data age, version",
    responses={200: {"model": HealthOut, "description": "OK, possibly degraded"}},
)
async def health(request: Request) -> Response:
    """Status of every component; 200 while the service can answer, even degraded."""
    state = get_state(request)
    components: dict[str, Any] = {}
    statuses: list[ComponentStatus] = []
    secrets = tuple(settings_secrets(state.settings))
    for name, reporter in state.health_reporters.items():
        try:
            report = reporter()
        except Exception:  # a broken reporter must not break the health page
            report = {"status": ComponentStatus.UNKNOWN}
        components[name] = redact_tree(report, secrets)  # upstream messages may echo credentials
        statuses.append(ComponentStatus.parse(report.get("status")))
    return _json(
        {
            "status": overall(statuses),
            "version": __version__,
            "uptime_s": round(time.monotonic() - state.started_at, 1),
            "environment": state.settings.environment,
            "components": components,
        }
    )
