"""Savings-ledger routes, and `attach_placement`, the hook the optimize route calls.

POST /v1/placements, POST /v1/placements/{id}/outcome, GET /v1/placements/{id},
GET /v1/reports/savings.

The ledger lives on the worker's `AppState.ledger` (built in `app.runtime()`; None when disabled);
everything about storage, queues and
accounting is in `carbon_optimizer.ledger`. Errors leave as problem+json like every other route:
unknown or foreign placement id → 404 (the same answer, so ids of other clients cannot be probed),
a reused Idempotency-Key → 409, bad input → 422, database unavailable for a read → 503.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, FastAPI, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from carbon_optimizer.api.errors import problem_response
from carbon_optimizer.api.schemas import OptimizeRequest, ProblemOut, ProviderName
from carbon_optimizer.api.schemas_ledger import PlacementOut, SavingsReportOut
from carbon_optimizer.api.state import get_state
from carbon_optimizer.api.state import request_id as current_request_id
from carbon_optimizer.api.timebounds import ApiDatetime
from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.ledger.ledger import (
    IdempotencyConflict,
    Ledger,
    LedgerUnavailable,
    PlacementNotFound,
)
from carbon_optimizer.ledger.recorder import QueueFull
from carbon_optimizer.ledger.reports import GROUP_BY, to_csv
from carbon_optimizer.logging_config import client_id_from_scope

log = logging.getLogger(__name__)
router = APIRouter(tags=["ledger"])
_TYPE_BASE = "https://carbon-optimizer.dev/problems/"
_MAX_KEY_CHARS = 255
_DEFAULT_REPORT_DAYS = 30


# ----- schemas -----


class PlacementLocationIn(BaseModel):
    """A cloud region (`provider` + `region`) or a grid zone (`zone`); the response's form is accepted."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    provider: ProviderName | None = Field(default=None, description="Cloud provider (with `region`).")
    region: str | None = Field(
        default=None, min_length=1, max_length=64, description="Provider region, e.g. eu-west-1."
    )
    zone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Grid zone key, e.g. DE (alone, or as returned).",
    )


class PlacedOptionIn(BaseModel):
    """One option as /v1/optimize returns it (extra fields such as `rank` or `score` are ignored)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    location: PlacementLocationIn = Field(description="Where it runs.")
    start: ApiDatetime = Field(description="Planned start, RFC 3339 with offset.")
    end: ApiDatetime = Field(description="Planned end, RFC 3339 with offset (after start, at most 31 days).")
    energy_kwh: float = Field(ge=0, le=1e9, description="Forecast energy of the run, kWh.")
    avg_carbon_intensity_g_per_kwh: float = Field(
        ge=0, le=5000, description="Forecast mean carbon intensity over the window, gCO2e/kWh."
    )
    emissions_g: float | None = Field(
        default=None, ge=0, description="Forecast emissions, g (default energy x intensity)."
    )
    cost_usd: float | None = Field(default=None, ge=0, description="Forecast cost, USD.")
    instance_type: str | None = Field(default=None, max_length=128, description="Instance type, if any.")
    carbon_source: str | None = Field(
        default=None, max_length=255, description="Where the forecast intensity came from."
    )
    price_source: str | None = Field(default=None, max_length=255, description="Where the price came from.")

    @model_validator(mode="after")
    def _ordered(self) -> PlacedOptionIn:
        if self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        if self.end - self.start > timedelta(days=31):
            raise ValueError("a placement runs at most 31 days")
        return self


class BaselineOptionIn(PlacedOptionIn):
    """The counterfactual the savings are measured against, with a name saying what it is."""

    name: str | None = Field(
        default=None,
        max_length=255,
        examples=["on-prem DE, submitted immediately"],
        description="What the baseline is, in words.",
    )


class PlacementIn(BaseModel):
    """POST /v1/placements body: a decision the caller made itself (e.g. it chose option 3)."""

    model_config = ConfigDict(extra="forbid")

    chosen: PlacedOptionIn = Field(description="The option the caller chose.")
    baseline: BaselineOptionIn | None = Field(
        default=None, description="What the savings are measured against (none: no savings figures)."
    )
    workload: dict[str, Any] | None = Field(default=None, description="The workload, stored as given.")
    request_id: str | None = Field(
        default=None, max_length=128, description="The optimize call it came from."
    )


class OutcomeIn(BaseModel):
    """POST /v1/placements/{id}/outcome body: what actually ran."""

    model_config = ConfigDict(extra="forbid")

    actual_start: ApiDatetime = Field(description="When the run really started, RFC 3339 with offset.")
    actual_end: ApiDatetime = Field(description="When the run really ended (in the past), RFC 3339.")
    location: PlacementLocationIn | None = Field(default=None, description="Where it ran, if not as planned.")
    measured_energy_kwh: float | None = Field(
        default=None, ge=0, le=1e9, description="Metered energy, kWh (default: the model, scaled to the run)."
    )


class PlacementAckOut(BaseModel):
    """Answer of POST /v1/placements (201 recorded, 200 idempotent replay, 202 queued)."""

    placement_id: str = Field(description="Id to report the outcome against.")
    recorded: bool = Field(description="Committed to the ledger database.")
    queued: bool = Field(description="Held in memory and retried (the database did not commit in time).")
    replayed: bool = Field(description="An earlier call with this Idempotency-Key already recorded it.")


_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ProblemOut, "description": "No such placement for this client"},
    409: {"model": ProblemOut, "description": "Idempotency-Key reused for a different request"},
    422: {"model": ProblemOut, "description": "Invalid input"},
    503: {"model": ProblemOut, "description": "Ledger database unavailable (or its queue is full)"},
}


# ----- helpers -----


def _ledger(request: Request) -> Ledger:
    ledger = get_state(request).ledger
    if ledger is None:
        raise LedgerUnavailable("disabled")
    return ledger


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > _MAX_KEY_CHARS or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1–{_MAX_KEY_CHARS} printable characters",
            loc=("header", "Idempotency-Key"),
        )
    return key


def _header(request: Request, name: bytes) -> str | None:
    """One request header, read straight from the ASGI scope (names are lower-case there).

    `request.headers.get` builds a `Headers` mapping and, for an absent header (the usual case
    here), raises and catches a KeyError: a few µs on every recorded request.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


