"""`to_query` shares the location queries of equal location lists, and only of equal ones.

The memo is keyed on what each spec carries into the service; these tests pin that a list
differing in any of those fields, in order or in length gets its own queries, and that every
query keeps its own position for error messages.
"""

from __future__ import annotations

from typing import Any

from carbon_optimizer.api.convert import to_query
from carbon_optimizer.api.schemas import OptimizeRequest


def _body(locations: list[dict[str, Any]]) -> OptimizeRequest:
    return OptimizeRequest.model_validate(
        {"workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4}, "locations": locations}
    )


LOCATIONS: list[dict[str, Any]] = [
    {"provider": "aws", "region": "eu-west-1"},
    {"zone": "FR", "price_usd_per_hour": 0.3},
    {"provider": "gcp", "region": "europe-west1"},
]


def test_equal_lists_share_their_queries_with_each_position_named() -> None:
    first = to_query(_body(LOCATIONS), "a").locations
    again = to_query(_body([dict(item) for item in LOCATIONS]), "b").locations
    assert first is not None
    assert again is not None
    assert first is again  # the same immutable queries
    assert [q.loc for q in first] == [("body", "locations", i) for i in range(3)]
    assert [(q.provider, q.region, q.zone, q.price_usd_per_hour) for q in first] == [
        ("aws", "eu-west-1", None, None),
        (None, None, "FR", 0.3),
        ("gcp", "europe-west1", None, None),
    ]


def test_a_list_differing_in_any_carried_field_order_or_length_gets_its_own() -> None:
    base = to_query(_body(LOCATIONS), "a").locations
    assert base is not None
    variants = [
        [LOCATIONS[0], {"zone": "FR", "price_usd_per_hour": 0.31}, LOCATIONS[2]],  # price
        [LOCATIONS[0], {"zone": "DE", "price_usd_per_hour": 0.3}, LOCATIONS[2]],  # zone
        [{"provider": "aws", "region": "us-east-1"}, *LOCATIONS[1:]],  # region
        [LOCATIONS[1], LOCATIONS[0], LOCATIONS[2]],  # order
        LOCATIONS[:2],  # length
    ]
    for locations in variants:
        got = to_query(_body(locations), "c").locations
        assert got is not None
        assert got is not base
        assert [(q.provider, q.region, q.zone, q.price_usd_per_hour) for q in got] == [
            (item.get("provider"), item.get("region"), item.get("zone"), item.get("price_usd_per_hour"))
            for item in locations
        ]
        assert [q.loc for q in got] == [("body", "locations", i) for i in range(len(locations))]
