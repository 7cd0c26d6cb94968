"""The optimize path's row: the same row the generic builder makes.

`Ledger._optimize_row` writes the row out in one function (the answer's part on the request, the
body's part — workload, and with an Idempotency-Key the fingerprint — possibly a loop turn later),
remembers what a raw body gives it and parses each answer time once; none of that may change what
is stored. The reference here is the generic `Ledger._row` fed exactly as the optimize path fed it
before (the body's JSON form, the answer's best option and baseline), with the JSON columns as
their text; a row without an Idempotency-Key has no fingerprint (nothing compares it).
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from carbon_optimizer.api.schemas import OptimizeRequest
from carbon_optimizer.ledger.ledger import Ledger, catalog_resolver, id_tails, placement_id_for
from carbon_optimizer.ledger.models import placements
from carbon_optimizer.ledger.recorder import Deferred, Recorder
from carbon_optimizer.ledger.repository import Existing
from carbon_optimizer.ledger.rows import OPTIMIZE_COLUMNS, OWN, SHARED_FROM, AnswerPart
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.settings import LedgerSettings
from tests.ledger.helpers import T0, option

BODY = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
    "locations": [{"provider": "aws", "region": "eu-west-1"}, {"zone": "FR", "price_usd_per_hour": 0.3}],
    "objective": {"mode": "balanced"},
    "record": True,
}
CREATED = T0 + timedelta(microseconds=123456)


class NullWriter:
    """The recorder is never started here: nothing is written."""

    async def insert_placements(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Existing]:
        raise AssertionError("not written in these tests")

    async def close(self) -> None:
        return None


def _ledger(delay_s: float = 3600) -> Ledger:
    recorder = Recorder(NullWriter(), queue_max=10, write_timeout_s=0, retry_interval_s=1)
    return Ledger(
        None,  # type: ignore[arg-type]  # the repository is not used to build rows
        recorder,
        settings=LedgerSettings(reconcile_delay_s=delay_s),
        resolver=catalog_resolver(load_region_catalog()),
        clock=lambda: CREATED,
        signal="location-based average, lifecycle",
    )


def _reference(
    ledger: Ledger, request: BaseModel | Mapping[str, Any], result: Mapping[str, Any], key: str | None
) -> dict[str, Any]:
    """The row as the generic builder makes it from the optimize inputs."""
    body = (
        dict(request) if isinstance(request, Mapping) else request.model_dump(mode="json", exclude_none=True)
    )
    best, baseline = result["best"], result.get("baseline")

    def key_of(location: Mapping[str, Any]) -> str:
        if location.get("provider"):
            return f"{location['provider']}/{location['region']}"
        return f"zone/{location['zone']}"

    row = ledger._row(
        placement_id="p1",
        client_id="alice",
        origin="optimize",
        request_id="rid",
        idempotency_key=key,
        fingerprint_of={k: v for k, v in body.items() if k not in ("record", "signal")},
        workload=body.get("workload") or {},
        chosen=best,
        chosen_key=key_of(best["location"]),
        chosen_zone=str(best["location"]["zone"]),
        baseline=baseline,
        baseline_key=key_of(baseline["location"]) if baseline else None,
        baseline_zone=str(baseline["location"]["zone"]) if baseline else None,
        baseline_name=(
            (
                "requested baseline"
                if body.get("baseline") is not None
                else "first requested location at the earliest start"
            )
            if baseline
            else None
        ),
        quality={"warnings": list(result.get("warnings", ())), "objective": result.get("objective")},
        created_at=CREATED,
    )
    row["workload"] = orjson.dumps(row["workload"]).decode()
    row["quality"] = orjson.dumps(row["quality"]).decode()
    if key is None:
        row["fingerprint"] = None  # only the Idempotency-Key check reads it
    return row


def _result(*, baseline: bool, later_baseline_end: bool = False) -> dict[str, Any]:
    best = option("DE", T0 + timedelta(hours=3), provider="aws", region="eu-west-1", kwh=2.5, intensity=80)
    best["emissions_g"] = None  # falls back to energy x intensity
    out: dict[str, Any] = {
        "best": best,
        "warnings": ["a warning"],
        "objective": {"mode": "balanced", "carbon_weight": 0.5},
    }
    if baseline:
        hours = 5.0 if later_baseline_end else 1.0
        out["baseline"] = option("FR", T0, hours=hours, intensity=400, cost=None)
    return out


@pytest.mark.parametrize(
    ("request_", "result", "key"),
    [
        (OptimizeRequest.model_validate(BODY), _result(baseline=True), None),
        (
            OptimizeRequest.model_validate({**BODY, "baseline": {"location": {"zone": "FR"}}}),
            _result(baseline=True, later_baseline_end=True),
            "key-1",
        ),
        (dict(BODY, signal="average"), _result(baseline=False), None),
    ],
    ids=["model, default baseline", "explicit baseline ending later, keyed", "mapping, no baseline"],
)
def test_the_optimize_row_is_the_generic_row(
    request_: BaseModel | Mapping[str, Any], result: dict[str, Any], key: str | None
) -> None:
    ledger = _ledger()
    built = ledger._optimize_row("p1", request_, result, "alice", CREATED, "rid", key)
    assert built == _reference(ledger, request_, result, key)
    # Memoised parts give the same values on a second build (and after the memo was primed).
    assert ledger._optimize_row("p1", request_, result, "alice", CREATED, "rid", key) == built


@pytest.mark.parametrize("key", [None, "key-1"], ids=["no key", "keyed"])
def test_a_raw_body_remembers_what_it_gives_the_row_and_only_its_own(key: str | None) -> None:
    ledger = _ledger()
    one = OptimizeRequest.model_validate(BODY)
    other_body = {**BODY, "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 8}}
    other = OptimizeRequest.model_validate(other_body)
    result = _result(baseline=True)
    raw_one, raw_other = orjson.dumps(BODY), orjson.dumps(other_body)

    plain = ledger._optimize_row("p", one, result, "alice", CREATED, "rid", key)
    first = ledger._optimize_row("p", one, result, "alice", CREATED, "rid", key, raw_one)
    again = ledger._optimize_row("p", one, result, "alice", CREATED, "rid", key, raw_one)
    assert first == again == plain
    theirs = ledger._optimize_row("p", other, result, "alice", CREATED, "rid", key, raw_other)
    assert theirs == ledger._optimize_row("p", other, result, "alice", CREATED, "rid", key)
    assert theirs["workload"] != plain["workload"]
    assert orjson.loads(theirs["workload"])["duration_minutes"] == 60
    if key is None:
        assert theirs["fingerprint"] is plain["fingerprint"] is None
    else:
        assert theirs["fingerprint"] != plain["fingerprint"]
    # A body first seen without a key still gets its fingerprint when it comes with one.
    keyed = ledger._optimize_row("p", one, result, "alice", CREATED, "rid", "key-2", raw_one)
    assert keyed["fingerprint"] == _reference(ledger, one, result, "key-2")["fingerprint"]


@pytest.mark.parametrize(
    "workload",
    [
        {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
        {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16, "power_watts": 250.5},
        {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16, "gpu": {"count": 2, "model": "A100"}},
        {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16, "instance_types": {"aws": "m5.xlarge"}},
    ],
    ids=["plain", "power", "gpu (unhashable)", "pinned types (unhashable)"],
)
def test_an_unkeyed_row_s_workload_is_the_body_s_workload_and_bodies_with_equal_workloads_share_it(
    workload: dict[str, Any],
) -> None:
    # Unkeyed rows remember the workload's JSON by the validated workload's values (bodies that
    # differ in their window mostly carry one of a few workload shapes); values that cannot be
    # hashed skip the memo. Either way the row stores what the body's own dump gives.
    ledger = _ledger()
    result = _result(baseline=True)
    expected = orjson.dumps(
        OptimizeRequest.model_validate({**BODY, "workload": workload}).workload.model_dump(
            mode="json", exclude_none=True
        )
    ).decode()
    rows = [
        ledger._optimize_row(
            "p",
            OptimizeRequest.model_validate({**BODY, "workload": workload, "window": window}),
            result,
            "alice",
            CREATED,
            "rid",
            None,
        )
        for window in ({}, {"earliest_start": "2031-01-01T00:00:00Z"})
    ]
    assert [row["workload"] for row in rows] == [expected, expected]
    hashable = "gpu" not in workload and "instance_types" not in workload
    assert (rows[0]["workload"] is rows[1]["workload"]) is hashable  # remembered, or dumped anew
    other = {**workload, "duration_minutes": 121}
    differs = ledger._optimize_row(
        "p",
        OptimizeRequest.model_validate({**BODY, "workload": other}),
        result,
        "alice",
        CREATED,
        "rid",
        None,
    )
    assert orjson.loads(differs["workload"])["duration_minutes"] == 121
    assert orjson.loads(differs["workload"]) == {**orjson.loads(expected), "duration_minutes": 121}


def test_the_due_date_follows_the_later_end_and_the_delay() -> None:
    ledger = _ledger(delay_s=1800)
    for later in (False, True):
        result = _result(baseline=True, later_baseline_end=later)
        row = ledger._optimize_row("p", OptimizeRequest.model_validate(BODY), result, "a", CREATED, "r", None)
        ends: list[datetime] = [row["end_at"], row["baseline_end_at"]]
        assert row["due_at"] == max(ends) + timedelta(seconds=1800)


async def test_new_placement_ids_are_distinct_time_ordered_version_7_uuids() -> None:
    ledger = _ledger()
    before_ms = time.time_ns() // 1_000_000
    ids = [ledger._new_id() for _ in range(700)]  # past the pool, without yielding once
    # Served from the pool, refilled 256 at a time when empty (not one read per id while the
    # caller never yields, as a callback-based refill did): 3 reads, 68 tails left.
    assert len(ledger._tails) == 3 * 256 - 700
    await asyncio.sleep(0.05)  # past the 16 ms a time part is reused for
    later = [ledger._new_id() for _ in range(3)]
    after_ms = time.time_ns() // 1_000_000
    caller = placement_id_for("alice", None)  # POST /v1/placements without a key: the same kind
    assert len(set(ids + later + [caller])) == 704
    for text in [*ids, *later, caller]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before_ms <= parsed.int >> 80 <= after_ms  # the creation time, in milliseconds
    assert max(ids) < min(later)  # a later millisecond sorts after (the index appends)
    tails = id_tails(4000)
    assert len(set(tails)) == 4000  # the random part alone already distinct


def test_an_idempotency_key_gives_the_same_id_every_time() -> None:
    first = placement_id_for("alice", "k-1")
    assert first == placement_id_for("alice", "k-1") != placement_id_for("bob", "k-1")
    assert uuid.UUID(first).version == 5


async def test_a_deferred_row_is_built_on_the_next_loop_turn_and_keeps_nothing_of_its_inputs() -> None:
    recorder = Recorder(NullWriter(), queue_max=10, write_timeout_s=0, retry_interval_s=1)

    class Body:
        """Stands in for the request's body and response."""

    body = Body()
    alive = weakref.ref(body)

    def build(of: Body) -> Mapping[str, Any]:
        return {"id": "d1", "fingerprint": "f", "of": type(of).__name__}

    def deferred(of: Body) -> Deferred:
        return Deferred("d1", lambda: build(of))

    ack = recorder.offer(deferred(body), origin="optimize")
    assert ack.queued
    del body
    gc.collect()
    assert alive() is not None  # until the loop turns, the queued item holds its source
    await asyncio.sleep(0)  # one loop turn: the row is built
    gc.collect()
    assert alive() is None  # the queue now holds the row, not what it was built from
    assert recorder.depth == 1


