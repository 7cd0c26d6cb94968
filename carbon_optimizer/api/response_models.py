"""Response models that `api/schemas.py` does not define yet (kept apart to avoid editing it).

`schemas.py` is the source of truth for requests and for the /v1/optimize answer; the /v1/estimate
answer had no pydantic model, so the typed client (carbon_optimizer.client) parses it with this
one. The field list mirrors `OptimizerService.estimate`; a test validates a real response against
it so the two cannot drift.
"""

from __future__ import annotations

from pydantic import BaseModel

from carbon_optimizer.api.schemas import EnergyModelOut


class EstimateResponse(BaseModel):
    """POST /v1/estimate answer: list cost of one instance type, with its energy and footprint."""

    provider: str
    region: str
    zone: str
    instance_type: str
    vcpus: float | None
    memory_gib: float | None
    gpu_count: int | None
    gpu_model: str | None
    hours: float
    price_type: str
    price_usd_per_hour: float
    cost_usd: float
    currency: str
    price_source: str
    as_of: str | None
    start: str
    end: str
    energy_kwh: float | None
    avg_carbon_intensity_g_per_kwh: float | None
    emissions_g: float | None
    carbon_source: str | None
    energy_model: EnergyModelOut
    warnings: list[str]