async def attach_placement(
    request: Request,
    body: OptimizeRequest,
    result: dict[str, Any],
    request_id: str,
    raw: bytes,
    *,
    cache_hit: bool = False,
) -> dict[str, Any]:
    """Record the plan when asked (or by the client's default); return the response to send.

    The optimize route calls this after the plan is computed, with the body's bytes as it
    received them (`raw`): asking `request.body()` again re-streamed them through the ASGI
    receive replay, ~22 µs of every recorded request in the running app. `cache_hit`: `result` is
    this request's own dict, a result-cache hit's copy, so the placement fields are added to it
    instead of to a copy (the fresh answer's dict goes into the result cache as it is), and its
    answer part is remembered for the next hit (`Ledger._parts_row`). It
    never fails the request for database trouble: the placement fields and a warning say what
    happened.
    """
    ledger = get_state(request).ledger
    client_id = client_id_from_scope(request.scope)
    if ledger is None:
        if body.record:
            return {**result, "warnings": [*result["warnings"], "savings ledger disabled; not recorded"]}
        return result
    if not ledger.wants_record(body.record, client_id):
        return result
    key = _idempotency_key(_header(request, b"idempotency-key"))
    try:
        # Without a write timeout (the default) the row is queued synchronously; with one the
        # request waits for its commit (up to the timeout).
        fields = ledger.queue_optimize(body, result, client_id, request_id, key, raw, cache_hit)
        if fields is None:
            fields = await ledger.record_optimize(
                request=body,
                result=result,
                client_id=client_id,
                request_id=request_id,
                idempotency_key=key,
                raw=raw,
                cache_hit=cache_hit,
            )
    except IdempotencyConflict:
        raise
    except Exception:  # the plan is good whatever happens to its recording
        log.exception("recording the placement failed")
        return {**result, "warnings": [*result["warnings"], "placement not recorded (ledger error)"]}
    warning = fields.pop("warning", None)
    out = result if cache_hit else dict(result)
    out.update(fields)
    if warning is not None:
        out["warnings"] = [*result["warnings"], warning]
    return out


def _parse_bound(value: str | None, name: str, default: datetime) -> datetime:
    if value is None:
        return default
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            f"'{name}' must be a date (2026-06-01) or an RFC 3339 time", ("query", name)
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidInput(f"'{name}' needs a UTC offset (e.g. Z)", ("query", name))
    return parsed.astimezone(UTC)


# ----- routes -----


