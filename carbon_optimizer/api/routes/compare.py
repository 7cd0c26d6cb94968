"""POST /v1/compare/deployment: serverless vs VM cost and carbon of a recurring workload."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from carbon_optimizer.api.schemas import ProblemOut
from carbon_optimizer.api.schemas_compare import CompareDeploymentRequest, CompareDeploymentResponse
from carbon_optimizer.api.state import get_state, request_id
from carbon_optimizer.compare_deployment import (
    DeploymentComparer,
    DeploymentLocation,
    DeploymentQuery,
)
from carbon_optimizer.domain.serverless import DeploymentWorkload, Option, monthly_volume
from carbon_optimizer.providers.serverless_prices import ServerlessPriceChain

router = APIRouter(tags=["compare"])

_ERRORS: dict[int | str, dict[str, object]] = {
    413: {"model": ProblemOut, "description": "Body too large"},
    415: {"model": ProblemOut, "description": "Content-Type is not JSON"},
    422: {"model": ProblemOut, "description": "Invalid input (the problem names the field and the limit)"},
}
_BUNDLED_ONLY = ServerlessPriceChain()


def to_query(body: CompareDeploymentRequest, rid: str) -> DeploymentQuery:
    """Request schema → domain query (shared with the CLI)."""
    profile = tuple(body.hourly_profile) if body.hourly_profile is not None else None
    volume = monthly_volume(profile) if profile is not None else float(body.invocations_per_month or 0.0)
    workload = DeploymentWorkload(
        invocations_per_month=volume,
        duration_ms=body.duration_ms,
        memory_mb=body.memory_mb,
        cpu_architecture=body.cpu_architecture,
        hourly_profile=profile,
        peak_concurrency=body.peak_concurrency,
        request_kb=body.request_kb,
        response_kb=body.response_kb,
        egress_gb_per_month=body.egress_gb_per_month,
        trigger=body.trigger,
        free_tier=body.free_tier,
        per_instance_concurrency=body.per_instance_concurrency,
        cloud_run_vcpu=body.cloud_run_vcpu,
        flex_instance_memory_mb=body.flex_instance_memory_mb,
        vcpu_per_invocation=body.vcpu_per_invocation,
        vm_target_utilization=body.vm_target_utilization,
        vm_min_instances=body.vm_min_instances,
        vm_allow_burstable=body.vm_allow_burstable,
    )
    return DeploymentQuery(
        workload=workload,
        locations=[
            DeploymentLocation(loc.provider, loc.region, ("body", "locations", i))
            for i, loc in enumerate(body.locations)
        ],
        options=tuple(Option(o) for o in body.options) if body.options else None,
        gcp_egress=body.gcp_egress_pricing,
        curve_points=body.curve_points,
        request_id=rid,
    )


async def _compare(body: CompareDeploymentRequest, request: Request) -> Response:
    state = get_state(request)
    service = state.service
    comparer = DeploymentComparer(
        catalog=state.catalog,
        prices=service.prices,
        fallback_prices=service.fallback_prices,
        serverless=state.serverless_prices or _BUNDLED_ONLY,
        clock=service.clock,
    )
    result = await comparer.compare(to_query(body, request_id(request)))
    return Response(orjson.dumps(result), media_type="application/json")


router.add_api_route(
    "/v1/compare/deployment",
    _compare,
    methods=["POST"],
    response_model=CompareDeploymentResponse,
    responses=_ERRORS,
    summary="Serverless (Lambda, Azure Functions, Cloud Run) vs VM: monthly cost, carbon, break-even",
    operation_id="compare_deployment",
)
