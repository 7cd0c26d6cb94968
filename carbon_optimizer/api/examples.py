"""Whole-body request examples for the OpenAPI document (the `/docs` "Try it out" defaults).

Each one answers 200 on the embedded default (no key, no Redis) — `tests/api/test_openapi_docs.py`
posts every one — so a reader can press Execute and see a real answer. The first is Swagger UI's
default. Times are left out on purpose: the window then starts now, so the examples never expire.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi.openapi.models import Example

OPTIMIZE_EXAMPLES: Final[dict[str, Example]] = {
    "carbon": Example(
        summary="Greenest zone and start for a 3-hour job (carbon only, no prices needed)",
        value={
            "workload": {"duration_minutes": 180, "vcpus": 8, "memory_gib": 32},
            "locations": [{"zone": "DE"}, {"zone": "FR"}, {"zone": "GB"}],
            "objective": {"mode": "carbon"},
        },
    ),
    "balanced": Example(
        summary="Carbon and price together across cloud regions and a priced zone",
        value={
            "workload": {"duration_minutes": 180, "vcpus": 8, "memory_gib": 32},
            "locations": [
                {"provider": "aws", "region": "us-east-1"},
                {"provider": "gcp", "region": "europe-west1"},
                {"zone": "DE", "price_usd_per_hour": 0.35},
            ],
            "objective": {"mode": "balanced", "carbon_weight": 0.5},
        },
    ),
    "gpu": Example(
        summary="A one-GPU training job: the cheapest-and-greenest A100 instance",
        value={
            "workload": {
                "duration_minutes": 240,
                "vcpus": 12,
                "memory_gib": 85,
                "gpu": {"count": 1, "model": "A100"},
            },
            "locations": [
                {"provider": "gcp", "region": "us-central1"},
                {"provider": "gcp", "region": "europe-west4"},
                {"provider": "aws", "region": "us-east-1"},
            ],
            "objective": {"mode": "balanced", "carbon_weight": 0.7},
        },
    ),
    "providers": Example(
        summary="Every catalogued region of one provider, carbon first",
        value={
            "workload": {"duration_minutes": 60, "vcpus": 4, "memory_gib": 16},
            "providers": ["gcp"],
            "objective": {"mode": "carbon"},
            "max_results": 5,
        },
    ),
}


def example_bodies() -> dict[str, dict[str, Any]]:
    """The example bodies by name (for tests and the CLI docs)."""
    return {name: dict(example.get("value") or {}) for name, example in OPTIMIZE_EXAMPLES.items()}