def test_a_fresh_answer_s_part_is_not_remembered_and_the_first_hit_s_is() -> None:
    # The route tells the ledger whether an answer is a result-cache hit: only then is its part
    # kept for the next rows of the same answer objects (a fresh answer's cannot be asked for
    # again before it is a hit, and kept it would outlive 256 unique answers).
    ledger = _ledger()
    stored = _result(baseline=True)
    fresh = ledger._parts_row("p1", stored, False, "alice", CREATED, "r1", None, False)
    assert ledger._answer_parts == {}
    hit = ledger._parts_row("p2", {**stored, "request_id": "r2"}, False, "alice", CREATED, "r2", None, True)
    again = ledger._parts_row("p3", {**stored, "request_id": "r3"}, False, "bob", CREATED, "r3", None, True)
    assert hit.part is again.part is not fresh.part
    assert len(ledger._answer_parts) == 1
    assert dict(fresh) | {"id": "p2", "request_id": "r2"} == dict(hit)


async def test_hits_of_one_stored_answer_take_its_body_s_workload_and_no_other_answer_does() -> None:
    # The route's default recording (`queue_optimize`): a hit's row takes the workload's JSON
    # remembered with its stored answer's part (a stored answer comes from one body), so it is
    # looked up once per stored answer; another stored answer, from another body, has its own.
    ledger = _ledger()
    small = OptimizeRequest.model_validate(BODY)
    large = OptimizeRequest.model_validate(
        {**BODY, "workload": {"duration_minutes": 120, "vcpus": 16, "memory_gib": 16}}
    )
    stored_small, stored_large = _result(baseline=True), _result(baseline=True)
    queued: list[Any] = []
    ledger.recorder.put_new = queued.append  # type: ignore[method-assign,assignment]  # see what is queued
    for request_, stored in ((small, stored_small), (large, stored_large), (small, stored_small)):
        for i in range(2):
            hit = {**stored, "request_id": f"r{i}"}
            fields = ledger.queue_optimize(request_, hit, None, f"r{i}", None, None, True)
            assert fields is not None
            assert fields["queued"] is True
    fresh = ledger.queue_optimize(large, {**_result(baseline=True), "request_id": "f"}, None, "f", None)
    assert fresh is not None
    expected = [_reference(ledger, r, _result(baseline=True), None)["workload"] for r in (small, large)]
    assert expected[0] != expected[1]
    workloads = [row.workload for row in queued]
    assert workloads == [expected[0]] * 2 + [expected[1]] * 2 + [expected[0]] * 2 + [expected[1]]
    assert queued[0].part is queued[5].part is not queued[2].part  # per stored answer
    assert queued[6].part is not queued[2].part  # a fresh answer's part is its own


