"""The write queue when the database is down or slow: answer fast, queue (bounded), retry, lose nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from carbon_optimizer.ledger.recorder import Deferred, QueueFull, Recorder
from carbon_optimizer.ledger.repository import Existing
from carbon_optimizer.ledger.rows import OPTIMIZE_COLUMNS, AnswerPart, OptimizeRow
from tests.support.polling import eventually


class FlakyRepository:
    """Stands in for the database: fails (or stalls) while `down`, stores rows when up."""

    def __init__(self, *, down: bool = True, delay_s: float = 0.0) -> None:
        self.down = down
        self.delay_s = delay_s
        self.rows: dict[str, Mapping[str, Any]] = {}
        self.attempts = 0
        self.closed = False

    async def insert_placements(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Existing]:
        self.attempts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.down:
            raise ConnectionRefusedError("database down")
        existing = {str(r["id"]): Existing(str(r["id"]), None) for r in rows if r["id"] in self.rows}
        for row in rows:
            self.rows.setdefault(str(row["id"]), row)
        return existing

    async def close(self) -> None:
        self.closed = True


def _recorder(repo: FlakyRepository, **kwargs: Any) -> Recorder:
    options: dict[str, Any] = {"queue_max": 5, "write_timeout_s": 0.05, "retry_interval_s": 0.02}
    options.update(kwargs)
    recorder = Recorder(repo, **options)
    recorder.start()
    return recorder


async def test_database_down_answers_within_the_timeout_and_flushes_later() -> None:
    repo = FlakyRepository(down=True)
    recorder = _recorder(repo)
    try:
        began = time.monotonic()
        acks = [
            await recorder.submit({"id": f"p{i}", "fingerprint": "f"}, origin="optimize") for i in range(3)
        ]
        assert time.monotonic() - began < 3 * 0.05 + 0.2
        assert all(a.queued and not a.recorded for a in acks)
        assert recorder.depth == 3
        assert not recorder.healthy
        await eventually(lambda: repo.attempts >= 3, 3.0)  # retried while down
        repo.down = False
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert set(repo.rows) == {"p0", "p1", "p2"}  # every acknowledged row arrived
        assert recorder.healthy
    finally:
        await recorder.aclose()


async def test_slow_database_does_not_hold_the_request() -> None:
    repo = FlakyRepository(down=False, delay_s=0.5)
    recorder = _recorder(repo)
    try:
        began = time.monotonic()
        ack = await recorder.submit({"id": "slow", "fingerprint": "f"}, origin="optimize")
        assert ack.queued
        assert time.monotonic() - began < 0.3
        await eventually(lambda: "slow" in repo.rows, 3.0)
    finally:
        await recorder.aclose()


async def test_queue_is_bounded_and_retries_join_the_queued_row() -> None:
    repo = FlakyRepository(down=True)
    recorder = _recorder(repo, queue_max=2)
    try:
        await recorder.submit({"id": "a"}, origin="caller")
        await recorder.submit({"id": "b"}, origin="caller")
        # A retry of "a" (same Idempotency-Key → same id) joins it instead of taking a slot.
        again = await recorder.submit({"id": "a"}, origin="caller")
        assert again.placement_id == "a"
        assert recorder.depth == 2
        with pytest.raises(QueueFull):
            await recorder.submit({"id": "c"}, origin="caller")
        repo.down = False
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert sorted(repo.rows) == ["a", "b"]
    finally:
        await recorder.aclose()


async def test_new_optimize_rows_are_bounded_and_committed_in_order_with_the_other_entries() -> None:
    # `put_new` rows (no item, no id index) share the queue's bound and order with the others;
    # each is committed exactly once, also when its first batch failed, and counted as recorded.
    from carbon_optimizer.ledger import metrics

    repo = FlakyRepository(down=True)
    recorder = _recorder(repo, queue_max=3)
    before = metrics.RECORDED.labels(origin="optimize")._value.get()
    depth_before = metrics.QUEUE_DEPTH._value.get()
    try:
        recorder.put_new(_lazy_row("n1", lambda *_: dict.fromkeys(OPTIMIZE_COLUMNS) | {"origin": "optimize"}))
        recorder.offer({"id": "c1"}, origin="caller")
        recorder.put_new(_lazy_row("n2", lambda *_: dict.fromkeys(OPTIMIZE_COLUMNS) | {"origin": "optimize"}))
        with pytest.raises(QueueFull):
            recorder.put_new(_lazy_row("n3", lambda *_: {}))
        assert recorder.depth == 3
        await eventually(lambda: repo.attempts >= 2, 3.0)  # failed, kept, retried
        # The depth gauge counts them all once the writer has tried (it adds `put_new` rows).
        assert metrics.QUEUE_DEPTH._value.get() - depth_before == 3
        repo.down = False
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert list(repo.rows) == ["n1", "c1", "n2"]
        assert metrics.RECORDED.labels(origin="optimize")._value.get() - before == 2
        assert metrics.QUEUE_DEPTH._value.get() == depth_before
    finally:
        await recorder.aclose()


async def test_shutdown_flushes_what_it_can() -> None:
    repo = FlakyRepository(down=False, delay_s=0.1)
    recorder = _recorder(repo, write_timeout_s=0.01)
    for i in range(4):
        await recorder.submit({"id": f"s{i}"}, origin="optimize")
    await recorder.aclose()
    assert sorted(repo.rows) == ["s0", "s1", "s2", "s3"]
    assert recorder.depth == 0


async def test_write_timeout_zero_answers_queued_without_waiting() -> None:
    repo = FlakyRepository(down=False, delay_s=0.2)
    recorder = _recorder(repo, write_timeout_s=0.0)
    try:
        began = time.monotonic()
        ack = await recorder.submit({"id": "fast"}, origin="optimize")
        assert time.monotonic() - began < 0.05
        assert ack.queued
        assert not ack.timed_out  # not a degradation: configured not to wait
        await eventually(lambda: "fast" in repo.rows, 3.0)
    finally:
        await recorder.aclose()


async def test_a_row_that_cannot_be_built_fails_alone_and_the_rest_is_written() -> None:
    repo = FlakyRepository(down=False)
    recorder = _recorder(repo, write_timeout_s=5.0)

    def broken() -> Mapping[str, Any]:
        raise KeyError("best")

    try:
        recorder.offer(Deferred("bad", broken), origin="optimize")
        recorder.offer(Deferred("good", lambda: {"id": "good", "fingerprint": "f"}), origin="optimize")
        with pytest.raises(KeyError):
            await recorder.submit(Deferred("bad2", broken), origin="caller")
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert set(repo.rows) == {"good"}
        assert recorder.healthy  # not a database failure: nothing to retry
    finally:
        await recorder.aclose()
    assert repo.closed  # the writer released what it held


def _builders(built: list[str]) -> tuple[Any, Any]:
    """Answer-part builders that log each call in `built`: one that works, one that raises."""

    def good(best: dict[str, Any], *_: Any) -> dict[str, Any]:
        built.append("good")
        return {name: None for name in OPTIMIZE_COLUMNS} | {"origin": "optimize", "zone": best["zone"]}

    def broken(*_: Any) -> dict[str, Any]:
        built.append("broken")
        raise KeyError("best")

    return good, broken


def _lazy_row(placement_id: str, build: Any) -> OptimizeRow:
    part = AnswerPart.later(build, {"zone": "FR"}, None, [], None, False)
    return OptimizeRow(part, placement_id, "c", None, "r", None)


@pytest.mark.parametrize("enqueue", ["put", "put_new"])
async def test_an_answer_part_is_built_by_the_writer_and_a_failing_one_fails_its_row_alone(
    enqueue: str,
) -> None:
    """The request path queues the part unbuilt; the writer builds it (a broken one: that row only).

    Through `put` (an item per row) and `put_new` (the unkeyed optimize row as its own entry).
    """
    repo = FlakyRepository(down=True)  # held in the queue: nothing builds it yet
    recorder = _recorder(repo, write_timeout_s=5.0)
    built: list[str] = []
    good, broken = _builders(built)

    try:
        for row in (_lazy_row("bad", broken), _lazy_row("good", good)):
            if enqueue == "put":
                recorder.put(row, origin="optimize")
            else:
                recorder.put_new(row)
        assert built == []  # queued unbuilt: the request path did not build it
        await eventually(lambda: repo.attempts >= 1, 3.0)
        repo.down = False
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert set(repo.rows) == {"good"}
        assert repo.rows["good"]["zone"] == "FR"
        assert built == ["broken", "good"]  # each built once, though the first batch failed
        assert recorder.healthy  # the broken part is a bug, not a database failure
    finally:
        await recorder.aclose()


async def test_rows_sharing_an_answer_part_build_it_once_and_a_failing_one_fails_each_of_its_rows() -> None:
    # Result-cache hits of one stored answer share its part. The writer builds it once for all
    # of them; rows of a part that cannot be built are each left out (and logged), and the rows
    # of another part around them are written. All five are queued before the writer runs: one
    # batch.
    repo = FlakyRepository(down=False)
    recorder = _recorder(repo, queue_max=10)
    built: list[str] = []
    good, broken = _builders(built)

    def rows_of(part: AnswerPart, *ids: str) -> list[OptimizeRow]:
        return [OptimizeRow(part, placement_id, "c", None, "r", None) for placement_id in ids]

    fine = AnswerPart.later(good, {"zone": "FR"}, None, [], None, False)
    bad = AnswerPart.later(broken, {"zone": "DE"}, None, [], None, False)
    try:
        for row in [*rows_of(fine, "g1", "g2"), *rows_of(bad, "b1", "b2"), *rows_of(fine, "g3")]:
            recorder.put_new(row)
        await eventually(lambda: recorder.depth == 0, 3.0)
        assert set(repo.rows) == {"g1", "g2", "g3"}
        assert repo.attempts == 1
        assert built == ["good", "broken", "broken"]  # once for its three rows; per row of the other
    finally:
        await recorder.aclose()


async def test_under_load_rows_gather_longer_but_a_waiting_request_still_commits_at_once() -> None:
    # After a large batch the writer gathers for up to 4 commit intervals (here 4 × 2 s); rows
    # offered meanwhile share one commit, and a request that waits for its commit cuts the
    # gathering short: it is told `recorded` well within its 5 s, the interval's 8 s never pass.
    repo = FlakyRepository(down=False)
    recorder = _recorder(repo, queue_max=1000, commit_interval_s=2.0)
    try:
        for i in range(70):
            recorder.offer({"id": f"load-{i}", "fingerprint": "f"}, origin="optimize")
        await eventually(lambda: len(repo.rows) == 70, 10)
        batches_after_load = repo.attempts
        for i in range(3):
            recorder.offer({"id": f"trickle-{i}", "fingerprint": "f"}, origin="optimize")
        ack = await recorder.submit({"id": "waits", "fingerprint": "f"}, origin="optimize", timeout_s=5.0)
        assert ack.recorded
        assert {"trickle-0", "trickle-1", "trickle-2", "waits"} <= set(repo.rows)
        assert repo.attempts == batches_after_load + 1  # the trickle and the waiter: one commit
    finally:
        await recorder.aclose()
