"""The bounded write queue between the request path and the database (group commit + retry).

Why: a placement must never make /v1/optimize slow or fail. Requests append a row and wait at
most `write_timeout_s` for the commit; one writer task drains the queue in batches (one
transaction for everything waiting, so 16 concurrent requests cost about one commit). If the
database is down or slow the request answers anyway with `queued: true`, and the writer keeps
retrying with backoff until the row is committed. The queue is bounded: when it is full a new
recording is refused (the caller is told; nothing already acknowledged is dropped).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from carbon_optimizer.ledger import metrics
from carbon_optimizer.ledger.repository import Existing, LedgerRepository

log = logging.getLogger(__name__)
_BATCH: Final = 500
_MAX_BACKOFF_S: Final = 30.0


class QueueFull(Exception):
    """The in-memory queue holds `queue_max` rows already; the recording was not accepted."""


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
    row: Mapping[str, Any]
    done: asyncio.Future[Written]
    origin: str
    waiters: int = 1
    extra: list[asyncio.Future[Written]] = field(default_factory=list)


class Recorder:
    """Queue + writer task. Start with `start()`; `aclose()` drains for a while, then stops."""

    def __init__(
        self,
        repository: LedgerRepository,
        *,
        queue_max: int,
        write_timeout_s: float,
        retry_interval_s: float,
        drain_s: float = 5.0,
    ) -> None:
        self.repository = repository
        self.queue_max = queue_max
        self.write_timeout_s = write_timeout_s
        self.retry_interval_s = retry_interval_s
        self.drain_s = drain_s
        self._pending: deque[_Item] = deque()
        self._by_id: dict[str, _Item] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.healthy = True
        self.last_error: str | None = None
        self._drain_deadline: float | None = None
        self._closed = asyncio.Event()

    def start(self) -> None:
        """Start the writer task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    @property
    def depth(self) -> int:
        """Rows waiting for the database."""
        return len(self._pending)

    async def submit(
        self, row: Mapping[str, Any], *, origin: str, wait: bool = True, timeout_s: float | None = None
    ) -> Ack:
        """Queue `row` and wait up to `timeout_s` (default `write_timeout_s`) for its commit.

        A row whose id is already queued (a retry with the same Idempotency-Key arriving while the
        database is down) joins the queued one instead of being queued twice.
        """
        placement_id = str(row["id"])
        item = self._by_id.get(placement_id)
        if item is not None:
            future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
            item.extra.append(future)
        else:
            if len(self._pending) >= self.queue_max:
                metrics.REFUSED.inc()
                raise QueueFull(f"ledger queue full ({self.queue_max} placements waiting)")
            future = asyncio.get_running_loop().create_future()
            item = _Item(row=row, done=future, origin=origin)
            self._pending.append(item)
            self._by_id[placement_id] = item
            metrics.QUEUE_DEPTH.inc()
            self._wake.set()
        timeout = self.write_timeout_s if timeout_s is None else timeout_s
        if not wait or timeout <= 0:
            return Ack(placement_id, None)
        try:
            # asyncio.timeout + shield: no extra task per request (wait_for would create one).
            async with asyncio.timeout(timeout):
                written = await asyncio.shield(future)
        except TimeoutError:
            metrics.QUEUED.inc()
            return Ack(placement_id, None, timed_out=True)
        return Ack(placement_id, written)

    async def _run(self) -> None:
        backoff = self.retry_interval_s
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending[i] for i in range(min(_BATCH, len(self._pending)))]
            try:
                existing = await self.repository.insert_placements([item.row for item in batch])
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
            for item in batch:
                self._pending.popleft()
                self._by_id.pop(str(item.row["id"]), None)
                metrics.QUEUE_DEPTH.dec()
                found = existing.get(str(item.row["id"]))
                written = _written(item.row, found)
                if found is None:
                    metrics.RECORDED.labels(origin=item.origin).inc()
                for future in (item.done, *item.extra):
                    if not future.done():
                        future.set_result(written)

    def _drain_expired(self) -> bool:
        loop = asyncio.get_running_loop()
        return self._drain_deadline is not None and loop.time() >= self._drain_deadline

    async def aclose(self) -> None:
        """Flush what is queued (up to `drain_s`), then stop; log what could not be written."""
        if self._task is None:
            if self._pending:
                log.error("ledger: %d queued placement(s) never written (database never ready)", self.depth)
            return
        self._closing = True
        self._closed.set()
        self._drain_deadline = asyncio.get_running_loop().time() + self.drain_s
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.drain_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            log.error("ledger: %d queued placement(s) not written before shutdown", len(self._pending))


def _written(row: Mapping[str, Any], found: Existing | None) -> Written:
    placement_id = str(row["id"])
    if found is None:
        return Written(placement_id)
    same = found.fingerprint is not None and found.fingerprint == row.get("fingerprint")
    return Written(placement_id, replayed=same, conflict=not same)