def _queue_hits(ledger: Ledger, asked: Sequence[Any], stored: dict[str, Any]) -> list[Any]:
    """What `queue_optimize` queues for result-cache hits of `stored` asked for by `asked`, in turn."""
    queued: list[Any] = []
    ledger.recorder.put_new = queued.append  # type: ignore[method-assign,assignment]  # see what is queued
    for i, request_ in enumerate(asked):
        fields = ledger.queue_optimize(
            request_, {**stored, "request_id": f"r{i}"}, "alice", f"r{i}", None, None, True
        )
        assert fields is not None
        if fields.get("queued"):
            assert fields["placement_id"] == queued[-1].id
        else:
            queued.append(fields)  # not recorded: what it says instead
    return queued


def test_every_recorded_hit_queues_the_general_path_s_row_whatever_the_request_asks() -> None:
    # `queue_optimize` makes the row of a hit whose answer part is remembered in one step
    # (`Ledger._hit_row`) and leaves every other case to the general path. Hits of one stored
    # answer asked for with the default baseline, a named one, the marginal signal and as a
    # mapping, in an order that switches between them, must queue what the general path alone
    # queues (a ledger whose `_hit_row` always declines), and the one step must have been taken.
    plain = OptimizeRequest.model_validate(BODY)
    named = OptimizeRequest.model_validate({**BODY, "baseline": {"location": {"zone": "FR"}}})
    marginal = OptimizeRequest.model_validate({**BODY, "signal": "marginal"})
    mapping = dict(BODY, signal="average")
    asked = [plain, plain, plain, named, named, plain, marginal, plain, mapping, mapping, plain, named]
    stored = _result(baseline=True)
    fast, general = _ledger(), _ledger()
    general._hit_row = lambda *_: None  # type: ignore[method-assign]
    general_path = fast._optimize_source
    taken: list[str] = []

    def counted(*args: Any) -> Any:
        taken.append(args[3])  # the request id
        return general_path(*args)

    fast._optimize_source = counted  # type: ignore[method-assign,assignment]
    one, other = _queue_hits(fast, asked, stored), _queue_hits(general, asked, stored)
    own = {"id", "created_at"}
    assert [{k: v for k, v in dict(r).items() if k not in own} for r in one] == [
        {k: v for k, v in dict(r).items() if k not in own} for r in other
    ]
    assert one[6] == other[6]  # the marginal hit: not recorded, and said why
    assert one[6]["placement_id"] is None
    assert "average intensity" in one[6]["warning"]
    assert len({r["id"] for r in one if "id" in r}) == len(asked) - 1
    # The general path made the first row of each part (the first plain, named, plain again and
    # named again: each takes the memo over), the marginal and the mappings (no attributes);
    # the one step the repeats, the plain after the mappings too (their part has its flag).
    assert taken == ["r0", "r3", "r5", "r6", "r8", "r9", "r11"]
    # One body per stored answer (as the result cache hands them out): the reference row.
    for row in _queue_hits(_ledger(), [plain] * 3, stored):
        assert dict(row) | {"id": "p1", "request_id": "rid"} == _reference(_ledger(), plain, stored, None)


