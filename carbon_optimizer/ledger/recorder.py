"""The bounded write queue between the request path and the database (group commit + retry).

Why: a placement must never make /v1/optimize slow or fail. A request does the minimum: it
appends its row and returns (the row's answer part, the 29 columns the answer gives, is built
here by the writer with its batch: `rows.AnswerPart`). The one writer task drains the queue in
batches: one transaction and one multi-row INSERT for everything waiting (group commit). When nobody
awaits a commit it first lets rows gather for up to `commit_interval_s` so that even sequential
traffic shares commits; a request that does wait (`write_timeout_s` > 0, POST /v1/placements)
makes it flush at once.

A `Deferred` source (the part of a row that needs the request's body: the fingerprint of a keyed
optimize request) is built on the loop's next turn, all of that turn's rows together, right after
their requests moved on: built one at a time between requests, the same work ran several times
slower in the server (the engine's work in between leaves the caches cold), and built a commit
interval later it costs ~4× as much. What a deferred source holds must be small, and is best
nothing: holding the request's body *and* its response dict past the request (as the optimize
path once did) made the young garbage-collector generation fill 15–50× as often at c=16
(`gc.callbacks` in the running server), and holding the body alone still 15× (so a row without
an Idempotency-Key needs no body past its request, see `Ledger._workload`).

If the database is down or slow the request answers anyway with `queued: true`, and the writer
keeps retrying with backoff until the row is committed: a failed batch stays at the head of the
queue, in order, and is retried as a whole (inserts ignore ids already stored, so a commit whose
answer was lost is never recorded twice). The queue is bounded: when it is full a new recording
is refused (the caller is told; nothing already acknowledged is dropped).

"Acknowledged" means one of: `recorded: true` (committed in the database), or `queued: true`
(held in this worker's memory and retried until committed). Queued rows survive any database
outage while the process lives; a process that is killed while the database is still down loses
its queue (logged with the count at shutdown, after trying to flush for `drain_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from carbon_optimizer.ledger import metrics
from carbon_optimizer.ledger.repository import Existing
from carbon_optimizer.ledger.rows import OptimizeRow

log = logging.getLogger(__name__)
BATCH_MAX: Final = 500  # rows per transaction (also SQLite's bound-parameter budget for the id check)
_MAX_BACKOFF_S: Final = 30.0
# A batch this large means load: the next one gathers up to this many commit intervals.
_BUSY_ROWS: Final = 64
_BUSY_FACTOR: Final = 4


class QueueFull(Exception):
    """The in-memory queue holds `queue_max` rows already; the recording was not accepted."""


class PlacementWriter(Protocol):
    """Where batches go (the repository; a fake in unit tests)."""

    async def insert_placements(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Existing]:
        """Insert rows in one transaction, ignoring ids already stored; return those (by id)."""
        ...

    async def close(self) -> None:
        """Release what the writes held (the writer is done)."""
        ...


@dataclass(frozen=True, slots=True)
class Deferred:
    """A row built on the next loop turn (or by the writer); if `build` fails, only this item fails."""

    id: str
    build: Callable[[], Mapping[str, Any]]


Source = Mapping[str, Any] | Deferred


@dataclass(frozen=True, slots=True)
class Written:
    """How a submitted row ended up once the database answered."""

    placement_id: str
    replayed: bool = False  # the id existed: an idempotent retry (same fingerprint)
    conflict: bool = False  # the id existed with a different fingerprint (key reused)


@dataclass(frozen=True, slots=True)
class Ack:
    """What the caller is told: committed (`written` set) or queued."""

    placement_id: str
    written: Written | None
    timed_out: bool = False  # waited `write_timeout_s` in vain (database slow or down)

    @property
    def recorded(self) -> bool:
        """Committed in the database (now or earlier, for a replay)."""
        return self.written is not None and not self.written.conflict

    @property
    def queued(self) -> bool:
        """Held in memory, to be committed when the database answers."""
        return self.written is None


@dataclass(slots=True)
class _Item:
    id: str
    source: Source
    origin: str
    done: asyncio.Future[Written] | None = None  # only when the submitter waits for the commit
    # Waiting retries (same id) that joined this queued row, each with what it asked.
    joined: list[tuple[asyncio.Future[Written], Source]] | None = None
    row: Mapping[str, Any] | None = None  # built (kept for retries)
    broken: BaseException | None = None  # building failed: never written


class Recorder:
    """Queue + writer task. Start with `start()`; `aclose()` drains for a while, then stops."""

    def __init__(
        self,
        repository: PlacementWriter,
        *,
        queue_max: int,
        write_timeout_s: float,
        retry_interval_s: float,
        drain_s: float = 5.0,
        commit_interval_s: float = 0.0,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.repository = repository
        self.queue_max = queue_max
        self.write_timeout_s = write_timeout_s
        self.retry_interval_s = retry_interval_s
        self.drain_s = drain_s
        self.commit_interval_s = commit_interval_s
        self.batch_max = batch_max
        # Queued entries in order: `_Item`s, and bare rows (`put_new`: an unkeyed optimize row
        # nobody waits for is its own entry).
        self._pending: deque[_Item | OptimizeRow] = deque()
        self._by_id: dict[str, _Item] = {}
        self._unbuilt: list[_Item] = []  # deferred rows to build on the next loop turn
        self._wake = asyncio.Event()  # something is queued
        self._flush = asyncio.Event()  # someone waits (or the batch is full): stop gathering
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.healthy = True
        self.last_error: str | None = None
        self._drain_deadline: float | None = None
        self._closed = asyncio.Event()
        self._last_batch = 0  # rows in the last batch (`_gather`: under load, gather longer)
        self._unreported = 0  # `put_new` rows not yet in the queue-depth gauge

    def start(self) -> None:
        """Start the writer task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    @property
    def depth(self) -> int:
        """Rows waiting for the database."""
        return len(self._pending)

    def offer(self, source: Source, *, origin: str) -> Ack:
        """Queue `source` without waiting (the request path's whole cost); `queued: true`.

        A row whose id is already queued (a retry with the same Idempotency-Key) joins it instead
        of being queued twice. Raises `QueueFull`.
        """
        self._enqueue(source, origin)
        return Ack(source.id if isinstance(source, Deferred) else str(source["id"]), None)

    def put(self, source: Source, *, origin: str) -> None:
        """`offer` without its `Ack` (the caller knows the id and that the row is queued)."""
        self._enqueue(source, origin)

    def put_new(self, row: OptimizeRow) -> None:
        """`put` of an optimize row with a new random id (no Idempotency-Key) that nobody awaits.

        The default optimize recording, on every recorded request: the row is its own queue
        entry, with no `_Item` and no entry in the id index (nothing can join a random id, and
        nobody waits for its commit), and the queue-depth gauge is moved by the writer, a batch at
        a time (`_report_depth`: its lock cost ~0.25 µs a row in a tight loop). Raises
        `QueueFull`.
        """
        pending = self._pending
        if len(pending) >= self.queue_max:
            metrics.REFUSED.inc()
            raise QueueFull(f"ledger queue full ({self.queue_max} placements waiting)")
        pending.append(row)
        self._unreported += 1  # added to the depth gauge by the writer (`_report_depth`)
        self._wake.set()
        if len(pending) >= self.batch_max:
            self._flush.set()

    def _enqueue(self, source: Source, origin: str) -> _Item | None:
        """The queued item for `source` (None when it joined one already queued)."""
        placement_id = source.id if isinstance(source, (Deferred, OptimizeRow)) else str(source["id"])
        if placement_id in self._by_id:
            return None
        if len(self._pending) >= self.queue_max:
            metrics.REFUSED.inc()
            raise QueueFull(f"ledger queue full ({self.queue_max} placements waiting)")
        item = _Item(placement_id, source, origin)
        if isinstance(source, Deferred):
            if not self._unbuilt:
                asyncio.get_running_loop().call_soon(self._build_unbuilt)
            self._unbuilt.append(item)
        else:
            item.row = source
        self._pending.append(item)
        self._by_id[placement_id] = item
        metrics.QUEUE_DEPTH.inc()
        self._wake.set()
        if len(self._pending) >= self.batch_max:
            self._flush.set()
        return item

    async def submit(
        self, row: Source, *, origin: str, wait: bool = True, timeout_s: float | None = None
    ) -> Ack:
        """Queue `row` and wait up to `timeout_s` (default `write_timeout_s`) for its commit."""
        timeout = self.write_timeout_s if timeout_s is None else timeout_s
        if not wait or timeout <= 0:
            return self.offer(row, origin=origin)
        placement_id = row.id if isinstance(row, Deferred) else str(row["id"])
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        item = self._enqueue(row, origin)
        if item is None:
            queued = self._by_id[placement_id]
            queued.joined = [*(queued.joined or ()), (future, row)]
        else:
            item.done = future
        self._flush.set()
        try:
            # asyncio.timeout: no extra task per request (wait_for would create one). The future
            # is this request's own, so cancelling it on timeout cancels nothing else.
            async with asyncio.timeout(timeout):
                written = await future
        except TimeoutError:
            metrics.QUEUED.inc()
            return Ack(placement_id, None, timed_out=True)
        return Ack(placement_id, written)

    def _build_unbuilt(self) -> None:
        """Build the deferred rows queued since the last loop turn, together (see the docstring)."""
        items: list[_Item | OptimizeRow] = [*self._unbuilt]
        self._unbuilt = []
        _materialise(items)

    async def _gather(self) -> None:
        """Let rows accumulate for one commit unless someone waits for it (or it is full).

        Under load (the last batch had `_BUSY_ROWS` rows or more) up to `_BUSY_FACTOR` intervals.
        Why: every batch costs the writer thread a wake-up, a dozen GIL hand-overs and a commit,
        and at c=16 on a 2-core machine each of them takes the event loop's core for a while.
        What an answer says is unchanged (`queued: true` says "not yet committed"), and a
        request that waits for its commit still makes the writer flush at once.
        """
        if self.commit_interval_s <= 0 or self._closing or self._flush.is_set():
            return
        interval = self.commit_interval_s * (_BUSY_FACTOR if self._last_batch >= _BUSY_ROWS else 1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await self._flush.wait()

    def _report_depth(self) -> None:
        """Add the `put_new` rows queued since the last call to the queue-depth gauge.

        Called by the writer whenever it takes, settles or retries a batch, so the gauge lags the
        queue by at most one commit interval (while the database is down: one retry backoff,
        at most 30 s).
        """
        if self._unreported:
            metrics.QUEUE_DEPTH.inc(self._unreported)
            self._unreported = 0

    async def _run(self) -> None:
        backoff = self.retry_interval_s
        while True:
            self._report_depth()
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            self._report_depth()
            self._flush.clear()
            batch = [self._pending[i] for i in range(min(self.batch_max, len(self._pending)))]
            self._last_batch = len(batch)
            rows = _materialise(batch, self._pending)
            try:
                existing = await self.repository.insert_placements(rows) if rows else {}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any driver/connection error: keep the rows, retry later
                metrics.WRITE_FAILURES.inc()
                self.healthy = False
                self.last_error = type(exc).__name__
                log.warning(
                    "ledger database write failed (%s); %d placement(s) queued, retrying in %.1f s",
                    type(exc).__name__,
                    len(self._pending),
                    backoff,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                if self._closing and self._drain_expired():
                    return
                continue
            backoff = self.retry_interval_s
            self.healthy = True
            self.last_error = None
            self._settle(batch, existing)

    def _settle(self, batch: list[_Item | OptimizeRow], existing: Mapping[str, Existing]) -> None:
        """The batch is committed: dequeue it and tell whoever waits."""
        self._report_depth()  # before the batch's rows leave the gauge
        recorded: dict[str, int] = {}
        pending, by_id = self._pending, self._by_id
        bare = 0
        for item in batch:
            pending.popleft()
            if type(item) is OptimizeRow:  # `put_new`: committed, and nobody waits
                bare += 1
                continue
            assert isinstance(item, _Item)
            by_id.pop(item.id, None)  # a broken bare row's item was never indexed
            if item.row is None:  # broken: logged when building failed
                error = item.broken or RuntimeError("placement row could not be built")
                for future in _futures(item):
                    if not future.done():
                        future.set_exception(error)
                continue
            found = existing.get(item.id) if existing else None
            if found is None:
                recorded[item.origin] = recorded.get(item.origin, 0) + 1
            if item.done is None and item.joined is None:  # nobody waits (the optimize default)
                continue
            stored = found.fingerprint if found is not None else item.row.get("fingerprint")
            if item.done is not None and not item.done.done():
                item.done.set_result(_written(item.id, found, item.row.get("fingerprint"), stored))
            for future, source in item.joined or ():
                if future.done():
                    continue
                asked = _fingerprint_of(source)
                # The first of them is the row just written: for a joined retry it exists now.
                future.set_result(_written(item.id, found or Existing(item.id, stored), asked, stored))
        if bare:
            recorded["optimize"] = recorded.get("optimize", 0) + bare
        metrics.QUEUE_DEPTH.dec(len(batch))
        for origin, count in recorded.items():
            metrics.RECORDED.labels(origin=origin).inc(count)

    def _drain_expired(self) -> bool:
        loop = asyncio.get_running_loop()
        return self._drain_deadline is not None and loop.time() >= self._drain_deadline

    async def aclose(self) -> None:
        """Flush what is queued (up to `drain_s`), then stop; log what could not be written."""
        self._report_depth()
        if self._task is None:
            if self._pending:
                log.error("ledger: %d queued placement(s) never written (database never ready)", self.depth)
            return
        self._closing = True
        self._closed.set()
        self._flush.set()
        self._drain_deadline = asyncio.get_running_loop().time() + self.drain_s
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.drain_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.repository.close()
        except Exception as exc:  # nothing is lost by it: log and go on shutting down
            log.warning("ledger: closing the writer's connection failed (%s)", type(exc).__name__)
        if self._pending:
            log.error("ledger: %d queued placement(s) not written before shutdown", len(self._pending))


def _materialise(
    batch: list[_Item | OptimizeRow], pending: deque[_Item | OptimizeRow] | None = None
) -> list[Mapping[str, Any]]:
    """Rows of the batch, building deferred ones once (a failure marks that item broken).

    `batch` is the head of `pending` when given: a bare row (`Recorder.put_new`) whose answer
    part fails to build is replaced there, and in `batch`, by a broken item (never retried).
    """
    rows: list[Mapping[str, Any]] = []
    # The last answer part that built: the rows of a result-cache hit's answer share one, and a
    # batch of them is mostly that answer's, so each such row skips the call (a part that
    # failed is tried, and logged, again for every row of it, as before).
    built: object = None
    for at, item in enumerate(batch):
        if type(item) is OptimizeRow:
            if item.part is built:
                rows.append(item)
                continue
            failed = _part_failure(item)
            if failed is None:
                built = item.part
                rows.append(item)
                continue
            broken = _Item(item.id, {"id": item.id}, "optimize", broken=failed)
            batch[at] = broken
            if pending is not None:
                pending[at] = broken
            continue
        assert isinstance(item, _Item)
        if item.row is None and item.broken is None:
            try:
                item.row = item.source.build() if isinstance(item.source, Deferred) else item.source
            except Exception as exc:  # a bug, not a database problem: retrying cannot help
                log.exception("ledger: placement %s could not be built; not recorded", item.id)
                item.broken = exc
            # Hold only the row from now on (see the module's docstring: garbage collections).
            item.source = item.row if item.row is not None else {"id": item.id}
        row = item.row
        if type(row) is OptimizeRow and (failed := _part_failure(row)) is not None:
            item.broken, item.row, item.source = failed, None, {"id": item.id}
            continue
        if row is not None:
            rows.append(row)
    return rows


def _part_failure(row: OptimizeRow) -> Exception | None:
    """Build the row's answer part here, with the batch (`rows.AnswerPart`); what failed, logged.

    A failure is a bug, not a database problem: retrying cannot help, and this row alone is
    never written.
    """
    try:
        row.part.ensure()
    except Exception as exc:
        log.exception("ledger: placement %s could not be built; not recorded", row.id)
        return exc
    return None


def _futures(item: _Item) -> list[asyncio.Future[Written]]:
    return [f for f in (item.done, *(future for future, _ in item.joined or ())) if f is not None]


def _fingerprint_of(source: Source) -> Any:
    try:
        row = source.build() if isinstance(source, Deferred) else source
    except Exception:
        return None
    return row.get("fingerprint")


def _written(placement_id: str, found: Existing | None, asked: Any, stored: Any) -> Written:
    if found is None:
        return Written(placement_id)
    same = stored is not None and stored == asked
    return Written(placement_id, replayed=same, conflict=not same)
