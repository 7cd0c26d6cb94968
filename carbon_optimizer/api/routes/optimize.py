"""POST /v1/optimize (and the unversioned alias /optimize)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from carbon_optimizer.api.convert import to_query
from carbon_optimizer.api.examples import OPTIMIZE_EXAMPLES
from carbon_optimizer.api.present import plan_json
from carbon_optimizer.api.routes.ledger import attach_placement
from carbon_optimizer.api.schemas import OptimizeRequest, OptimizeResponse, ProblemOut
from carbon_optimizer.api.state import get_state, request_id
from carbon_optimizer.domain.models import format_utc

router = APIRouter(tags=["optimize"])

_ERRORS: dict[int | str, dict[str, object]] = {
    413: {"model": ProblemOut, "description": "Body too large"},
    409: {"model": ProblemOut, "description": "Idempotency-Key reused for a different request (ledger)"},
    415: {"model": ProblemOut, "description": "Content-Type is not JSON"},
    422: {"model": ProblemOut, "description": "Invalid input or nothing feasible"},
    503: {"model": ProblemOut, "description": "No data source can answer"},
}


async def _optimize(
    body: Annotated[OptimizeRequest, Body(openapi_examples=OPTIMIZE_EXAMPLES)], request: Request
) -> Response:
    state = get_state(request)
    rid = request_id(request)
    raw = await request.body()  # already buffered: Starlette keeps it after validation
    minute = int(state.service.clock().timestamp() // 60)
    bypass = "no-cache" in request.headers.get("cache-control", "")
    cached = None if bypass else state.result_cache.get(raw, minute)
    if cached is not None:
        result = {**cached, "request_id": rid, "generated_at": format_utc(state.service.clock())}
        answer = await attach_placement(request, body, result, rid)  # savings ledger (issue 15)
        return Response(orjson.dumps(answer), media_type="application/json", headers=_HIT)
    result = plan_json(await state.service.optimize(to_query(body, rid)))
    answer = await attach_placement(request, body, result, rid)
    encoded = orjson.dumps(answer)
    # Charged at the sent size (a placement adds a few fields): the answer is encoded once.
    state.result_cache.put(raw, minute, result, encoded_size=len(encoded))
    return Response(encoded, media_type="application/json", headers=_BYPASS if bypass else _MISS)


_HIT = {"x-result-cache": "hit"}
_MISS = {"x-result-cache": "miss"}
_BYPASS = {"x-result-cache": "bypass"}


router.add_api_route(
    "/v1/optimize",
    _optimize,
    methods=["POST"],
    response_model=OptimizeResponse,
    responses=_ERRORS,
    summary="Rank (location, start time) options for a workload by carbon and price",
    operation_id="optimize",
)
router.add_api_route(
    "/optimize",
    _optimize,
    methods=["POST"],
    response_model=OptimizeResponse,
    responses=_ERRORS,
    summary="Alias of /v1/optimize",
    operation_id="optimize_unversioned",
)
