"""The one table from errors to HTTP: every error leaves as RFC 9457 problem+json.

No stack traces, no internal exception text, no input echo (pydantic's `input`/`ctx` are dropped,
so a secret mistyped into a field can never be reflected back or logged from here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from carbon_optimizer.errors import (
    CarbonOptimizerError,
    DataUnavailable,
    InvalidInput,
    NothingFeasible,
    ProviderError,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://carbon-optimizer.dev/problems/"
log = logging.getLogger(__name__)

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build a problem+json response (usable from middleware too: no FastAPI needed)."""
    body: dict[str, Any] = {"type": type_, "title": title or _TITLES.get(status, "Error"), "status": status}
    if detail is not None:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def problem_bytes(status: int, detail: str, *, type_: str = "about:blank") -> bytes:
    """Serialised problem body for pure-ASGI middleware that writes responses itself."""
    return orjson.dumps(
        {"type": type_, "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    )


def _clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    cleaned: list[dict[str, Any]] = []
    for err in errors:
        loc = [part if isinstance(part, int | str) else str(part) for part in err.get("loc", ())]
        msg = str(err.get("msg", "invalid value"))
        cleaned.append({"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))})
    return cleaned


def _json_decode_detail(errors: Sequence[Any]) -> str | None:
    """For a body that is not JSON at all, say so and where ("body.96" alone reads like a field).

    FastAPI reports it as `loc: ["body", <character offset>]` with the decoder's message in
    `ctx.error`; the error entry keeps FastAPI's shape, only the detail gets the words.
    """
    for err in errors:
        if err.get("type") == "json_invalid":
            loc = err.get("loc", ())
            at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
            reason = (err.get("ctx") or {}).get("error")
            return f"Request body is not valid JSON{': ' + str(reason) if reason else ''}{at}"
    return None


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    errors = _clean_errors(raw)
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem_response(
        422,
        _json_decode_detail(raw)
        or (f"Request validation failed: {fields}" if fields else "Request validation failed"),
        type_=_TYPE_BASE + "validation",
        errors=errors,
    )


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400 and detail == _FASTAPI_BODY_PARSE_ERROR:
        # FastAPI answers 400 for a body it cannot decode (e.g. invalid UTF-8); the contract says
        # invalid input is a 422, so report it like any other unparseable JSON body.
        return problem_response(
            422,
            "Request body is not valid UTF-8 JSON",
            type_=_TYPE_BASE + "validation",
            errors=[{"loc": ["body"], "msg": "invalid JSON body", "type": "json_invalid"}],
        )
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


async def _invalid_input_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    errors = [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}] if exc.loc else None
    return problem_response(422, exc.message, type_=_TYPE_BASE + "invalid-input", errors=errors)


async def _nothing_feasible_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NothingFeasible)
    infeasible = [{"location": key, "reason": reason} for key, reason in exc.infeasible]
    return problem_response(
        422, exc.message, type_=_TYPE_BASE + "nothing-feasible", extra={"infeasible": infeasible}
    )


async def _data_unavailable_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DataUnavailable)
    return problem_response(
        503,
        exc.message,
        type_=_TYPE_BASE + "data-unavailable",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


async def _provider_error_handler(request: Request, exc: Exception) -> Response:
    # A provider error that escaped every fallback: nothing could answer. Say so without internals.
    assert isinstance(exc, ProviderError)
    log.warning("provider error reached the API edge: %s", type(exc).__name__)
    return problem_response(
        503,
        "No data source could answer this request right now",
        type_=_TYPE_BASE + "data-unavailable",
        headers={"Retry-After": "30"},
    )


async def _domain_error_handler(request: Request, exc: Exception) -> Response:
    log.error("unmapped domain error %s", type(exc).__name__)
    return problem_response(500, "The server could not complete this request")


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return problem_response(500, "The server could not complete this request")


def _is_json_probe(response: dict[str, Any]) -> bool:
    """A probe's 503 (`/readyz`) is its own small JSON body, not a problem."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/ReadinessOut")


def use_problem_media_type(schema: dict[str, Any]) -> None:
    """Document every 4xx/5xx response as `application/problem+json` with the ProblemOut schema.

    FastAPI documents error responses as `application/json` (and 422 as its own
    HTTPValidationError); this service sends RFC 9457 problem details for all of them.
    """
    problem_ref = {"$ref": "#/components/schemas/ProblemOut"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5") and isinstance(response, dict) and not _is_json_probe(response):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping; the most specific class wins (Starlette walks the MRO)."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(InvalidInput, _invalid_input_handler)
    app.add_exception_handler(NothingFeasible, _nothing_feasible_handler)
    app.add_exception_handler(DataUnavailable, _data_unavailable_handler)
    app.add_exception_handler(ProviderError, _provider_error_handler)
    app.add_exception_handler(CarbonOptimizerError, _domain_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