def test_a_result_cache_hit_reuses_the_answer_part_and_only_that() -> None:
    """A hit wraps the stored answer's objects in a new dict: same answer part, the request's own fields."""
    ledger = _ledger()
    stored = _result(baseline=True)
    request_ = OptimizeRequest.model_validate(BODY)
    first = ledger._optimize_row("p1", request_, {**stored, "request_id": "r1"}, "alice", CREATED, "r1", None)
    later = CREATED + timedelta(minutes=3)
    hit = ledger._optimize_row("p2", request_, {**stored, "request_id": "r2"}, "bob", later, "r2", "key-2")
    own = {"id", "client_id", "created_at", "request_id", "idempotency_key", "fingerprint"}
    assert {k: v for k, v in hit.items() if k not in own} == {k: v for k, v in first.items() if k not in own}
    assert first["fingerprint"] is None
    assert hit["fingerprint"] == _reference(ledger, request_, stored, "key-2")["fingerprint"]
    assert (hit["id"], hit["client_id"], hit["created_at"], hit["request_id"], hit["idempotency_key"]) == (
        "p2",
        "bob",
        later,
        "r2",
        "key-2",
    )
    assert list(hit) == list(first)  # same columns in the same order
    assert hit == _reference(ledger, request_, {**stored, "request_id": "r2"}, "key-2") | {
        "id": "p2",
        "client_id": "bob",
        "created_at": later,
        "request_id": "r2",
    }
    # Another answer (equal values, other objects) is built afresh, and an explicit baseline is
    # another row (its name) even for the same answer objects.
    fresh = ledger._optimize_row("p3", request_, _result(baseline=True), "alice", CREATED, "r3", None)
    assert {k: v for k, v in fresh.items() if k not in own} == {
        k: v for k, v in first.items() if k not in own
    }
    explicit = OptimizeRequest.model_validate({**BODY, "baseline": {"location": {"zone": "FR"}}})
    named = ledger._optimize_row("p4", explicit, {**stored}, "alice", CREATED, "r4", None)
    assert named["baseline_name"] == "requested baseline" != first["baseline_name"]


def test_an_optimize_row_has_the_tables_columns_in_table_order_and_reads_like_a_dict() -> None:
    in_table = tuple(c.name for c in placements.columns if c.name in OPTIMIZE_COLUMNS)
    assert in_table == OPTIMIZE_COLUMNS
    assert set(OPTIMIZE_COLUMNS[:SHARED_FROM]) == set(OWN) | {"origin"}
    row = _ledger()._optimize_row(
        "p1", OptimizeRequest.model_validate(BODY), _result(baseline=True), "a", CREATED, "r", None
    )
    as_dict = dict(row)
    assert list(as_dict) == list(OPTIMIZE_COLUMNS)
    assert row == as_dict
    assert row.get("id") == row["id"] == "p1"
    assert row.get("zone") == "DE"
    assert row.get("not a column", "default") == "default"
    assert len(row) == len(OPTIMIZE_COLUMNS)
    with pytest.raises(ValueError, match="exactly the optimize row's columns"):
        AnswerPart({"id": None})
