"""POST /v1/optimize (and the unversioned alias /optimize).

Both are `JsonBodyRoute`s (api/json_route.py): a well-formed JSON body is validated by
pydantic-core straight from its bytes and answered by `_optimize`; anything else takes FastAPI's
own handler (`_optimize_endpoint`, which also gives the OpenAPI document its body, examples and
responses) and reaches the very same `_optimize`. `install` puts them on the app's own router,
ahead of the others, so a request matches its route at the first try instead of walking the
docs routes and then an included router twice (FastAPI's `_IncludedRouter`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import Body, FastAPI, Request
from starlette.responses import Response

from carbon_optimizer.api.convert import to_query
from carbon_optimizer.api.examples import OPTIMIZE_EXAMPLES
from carbon_optimizer.api.json_route import JsonBodyRoute
from carbon_optimizer.api.present import plan_json
from carbon_optimizer.api.routes.ledger import attach_placement
from carbon_optimizer.api.schemas import OptimizeRequest, OptimizeResponse, ProblemOut
from carbon_optimizer.api.state import get_state, request_id
from carbon_optimizer.domain.models import format_utc

_ERRORS: dict[int | str, dict[str, object]] = {
    413: {"model": ProblemOut, "description": "Body too large"},
    409: {"model": ProblemOut, "description": "Idempotency-Key reused for a different request (ledger)"},
    415: {"model": ProblemOut, "description": "Content-Type is not JSON"},
    422: {"model": ProblemOut, "description": "Invalid input or nothing feasible"},
    503: {"model": ProblemOut, "description": "No data source can answer"},
}


async def _optimize(request: Request, body: OptimizeRequest, raw: bytes) -> Response:
    """The answer to a validated body (`raw`: its bytes, the result cache's key)."""
    state = get_state(request)
    rid = request_id(request)
    minute = int(state.service.clock().timestamp() // 60)
    bypass = _no_cache(request.scope["headers"])
    key = state.result_cache.key(raw, minute)
    cached = None if bypass else state.result_cache.lookup(key)
    if cached is not None:
        result = {**cached, "request_id": rid, "generated_at": format_utc(state.service.clock())}
        # The savings ledger (issue 15); `result` is this request's own copy.
        answer = await attach_placement(request, body, result, rid, raw, cache_hit=True)
        return Response(orjson.dumps(answer), media_type="application/json", headers=_HIT)
    result = plan_json(await state.service.optimize(to_query(body, rid)))
    answer = await attach_placement(request, body, result, rid, raw)
    encoded = orjson.dumps(answer)
    # Charged at the sent size (a placement adds a few fields): the answer is encoded once.
    state.result_cache.store(key, result, encoded_size=len(encoded))
    return Response(encoded, media_type="application/json", headers=_BYPASS if bypass else _MISS)


def _no_cache(headers: list[tuple[bytes, bytes]]) -> bool:
    """`no-cache` in the first Cache-Control header (what `request.headers.get` would read), cheaply."""
    for name, value in headers:
        if name == b"cache-control":
            return b"no-cache" in value
    return False


# FastAPI's path, and the OpenAPI document's source. No docstring: FastAPI would publish it as
# the operation's description.
async def _optimize_endpoint(
    body: Annotated[OptimizeRequest, Body(openapi_examples=OPTIMIZE_EXAMPLES)], request: Request
) -> Response:
    raw = await request.body()  # already buffered: Starlette keeps it after validation
    return await _optimize(request, body, raw)


class _OptimizeRoute(JsonBodyRoute):
    """/v1/optimize's body validated by pydantic-core from the bytes (api/json_route.py)."""

    body_model = OptimizeRequest

    async def answer(self, request: Request, body: OptimizeRequest, raw: bytes) -> Response:
        """The same answer as FastAPI's path gives."""
        return await _optimize(request, body, raw)


_HIT = {"x-result-cache": "hit"}
_MISS = {"x-result-cache": "miss"}
_BYPASS = {"x-result-cache": "bypass"}

_ROUTES: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    (
        "/v1/optimize",
        {
            "summary": "Rank (location, start time) options for a workload by carbon and price",
            "operation_id": "optimize",
        },
    ),
    ("/optimize", {"summary": "Alias of /v1/optimize", "operation_id": "optimize_unversioned"}),
)


def install(app: FastAPI) -> None:
    """Register both routes on the app's router (call it before any other route is added).

    `name` keeps the route name the function gave before the endpoint was split in two.
    """
    for path, documented in _ROUTES:
        app.router.add_api_route(
            path,
            _optimize_endpoint,
            methods=["POST"],
            response_model=OptimizeResponse,
            responses=_ERRORS,
            tags=["optimize"],
            name="_optimize",
            route_class_override=_OptimizeRoute,
            **documented,
        )