@router.post(
    "/v1/placements",
    status_code=201,
    response_model=PlacementAckOut,
    responses={200: {"model": PlacementAckOut}, 202: {"model": PlacementAckOut}, **_ERRORS},
    summary="Record a placement the caller decided on itself",
    operation_id="record_placement",
)
async def record_placement(
    body: PlacementIn,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=1024)] = None,
) -> Response:
    """201 committed, 200 an idempotent replay, 202 accepted and queued (database slow or down)."""
    ledger = _ledger(request)
    ack = await ledger.record_caller(
        body=body.model_dump(mode="json", exclude_none=True),
        client_id=client_id_from_scope(request.scope),
        request_id=current_request_id(request),
        idempotency_key=_idempotency_key(idempotency_key),
    )
    replayed = ack.written is not None and ack.written.replayed
    status = 202 if ack.queued else 200 if replayed else 201
    data = {
        "placement_id": ack.placement_id,
        "recorded": ack.recorded,
        "queued": ack.queued,
        "replayed": replayed,
    }
    return _json(data, status)


@router.get(
    "/v1/placements/{placement_id}",
    response_model=PlacementOut,
    responses=_ERRORS,
    summary="One recorded placement with its forecast, outcome and realised figures",
    operation_id="get_placement",
)
async def get_placement(placement_id: str, request: Request) -> Response:
    """The stored placement (404 when unknown or another client's)."""
    ledger = _ledger(request)
    row = await ledger.get(ledger.viewer(client_id_from_scope(request.scope)), placement_id)
    return _json({k: _iso(v) for k, v in row.items() if k not in ("fingerprint",)})


@router.post(
    "/v1/placements/{placement_id}/outcome",
    response_model=PlacementOut,
    responses=_ERRORS,
    summary="Report what actually ran (start, end, location, measured energy)",
    operation_id="placement_outcome",
)
async def placement_outcome(placement_id: str, body: OutcomeIn, request: Request) -> Response:
    """Store the outcome; the placement is reconciled again with it. Repeating it is harmless."""
    ledger = _ledger(request)
    row = await ledger.outcome(
        ledger.viewer(client_id_from_scope(request.scope)), placement_id, body.model_dump(exclude_none=True)
    )
    return _json({k: _iso(v) for k, v in row.items() if k not in ("fingerprint",)})


@router.get(
    "/v1/reports/savings",
    response_model=SavingsReportOut,
    responses={200: {"content": {"text/csv": {}}}, **_ERRORS},
    summary="Savings over time: forecast vs realised, grouped by client, location, day, week or month",
    operation_id="savings_report",
)
async def savings_report(
    request: Request,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    group_by: Annotated[Literal["client", "location", "day", "week", "month"], Query()] = "month",
    client: Annotated[str | None, Query(max_length=64, description="Admin only: one client")] = None,
) -> Response:
    """JSON by default; CSV with `Accept: text/csv`. Range [from, to) on the planned start."""
    assert group_by in GROUP_BY
    ledger = _ledger(request)
    now = ledger.clock().replace(microsecond=0)
    end = _parse_bound(to, "to", now)
    start = _parse_bound(from_, "from", end - timedelta(days=_DEFAULT_REPORT_DAYS))
    report = await ledger.report(
        ledger.viewer(client_id_from_scope(request.scope)),
        group_by=group_by,
        start=start,
        end=end,
        client=client,
    )
    if "text/csv" in request.headers.get("accept", ""):
        return Response(to_csv(report), media_type="text/csv; charset=utf-8")
    return _json(report)


# ----- installation -----


async def _not_found(request: Request, exc: Exception) -> Response:
    # The same answer for another client's id (ids cannot be probed) and for a placement that
    # was answered `queued: true` and is not committed yet (the default answers before the
    # commit; with a healthy database it lands within a commit interval, ≤ 0.2 s).
    return problem_response(
        404,
        "No placement with this id for this client (one answered 'queued: true' is readable once "
        "committed, with a healthy database within a second)",
        type_=_TYPE_BASE + "placement-not-found",
    )


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem_response(409, str(exc), type_=_TYPE_BASE + "idempotency-conflict")


async def _unavailable(request: Request, exc: Exception) -> Response:
    detail = (
        "The savings ledger is disabled"
        if str(exc) == "disabled"
        else "The ledger database is unavailable; retry later"
    )
    return problem_response(
        503, detail, type_=_TYPE_BASE + "ledger-unavailable", headers={"Retry-After": "30"}
    )


async def _queue_full(request: Request, exc: Exception) -> Response:
    return problem_response(
        503,
        "The ledger database is unavailable and its queue is full; the placement was not recorded",
        type_=_TYPE_BASE + "ledger-unavailable",
        headers={"Retry-After": "30"},
    )


def install(app: FastAPI) -> None:
    """Register the routes and their error mapping on the app (one call from `create_app`)."""
    app.include_router(router)
    app.add_exception_handler(PlacementNotFound, _not_found)
    app.add_exception_handler(IdempotencyConflict, _conflict)
    app.add_exception_handler(LedgerUnavailable, _unavailable)
    app.add_exception_handler(QueueFull, _queue_full)
