"""POST /v1/optimize (and the unversioned alias /optimize)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from carbon_optimizer.api.convert import to_query
from carbon_optimizer.api.schemas import OptimizeRequest, OptimizeResponse, ProblemOut
from carbon_optimizer.api.state import get_state, request_id

router = APIRouter(tags=["optimize"])

_ERRORS: dict[int | str, dict[str, object]] = {
    413: {"model": ProblemOut, "description": "Body too large"},
    415: {"model": ProblemOut, "description": "Content-Type is not JSON"},
    422: {"model": ProblemOut, "description": "Invalid input or nothing feasible"},
    503: {"model": ProblemOut, "description": "No data source can answer"},
}


async def _optimize(body: OptimizeRequest, request: Request) -> Response:
    state = get_state(request)
    result = await state.service.optimize(to_query(body, request_id(request)))
    return Response(orjson.dumps(result), media_type="application/json")


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
