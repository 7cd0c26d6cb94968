"""Operator routes under /v1/admin, for the client ids listed in `admin_client_ids` only.

`POST /v1/admin/zones/{zone}/clear-negative` forgets a zone's negative cache state (the `<key>:neg`
markers of every kind, range and signal) in the shared store, so every worker and replica asks the
upstream again at once — the lever after a fixed token, a plan upgrade or an upstream blip that
left "no data" answers behind. Local copies of a marker in other workers live at most
`cache.negative_base_s` (5 s). The same lever is `carbon-optimizer cache clear-negative ZONE`.

Why client ids, not a separate admin key: the API key check already ran (the id is the hash of the
caller's key, never the key), so an operator lists the ids of keys they trust; with no key
configured the API is open and the admin routes are closed.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from carbon_optimizer.api.errors import problem_response
from carbon_optimizer.api.schemas import ProblemOut
from carbon_optimizer.api.state import get_state
from carbon_optimizer.errors import UnknownZone
from carbon_optimizer.logging_config import client_id_from_scope

router = APIRouter(tags=["admin"])


class ClearNegativeOut(BaseModel):
    """What a clear-negative call deleted."""

    zone: str = Field(description="The zone whose negative cache state was cleared.")
    cleared: dict[str, int] = Field(
        description="Live source → negative markers deleted from the shared store (-1: the store could "
        "not be swept; try again)."
    )


@router.post(
    "/v1/admin/zones/{zone}/clear-negative",
    summary="Clear a zone's negative cache state for every replica (admin keys only)",
    responses={
        200: {"model": ClearNegativeOut, "description": "Markers deleted per live source"},
        403: {"model": ProblemOut, "description": "The caller's key is not an admin key"},
        422: {"model": ProblemOut, "description": "Not a zone key"},
    },
)
async def clear_negative(zone: str, request: Request) -> Response:
    """Delete `zone`'s negative markers in the shared store and this worker's local tier."""
    state = get_state(request)
    client_id = client_id_from_scope(request.scope)
    if client_id is None or client_id not in state.settings.admin_client_ids:
        return problem_response(403, "this route needs an API key whose client id is in ADMIN_CLIENT_IDS")
    clear = getattr(state.service.carbon, "clear_negative", None)
    try:
        cleared = await clear(zone) if clear is not None else {}
    except UnknownZone as exc:
        return problem_response(
            422, exc.message, errors=[{"loc": ["path", "zone"], "msg": exc.message, "type": "value_error"}]
        )
    body = {"zone": zone, "cleared": cleared}
    return Response(orjson.dumps(body), media_type="application/json")
