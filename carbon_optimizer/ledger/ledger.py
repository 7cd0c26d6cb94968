"""The ledger's entry points for the API, the CLI and the app's lifespan.

`Ledger.record_optimize` is the one function the optimize route calls, after the plan is computed:
it turns the response's best option and baseline into a placement row and hands it to the
`Recorder`. Everything else (caller-made placements, outcomes, reports) is here too so the routes
stay thin. Client isolation lives here, not in SQL callers: a client only ever reads or updates
its own placements; an admin client id reads all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Protocol

import orjson
from pydantic import BaseModel

from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.health import ComponentStatus
from carbon_optimizer.ledger import db
from carbon_optimizer.ledger.models import RECORDED
from carbon_optimizer.ledger.reconciler import Reconciler
from carbon_optimizer.ledger.recorder import Ack, Deferred, QueueFull, Recorder
from carbon_optimizer.ledger.reports import build_report
from carbon_optimizer.ledger.repository import LedgerRepository
from carbon_optimizer.ledger.rows import AnswerPart, OptimizeRow
from carbon_optimizer.providers.base import CarbonIntensityProvider
from carbon_optimizer.settings import DatabaseSettings, LedgerSettings

log = logging.getLogger(__name__)
ANONYMOUS: Final = "anonymous"  # client id when the API runs without keys
# uuid5 namespace for placement ids derived from (client id, Idempotency-Key): every replica
# derives the same id for a retry, even while the database is down and rows wait in memory.
_ID_NAMESPACE: Final = uuid.UUID("5b0f4c1e-7d1a-4c55-9a43-0c6f1ad0e815")
# An outcome may end at most this far in the future (clock skew between caller and server).
_CLOCK_SKEW: Final = timedelta(minutes=5)
_MAX_REPORT_RANGE: Final = timedelta(days=3 * 366)
_ID_POOL: Final = 256
_PREFIX_MS: Final = 16  # how long a new id's time part is reused (`Ledger._new_id`)
# The body's fields that do not make it a different request (for the Idempotency-Key check).
_UNFINGERPRINTED: Final = frozenset({"record", "signal"})
_TIMES_MAX: Final = 4096  # parsed answer times remembered (cleared when full)
# What a raw optimize body gives the row (its workload's JSON; with an Idempotency-Key also its
# fingerprint), remembered for bodies up to this size, this many of them (≤ 4 MiB each memo;
# cleared when full).
_BODY_MEMO_BYTES: Final = 16 * 1024
_BODY_MEMO_MAX: Final = 256
# Answer parts of rows kept: one per result-cache entry that is hit (the oldest dropped first).
_ANSWER_PARTS_MAX: Final = 256
_NOT_COMMITTED: Final = (
    "placement accepted but not yet committed (ledger database slow or unavailable); "
    "queued in memory and retried"
)
# Answers that need no database (copied by the caller before it adds to them).
_NOT_AVERAGE: Final = {
    "placement_id": None,
    "recorded": False,
    "queued": False,
    "warning": "placement not recorded: the savings ledger accounts in average intensity only",
}
_NO_OPTION: Final = {
    "placement_id": None,
    "recorded": False,
    "queued": False,
    "warning": "placement not recorded: the answer has no best option",
}
_QUEUE_FULL: Final = {
    "placement_id": None,
    "recorded": False,
    "queued": False,
    "warning": "placement not recorded: the ledger queue is full (database unavailable)",
}


class PlacementNotFound(Exception):
    """No placement with this id visible to this client (another client's id looks the same)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used by this client for a different request."""


class LedgerUnavailable(Exception):
    """The database cannot answer (reads and outcomes are not queued)."""


class ZoneResolver(Protocol):
    """Maps a requested location to (location key, carbon zone); raises `InvalidInput` if unknown."""

    def __call__(
        self, provider: str | None, region: str | None, zone: str | None, loc: tuple[str | int, ...]
    ) -> tuple[str, str]:
        """Resolve."""
        ...


class _Catalog(Protocol):
    def get(self, provider: str, region: str) -> Any:
        """Region or None."""
        ...

    def zone(self, zone: str) -> Any:
        """Zone info or None."""
        ...


def catalog_resolver(catalog: _Catalog) -> ZoneResolver:
    """A `ZoneResolver` over the region catalog (cloud regions and grid zones)."""

    def resolve(
        provider: str | None, region: str | None, zone: str | None, loc: tuple[str | int, ...]
    ) -> tuple[str, str]:
        if provider is not None and region is not None:
            found = catalog.get(provider, region)
            if found is None:
                raise InvalidInput(
                    f"unknown region '{region}' for provider '{provider}'", loc=(*loc, "region")
                )
            return f"{provider}/{region}", str(found.zone)
        if zone is not None:
            info = catalog.zone(zone)
            if info is None:
                raise InvalidInput(f"unknown zone '{zone}'", loc=(*loc, "zone"))
            return f"zone/{info.zone}", str(info.zone)
        raise InvalidInput("a location needs 'provider' and 'region', or 'zone'", loc=loc)

    return resolve


def placement_id_for(client_id: str, idempotency_key: str | None) -> str:
    """Deterministic id for an idempotent call (uuid5), a new time-ordered one otherwise."""
    if idempotency_key is None:
        return _ms_prefix(time.time_ns() // 1_000_000) + id_tails(1)[0]
    return str(uuid.uuid5(_ID_NAMESPACE, f"{client_id}\n{idempotency_key}"))


def id_tails(n: int) -> list[str]:
    """The random ends of `n` time-ordered ids (`-7xxx-yxxx-xxxxxxxxxxxx`), from one urandom read.

    A placement id without an Idempotency-Key is a UUID in the version 7 layout (RFC 9562): the
    creation time in milliseconds, then 74 random bits, as 36-character text like any UUID.
    Why time-ordered: every row is also an entry in the primary-key index, and a random (version
    4) key lands on a random page of it. With the table beyond the page cache (a few 10 000 rows)
    each insert touched a cold page: the writer's CPU per row grew with the table (19 → 27 µs
    over 60 000 rows in `bench/bench_ledger_cpu.py`'s setting) where time-ordered keys, appended
    at the index's end, stay at ~15. The 74 random bits keep ids unguessable. One `os.urandom`
    read for many ids: a call and a `UUID` object per id cost ~5 µs each on the shared VM.
    """
    raw = os.urandom(10 * n).hex()
    out: list[str] = []
    for i in range(0, 20 * n, 20):
        h = raw[i : i + 20]
        variant = "89ab"[int(h[3], 16) & 3]  # RFC 9562 variant bits: 10xx
        out.append(f"-7{h[:3]}-{variant}{h[4:7]}-{h[7:19]}")
    return out


def _ms_prefix(ms: int) -> str:
    """The first 13 characters of a version 7 UUID: 48 bits of Unix time in milliseconds."""
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}"


def fingerprint(payload: Any) -> str:
    """SHA-256 of the canonical JSON of what was asked (to detect a reused Idempotency-Key)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_utc(text: str) -> datetime:
    """RFC 3339 (as the API writes it, `Z` suffix) → aware UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _location_key(location: Mapping[str, Any]) -> str:
    if location.get("provider") and location.get("region"):
        return f"{location['provider']}/{location['region']}"
    return f"zone/{location['zone']}"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: their client id and whether it may see every client's placements."""

    client_id: str
    admin: bool


class Ledger:
    """Records placements, accepts outcomes, answers reports."""

    def __init__(
        self,
        repository: LedgerRepository,
        recorder: Recorder,
        *,
        settings: LedgerSettings,
        resolver: ZoneResolver,
        clock: Callable[[], datetime],
        signal: str,
        reconciler: Reconciler | None = None,
        caller_write_timeout_s: float = 1.0,
    ) -> None:
        self.repository = repository
        self.caller_write_timeout_s = caller_write_timeout_s
        self.recorder = recorder
        self.settings = settings
        self.resolver = resolver
        self.clock = clock
        self.signal = signal
        self.reconciler = reconciler
        self._record_all = "*" in settings.record_clients
        self._record_clients = frozenset(settings.record_clients)
        self._admins = frozenset(settings.admin_client_ids)
        # The random ends of new placement ids, made 256 at a time (`id_tails`, `_new_id`).
        self._tails: list[str] = []
        self._ms = -1  # the millisecond of `_prefix`
        self._prefix = ""
        self._delay = timedelta(seconds=settings.reconcile_delay_s)
        self._dues: dict[datetime, datetime] = {}
        self._bodies: dict[bytes, tuple[str, str]] = {}  # raw body → (fingerprint, workload JSON)
        self._workloads: dict[tuple[Any, ...], str] = {}  # workload's values → its JSON
        # The answer part of a row per answer objects (a result-cache hit repeats them).
        # The answer part of a row per answer objects (a result-cache hit repeats them), by the
        # identity of its `best` (kept alive here, so the id stays its own; the other objects
        # and the baseline flag are checked too). Insertion order is age: the oldest goes first.
        self._answer_parts: dict[int, tuple[Any, Any, Any, Any, bool, AnswerPart]] = {}
        # Bound once: every `self._answer_values` would be a new method object, one more
        # allocation held by each queued row (see `rows.AnswerPart`).
        self._build_part = self._answer_values

    def _new_id(self) -> str:
        """A new time-ordered placement id (`id_tails`): the time, then a pooled random end.

        The time part is renewed every `_PREFIX_MS` milliseconds, not every millisecond: at a
        few thousand requests a second, formatting it cost ~3 µs on every third request in the
        running server. Ids of a later window still sort after, which is all the index needs.
        The pool is refilled here, when empty: one `os.urandom` read and 256 tails every 256th
        id. It used to be refilled by a `call_soon` callback, which never ran while the calling
        task did not yield (a result-cache hit, served in process, never does): every id then
        took its own read, ~6 µs a recorded hit.
        """
        tails = self._tails
        if not tails:
            tails.extend(id_tails(_ID_POOL))
        tail = tails.pop()
        ms = time.time_ns() // 1_000_000
        if not 0 <= ms - self._ms < _PREFIX_MS:
            self._ms, self._prefix = ms, _ms_prefix(ms)
        return self._prefix + tail

    def viewer(self, client_id: str | None) -> Viewer:
        """The caller as the ledger sees it (no key configured → one anonymous client)."""
        cid = client_id or ANONYMOUS
        return Viewer(cid, cid in self._admins)

    def wants_record(self, requested: bool | None, client_id: str | None) -> bool:
        """`record` from the request, else the client's configured default."""
        if requested is not None:
            return requested
        return self._record_all or (client_id or ANONYMOUS) in self._record_clients

    def _due(self, end: datetime, other_end: datetime | None = None) -> datetime:
        latest = end if other_end is None or other_end <= end else other_end
        due = self._dues.get(latest)
        if due is None:  # ends lie on the plan's time grid: most repeat
            if len(self._dues) >= _TIMES_MAX:
                self._dues.clear()
            due = self._dues[latest] = latest + self._delay
        return due

    # ----- recording -----

    async def record_optimize(
        self,
        *,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str | None,
        request_id: str,
        idempotency_key: str | None,
        raw: bytes | None = None,
        cache_hit: bool = False,
    ) -> dict[str, Any]:
        """Record the plan's best option against its baseline; the response's placement fields.

        `request` is the validated optimize body (or its JSON form), `result` the response body,
        `raw` the body's bytes as received, if known (with an Idempotency-Key, what the body
        gives the row is remembered by them: a result-cache hit is a repeat of a body seen
        before), `cache_hit` whether `result` is a result-cache hit's copy (`_parts_row`). The
        row is built here and queued. What it needs from the body is its workload's JSON
        (`_workload`) and, only with an Idempotency-Key, the body's fingerprint (`_with_body`);
        that fingerprint, unless remembered, is added on the loop's next turn (`Recorder`:
        batched with that turn's other rows), and the caller must not mutate `request`
        afterwards. The writer task commits the row (group commit). Without a write timeout
        (the default) nothing is awaited (`queue_optimize`); with one, it waits until the
        commit happened or the timeout passed. Never raises for database trouble: the answer then says
        `recorded: false` with `queued` and a warning. Raises `IdempotencyConflict` when the key
        was used for a different request.
        """
        queued = self.queue_optimize(request, result, client_id, request_id, idempotency_key, raw, cache_hit)
        if queued is not None:  # no write timeout: nothing to wait for
            return queued
        made = self._optimize_source(request, result, client_id, request_id, idempotency_key, raw, cache_hit)
        if isinstance(made, dict):
            return made
        return await self._submit_for_optimize(made)

    def queue_optimize(
        self,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str | None,
        request_id: str,
        idempotency_key: str | None,
        raw: bytes | None = None,
        cache_hit: bool = False,
    ) -> dict[str, Any] | None:
        """`record_optimize` without a write timeout, synchronously; None when it must wait instead.

        The default: the row is queued and the answer says so (`queued: true`). Why a plain call
        beside the coroutine: the optimize route calls it on every recorded request, and a
        coroutine with keyword arguments is an object and a frame more there (the route awaits
        `record_optimize` only when a write timeout is configured).
        """
        recorder = self.recorder
        if recorder.write_timeout_s > 0:
            return None
        keyed = idempotency_key is not None
        # A remembered hit's row in one step (the general path's row, made in fewer steps).
        hit = self._hit_row(request, result, client_id, request_id) if cache_hit and not keyed else None
        made: OptimizeRow | Deferred | dict[str, Any]
        if hit is not None:
            made = hit
        else:
            made = self._optimize_source(
                request, result, client_id, request_id, idempotency_key, raw, cache_hit
            )
            if isinstance(made, dict):
                return made
        try:
            if not keyed and type(made) is OptimizeRow:
                recorder.put_new(made)  # a new random id: its own queue entry
            else:
                recorder.put(made, origin="optimize")
        except QueueFull:
            return dict(_QUEUE_FULL)
        # Queued, not committed (what `_fields` says of a queued `Ack`, without making one).
        fields = {"placement_id": made.id, "recorded": False, "queued": True}
        if not recorder.healthy:
            fields["warning"] = _NOT_COMMITTED
        return fields

    def _hit_row(
        self,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str | None,
        request_id: str,
    ) -> OptimizeRow | None:
        """A result-cache hit's row, when its answer part and workload are remembered; else None.

        The row `_optimize_source` makes for such a hit (no Idempotency-Key), in one step instead
        of four calls with their keyword arguments: every recorded hit of a stored answer after
        its first comes here, and the hook then cost ~2.2 µs in a tight loop (~6.5 in the
        running server, 5 % of a hit's throughput at c=16). None, with nothing changed, whenever
        the general path might answer otherwise (another signal, a part not yet remembered or
        built for other answer objects or another baseline flag, a body given as a mapping).
        """
        if getattr(request, "signal", None) != "average":  # a mapping has no such attribute
            return None
        part = self._remembered_part(
            result.get("best"),
            result.get("baseline"),
            result.get("warnings", ()),
            result.get("objective"),
            getattr(request, "baseline", None) is not None,
        )
        workload = None if part is None else part.workload
        if part is None or workload is None:
            return None
        return OptimizeRow(
            part, self._new_id(), client_id or ANONYMOUS, self.clock(), request_id, None, None, workload
        )

    def _optimize_source(
        self,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str | None,
        request_id: str,
        idempotency_key: str | None,
        raw: bytes | None,
        cache_hit: bool,
    ) -> OptimizeRow | Deferred | dict[str, Any]:
        """What to queue for an optimize answer, or (a dict) the placement fields of not recording it.

        `cache_hit`: `result` is a result-cache hit's copy of a stored answer, whose answer part
        is remembered for the next hit (`_parts_row`); a fresh answer's part is not.
        """
        model = isinstance(request, BaseModel)
        signal = getattr(request, "signal", "average") if model else request.get("signal", "average")  # type: ignore[union-attr]
        if signal != "average":
            # The ledger accounts in average intensity; marginal grams are another quantity and
            # summing both in one report would claim more than the data supports.
            return dict(_NOT_AVERAGE)
        if not result.get("best"):
            return dict(_NO_OPTION)
        cid = client_id or ANONYMOUS
        placement_id = self._new_id() if idempotency_key is None else placement_id_for(cid, idempotency_key)
        row = self._answer_row(
            placement_id, request, result, cid, self.clock(), request_id, idempotency_key, cache_hit
        )
        if idempotency_key is None:
            part = row.part  # a hit's is its stored answer's, which came from this very body
            workload = part.workload
            if workload is None:
                workload = part.workload = self._workload(request)
            row.workload = workload
            return row
        known = None if raw is None else self._bodies.get(raw)
        if known is not None:
            row.fingerprint, row.workload = known
            return row
        # Dumped and hashed on the next loop turn, with that turn's other bodies.
        return Deferred(placement_id, partial(self._with_body, row, request, raw))

    def _optimize_row(
        self,
        placement_id: str,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str,
        created_at: datetime,
        request_id: str,
        idempotency_key: str | None,
        raw: bytes | None = None,
    ) -> OptimizeRow:
        """The placement row of an optimize answer (as `record_optimize` builds it, in one go)."""
        row = self._answer_row(
            placement_id, request, result, client_id, created_at, request_id, idempotency_key
        )
        if idempotency_key is None:
            row.workload = self._workload(request)
            return row
        return self._with_body(row, request, raw)

    def _workload(self, request: BaseModel | Mapping[str, Any]) -> str:
        """The workload's JSON of a row without an Idempotency-Key, remembered by the workload's values.

        Such a row gets no fingerprint. The fingerprint serves the Idempotency-Key check alone,
        and a row without a key has a new random id that nothing is ever compared with. Why not
        compute it anyway: the body's full dump and hash (`_from_body`) was most of what a row
        needs from its body; done on the next loop turn, it kept each body alive past its
        request, and in the running server that made young garbage collections 15× as frequent
        (56 against 3.7 per 1 000 requests with every body different, ~20 µs per request).

        Why by the values, not the raw body: bodies that differ (every scheduler's request has
        its own window) mostly carry one of a few workload shapes, and the dump, 1.6 µs in a
        tight loop, cost ~9 µs on the running server between the engine's work. A validated
        workload's fields have fixed types, so equal value tuples dump to the same JSON; a field
        that cannot be hashed (a GPU spec, pinned instance types) skips the memo.
        """
        workload = getattr(request, "workload", None) if isinstance(request, BaseModel) else None
        if not isinstance(workload, BaseModel):
            return _workload_json(request)
        try:
            key = (type(workload), *workload.__dict__.values())
            known = self._workloads.get(key)
        except TypeError:  # unhashable values
            return _workload_json(request)
        if known is None:
            known = _workload_json(request)
            if len(self._workloads) >= _BODY_MEMO_MAX:
                self._workloads.clear()
            self._workloads[key] = known
        return known

    def _with_body(
        self, row: OptimizeRow, request: BaseModel | Mapping[str, Any], raw: bytes | None
    ) -> OptimizeRow:
        """Complete the row of a keyed request with what the body gives it: fingerprint, workload.

        Remembered by the body's raw bytes: a result-cache hit repeats a body seen before.
        """
        derived = None if raw is None else self._bodies.get(raw)
        if derived is None:
            derived = _from_body(request)
            if raw is not None and len(raw) <= _BODY_MEMO_BYTES:
                if len(self._bodies) >= _BODY_MEMO_MAX:
                    self._bodies.clear()
                self._bodies[raw] = derived
        row.fingerprint, row.workload = derived
        return row

    def _answer_row(
        self,
        placement_id: str,
        request: BaseModel | Mapping[str, Any],
        result: Mapping[str, Any],
        client_id: str,
        created_at: datetime,
        request_id: str,
        idempotency_key: str | None,
        remember: bool = True,
    ) -> OptimizeRow:
        """The row from the answer, built on the request (workload, fingerprint: `_workload`, `_with_body`).

        `remember`: keep the answer part for later hits (`_parts_row`).

        Built now so that the request's response dict does not outlive it (see `recorder`: held
        past the request with the body, it made the garbage collector run 15–50× as often). What
        repeats across requests — the answer's times, the due date, the stored datetime forms —
        is memoised.
        """
        asked = (
            getattr(request, "baseline", None) if isinstance(request, BaseModel) else request.get("baseline")
        )
        explicit = asked is not None
        return self._parts_row(
            placement_id, result, explicit, client_id, created_at, request_id, idempotency_key, remember
        )

    def _parts_row(
        self,
        placement_id: str,
        result: Mapping[str, Any],
        explicit_baseline: bool,
        client_id: str,
        created_at: datetime,
        request_id: str,
        idempotency_key: str | None,
        remember: bool = True,
    ) -> OptimizeRow:
        """`_answer_row`, told whether the request named its baseline.

        `remember`: keep the answer part for later rows of the same answer objects (a
        result-cache hit's). The route passes False for a fresh answer: nothing can have the
        part yet, and with every body different a remembered part (its values, its stored
        form, the memo's entry) lived on for 256 answers, long enough to be promoted through
        the collector's generations: not remembering it cut the server's GC time per recorded
        unique request from 19 to 14 µs (one 5 s wrk run at c=16, `gc.callbacks`).
        """
        # A result-cache hit hands out the stored answer's very objects (a new dict around them):
        # its row's answer part is the same, so it is kept per those objects (checked by
        # identity, and they are kept alive with it) and only the request's own fields change.
        best, baseline = result["best"], result.get("baseline")
        warnings, objective = result.get("warnings", ()), result.get("objective")
        parts = self._answer_parts
        part = None
        if remember:
            part = self._remembered_part(best, baseline, warnings, objective, explicit_baseline)
        if part is None:
            # Built by the writer, with its batch (`AnswerPart`: cold here, warm there).
            part = AnswerPart.later(self._build_part, best, baseline, warnings, objective, explicit_baseline)
            if remember:
                if len(parts) >= _ANSWER_PARTS_MAX:
                    # The oldest only: dropping all at once freed up to 256 answers' objects in one
                    # go, and frees the collector does not see coming make it run more often.
                    del parts[next(iter(parts))]
                parts[id(best)] = (best, baseline, warnings, objective, explicit_baseline, part)
        return OptimizeRow(part, placement_id, client_id, created_at, request_id, idempotency_key)

    def _remembered_part(
        self, best: Any, baseline: Any, warnings: Any, objective: Any, explicit_baseline: bool
    ) -> AnswerPart | None:
        """The answer part kept for these very answer objects and baseline flag, or None."""
        kept = self._answer_parts.get(id(best))
        if (
            kept is not None
            and kept[0] is best
            and kept[1] is baseline
            and kept[2] is warnings
            and kept[3] is objective
            and kept[4] is explicit_baseline
        ):
            return kept[5]
        return None

    def _answer_values(
        self,
        best: Mapping[str, Any],
        baseline: Mapping[str, Any] | None,
        warnings: Any,
        objective: Any,
        explicit_baseline: bool,
    ) -> dict[str, Any]:
        """The row's columns that come from the answer alone (the request's own: `_answer_row`)."""
        # The same row `_row` builds from these inputs (a test compares them), written out in one
        # function: on the request path every call and keyword argument counts.
        location = best["location"]
        start, end = _when(best["start"]), _when(best["end"])
        energy = float(best["energy_kwh"])
        intensity = float(best["avg_carbon_intensity_g_per_kwh"])
        quality = {"warnings": list(warnings), "objective": objective}
        row: dict[str, Any] = {
            "id": None,  # the request's own (`_answer_row`)
            "client_id": None,
            "created_at": None,
            "request_id": None,
            "origin": "optimize",
            "idempotency_key": None,
            "fingerprint": None,  # `_with_body`
            "workload": None,
            "signal": self.signal,
            "location": _location_key(location),
            "zone": str(location["zone"]),
            "provider": location.get("provider"),
            "region": location.get("region"),
            "instance_type": best.get("instance_type"),
            "start_at": start,
            "end_at": end,
            "energy_kwh": energy,
            "intensity_g_per_kwh": intensity,
            "emissions_g": float(best.get("emissions_g") or energy * intensity),
            "cost_usd": best.get("cost_usd"),
            "carbon_source": best.get("carbon_source"),
            "price_source": best.get("price_source"),
            "baseline_name": None,
            "baseline_location": None,
            "baseline_zone": None,
            "baseline_start_at": None,
            "baseline_end_at": None,
            "baseline_energy_kwh": None,
            "baseline_intensity_g_per_kwh": None,
            "baseline_emissions_g": None,
            "baseline_cost_usd": None,
            "baseline_carbon_source": None,
            # JSON columns as their text (workload too): the row then holds only atomic values,
            # which the garbage collector stops tracking while it waits for its commit.
            "quality": orjson.dumps(quality).decode(),
            "status": RECORDED,
            "due_at": None,
            "attempts": 0,
        }
        if baseline:
            b_location = baseline["location"]
            b_end = _when(baseline["end"])
            b_energy = float(baseline["energy_kwh"])
            b_intensity = float(baseline["avg_carbon_intensity_g_per_kwh"])
            row.update(
                baseline_name=(
                    "requested baseline"
                    if explicit_baseline
                    else "first requested location at the earliest start"
                ),
                baseline_location=_location_key(b_location),
                baseline_zone=str(b_location["zone"]),
                baseline_start_at=_when(baseline["start"]),
                baseline_end_at=b_end,
                baseline_energy_kwh=b_energy,
                baseline_intensity_g_per_kwh=b_intensity,
                baseline_emissions_g=float(baseline.get("emissions_g") or b_energy * b_intensity),
                baseline_cost_usd=baseline.get("cost_usd"),
                baseline_carbon_source=baseline.get("carbon_source"),
            )
            row["due_at"] = self._due(end, b_end)
        else:
            row["due_at"] = self._due(end)
        return row

    async def _submit_for_optimize(self, source: Mapping[str, Any] | Deferred) -> dict[str, Any]:
        try:
            ack = await self.recorder.submit(source, origin="optimize")
        except QueueFull:
            return dict(_QUEUE_FULL)
        return self._fields(ack)

    def _fields(self, ack: Ack) -> dict[str, Any]:
        self._raise_on_conflict(ack)
        out: dict[str, Any] = {
            "placement_id": ack.placement_id,
            "recorded": ack.recorded,
            "queued": ack.queued,
        }
        if ack.timed_out or (ack.queued and not self.recorder.healthy):
            out["warning"] = _NOT_COMMITTED
        return out

    @staticmethod
    def _raise_on_conflict(ack: Ack) -> None:
        if ack.written is not None and ack.written.conflict:
            raise IdempotencyConflict("this Idempotency-Key was already used for a different request")

    async def record_caller(
        self, *, body: Mapping[str, Any], client_id: str | None, request_id: str, idempotency_key: str | None
    ) -> Ack:
        """POST /v1/placements: a decision the caller made itself (validated shape, see schemas).

        Raises `QueueFull` when it can be neither committed nor queued, `IdempotencyConflict`.
        """
        cid = client_id or ANONYMOUS
        chosen = dict(body["chosen"])
        chosen_key, chosen_zone = self._resolve(chosen["location"], ("body", "chosen", "location"))
        baseline = dict(body["baseline"]) if body.get("baseline") else None
        baseline_key = baseline_zone = None
        if baseline is not None:
            baseline_key, baseline_zone = self._resolve(
                baseline["location"], ("body", "baseline", "location")
            )
        row = self._row(
            placement_id=placement_id_for(cid, idempotency_key),
            client_id=cid,
            origin="caller",
            request_id=body.get("request_id") or request_id,
            idempotency_key=idempotency_key,
            fingerprint_of=body,
            workload=body.get("workload") or {},
            chosen=chosen,
            chosen_key=chosen_key,
            chosen_zone=chosen_zone,
            baseline=baseline,
            baseline_key=baseline_key,
            baseline_zone=baseline_zone,
            baseline_name=(baseline.get("name") or "caller-supplied baseline") if baseline else None,
            quality={"warnings": [], "note": "figures supplied by the caller"},
        )
        ack = await self.recorder.submit(row, origin="caller", timeout_s=self.caller_write_timeout_s)
        self._raise_on_conflict(ack)
        return ack

    def _resolve(self, location: Mapping[str, Any], loc: tuple[str | int, ...]) -> tuple[str, str]:
        return self.resolver(location.get("provider"), location.get("region"), location.get("zone"), loc)

    def _row(
        self,
        *,
        placement_id: str,
        client_id: str,
        origin: str,
        request_id: str | None,
        idempotency_key: str | None,
        fingerprint_of: Any,
        workload: Any,
        chosen: Mapping[str, Any],
        chosen_key: str,
        chosen_zone: str,
        baseline: Mapping[str, Any] | None,
        baseline_key: str | None,
        baseline_zone: str | None,
        baseline_name: str | None,
        quality: Mapping[str, Any],
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        start, end = _when(chosen["start"]), _when(chosen["end"])
        base_start = _when(baseline["start"]) if baseline else None
        base_end = _when(baseline["end"]) if baseline else None
        energy = float(chosen["energy_kwh"])
        intensity = float(chosen["avg_carbon_intensity_g_per_kwh"])
        location = chosen.get("location") or {}
        row: dict[str, Any] = {
            "id": placement_id,
            "client_id": client_id,
            "created_at": self.clock() if created_at is None else created_at,
            "request_id": request_id,
            "origin": origin,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint(fingerprint_of),
            "workload": workload,
            "signal": self.signal,
            "location": chosen_key,
            "zone": chosen_zone,
            "provider": location.get("provider"),
            "region": location.get("region"),
            "instance_type": chosen.get("instance_type"),
            "start_at": start,
            "end_at": end,
            "energy_kwh": energy,
            "intensity_g_per_kwh": intensity,
            "emissions_g": float(chosen.get("emissions_g") or energy * intensity),
            "cost_usd": chosen.get("cost_usd"),
            "carbon_source": chosen.get("carbon_source"),
            "price_source": chosen.get("price_source"),
            "baseline_name": baseline_name,
            "baseline_location": baseline_key,
            "baseline_zone": baseline_zone,
            "baseline_start_at": base_start,
            "baseline_end_at": base_end,
            "baseline_energy_kwh": None,
            "baseline_intensity_g_per_kwh": None,
            "baseline_emissions_g": None,
            "baseline_cost_usd": None,
            "baseline_carbon_source": None,
            "quality": dict(quality),
            "status": RECORDED,
            "due_at": self._due(end, base_end),
            "attempts": 0,
        }
        if baseline is not None:
            b_energy = float(baseline["energy_kwh"])
            b_intensity = float(baseline["avg_carbon_intensity_g_per_kwh"])
            row.update(
                baseline_energy_kwh=b_energy,
                baseline_intensity_g_per_kwh=b_intensity,
                baseline_emissions_g=float(baseline.get("emissions_g") or b_energy * b_intensity),
                baseline_cost_usd=baseline.get("cost_usd"),
                baseline_carbon_source=baseline.get("carbon_source"),
            )
        return row

    # ----- reading and outcomes -----

    async def get(self, viewer: Viewer, placement_id: str) -> dict[str, Any]:
        """The placement as stored (404 for an unknown id or another client's)."""
        row = await self._read(placement_id)
        if row is None or (not viewer.admin and row["client_id"] != viewer.client_id):
            raise PlacementNotFound(placement_id)
        return row

    async def _read(self, placement_id: str) -> dict[str, Any] | None:
        try:
            return await self.repository.get(placement_id)
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc

    async def outcome(self, viewer: Viewer, placement_id: str, outcome: Mapping[str, Any]) -> dict[str, Any]:
        """Store what actually ran; the placement is reconciled again with it.

        Idempotent by nature: the same outcome twice leaves the same row.
        """
        row = await self.get(viewer, placement_id)
        start: datetime = outcome["actual_start"].astimezone(UTC)
        end: datetime = outcome["actual_end"].astimezone(UTC)
        now = self.clock()
        if end <= start:
            raise InvalidInput("actual_end must be after actual_start", loc=("body", "actual_end"))
        if end > now + _CLOCK_SKEW:
            raise InvalidInput(
                "an outcome reports a finished run: actual_end is in the future", loc=("body", "actual_end")
            )
        if start < row["created_at"] - timedelta(days=1):
            raise InvalidInput(
                "actual_start is more than a day before the placement was recorded",
                loc=("body", "actual_start"),
            )
        values: dict[str, Any] = {
            "actual_start_at": start,
            "actual_end_at": end,
            "measured_energy_kwh": outcome.get("measured_energy_kwh"),
            "outcome_at": now,
            "status": RECORDED,
            "attempts": 0,
            "reconcile_error": None,
            "due_at": self._due(end, row["baseline_end_at"]),
        }
        location = outcome.get("location")
        if location is not None:
            key, zone = self._resolve(location, ("body", "location"))
            values.update(actual_location=key, actual_zone=zone)
        else:
            values.update(actual_location=None, actual_zone=None)
        try:
            await self.repository.set_outcome(placement_id, values)
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc
        return {**row, **values}

    async def report(
        self, viewer: Viewer, *, group_by: str, start: datetime, end: datetime, client: str | None
    ) -> dict[str, Any]:
        """Aggregated savings; a client sees its own placements, an admin all (or one `client`)."""
        if end <= start:
            raise InvalidInput("'to' must be after 'from'", loc=("query", "to"))
        if end - start > _MAX_REPORT_RANGE:
            raise InvalidInput("report range longer than three years", loc=("query", "from"))
        if client is not None and not viewer.admin and client != viewer.client_id:
            raise InvalidInput("only an admin key may report on another client", loc=("query", "client"))
        scope_client = client if viewer.admin else viewer.client_id
        try:
            rows = await self.repository.aggregate(group_by, start, end, scope_client)
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc
        scope = "all clients" if scope_client is None else f"client {scope_client}"
        return build_report(rows, group_by=group_by, start=start, end=end, scope=scope)

    def health(self) -> dict[str, Any]:
        """For /health: database reachability as last seen by the writer, queue depth, reconciler."""
        out: dict[str, Any] = {
            "status": ComponentStatus.OK if self.recorder.healthy else ComponentStatus.DEGRADED,
            "queued": self.recorder.depth,
        }
        if self.recorder.last_error:
            out["last_error"] = self.recorder.last_error
        if self.reconciler is not None:
            last = self.reconciler.last_run
            out["reconciler"] = {
                "last_run": last.isoformat() if last else None,
                "last_error": self.reconciler.last_error,
            }
        return out


def _from_body(request: BaseModel | Mapping[str, Any]) -> tuple[str, str]:
    """What the optimize body gives its row: its fingerprint and the workload's JSON."""
    dump = getattr(request, "model_dump", None)  # a model, or its JSON form (a mapping)
    body: dict[str, Any] = (
        dump(mode="json", exclude_none=True, exclude=_UNFINGERPRINTED)
        if dump is not None
        else {k: v for k, v in request.items() if k not in _UNFINGERPRINTED}  # type: ignore[union-attr]
    )
    workload = orjson.dumps(body.get("workload") or {}).decode()
    return fingerprint(body), workload


def _workload_json(request: BaseModel | Mapping[str, Any]) -> str:
    """The workload's JSON as `_from_body` gives it (the body's dump, its `workload`), dumped alone."""
    if isinstance(request, Mapping):
        return orjson.dumps(request.get("workload") or {}).decode()
    workload = getattr(request, "workload", None)
    if isinstance(workload, BaseModel):
        return orjson.dumps(workload.model_dump(mode="json", exclude_none=True) or {}).decode()
    return orjson.dumps(workload or {}).decode()


_TIMES: dict[str, datetime] = {}


def _when(value: Any) -> datetime:
    """An option's time (a datetime, or the answer's RFC 3339 text) as aware UTC.

    The answer's times lie on the plan's time grid, so the same few texts come again and again:
    each is parsed once (bounded memo; a parse costs about a microsecond on the shared VM, four
    times per row).
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    text = str(value)
    parsed = _TIMES.get(text)
    if parsed is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        parsed = _TIMES[text] = parse_utc(text)
    return parsed


# ----- composition (called by the app's lifespan and the CLI) -----


@asynccontextmanager
async def open_ledger(
    database: DatabaseSettings,
    settings: LedgerSettings,
    *,
    carbon: CarbonIntensityProvider,
    fallback: CarbonIntensityProvider | None,
    resolver: ZoneResolver,
    clock: Callable[[], datetime],
    signal: str,
    reconcile: bool = True,
    wait_for_live: bool = False,
) -> AsyncIterator[Ledger]:
    """Engine, repository, writer and reconciler tasks; stopped and disposed on exit.

    Nothing here waits for the database: migration runs in the background (serialised across
    processes) and the writer and reconciler start once it succeeded; until then recordings are
    queued. A database that is down at start-up therefore never delays readiness.
    """
    engine = db.create_engine(database)
    repository = LedgerRepository(engine)
    recorder = Recorder(
        repository,
        queue_max=database.queue_max,
        write_timeout_s=database.write_timeout_s,
        retry_interval_s=database.retry_interval_s,
        commit_interval_s=database.commit_interval_s,
    )
    reconciler = (
        Reconciler(
            repository, carbon, settings=settings, clock=clock, fallback=fallback, wait_for_live=wait_for_live
        )
        if reconcile and settings.reconcile_enabled
        else None
    )
    ledger = Ledger(
        repository,
        recorder,
        settings=settings,
        resolver=resolver,
        clock=clock,
        signal=signal,
        reconciler=reconciler,
        caller_write_timeout_s=database.caller_write_timeout_s,
    )
    tasks: list[asyncio.Task[None]] = []

    stopping = asyncio.Event()

    async def start() -> None:
        delay = database.retry_interval_s
        while database.migrate_on_start:
            try:
                await db.upgrade(engine)
                break
            except Exception as exc:  # database down at start-up: keep queueing, keep trying
                recorder.healthy = False
                recorder.last_error = type(exc).__name__
                log.warning("ledger database not ready (%s); retrying in %.0f s", type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                if stopping.is_set():
                    return
                delay = min(delay * 2, 60.0)
        recorder.start()
        if reconciler is not None:
            tasks.append(asyncio.create_task(reconciler.run_forever(), name="ledger-reconciler"))

    # Not awaited: readiness never waits for the database; recordings queue until it is migrated.
    starter = asyncio.create_task(start(), name="ledger-start")
    log.info("ledger database %s", db.redacted(db.database_url(database)))
    try:
        yield ledger
    finally:
        # Let an in-flight migration or at-head check finish instead of cancelling it: a
        # cancelled aiosqlite call would post its result to a loop that has closed meanwhile.
        stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(starter), timeout=10)
        except TimeoutError:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if reconciler is not None:
            await reconciler.release()
        await recorder.aclose()
        await engine.dispose()
