"""The one generic cache of the data wing: local tier → shared store → one upstream call.

Both halves cache the same way, so the machinery lives here once and each half supplies a codec
(bytes ⇄ entries, how to relabel a value as stale, what counts as an empty answer):

- **Local tier.** Decoded entries live in a small in-process LRU for `local_ttl_s` in front of the
  store (one Redis GET costs more CPU than the rest of a cached answer); with a store only this
  process writes (memory), the local copy is as good as the store's.
- **Single-flight.** Concurrent misses for one key cause one upstream call: in-process through a
  shared task (`SingleFlight`), across processes through a short store lock (`SET NX PX`) that
  the others poll behind until the value appears (or `lock_wait_s` passes).
- **Per-key cool-down.** After a failure the key is not asked upstream again for
  `failure_cooldown_s`; meanwhile the hot path answers from memory (stale or an error) without a
  store round trip per request. The cool-down map is bounded.
- **Stale-while-error.** Good entries stay in the store `stale_max_age_s` past their freshness;
  when the upstream fails the last good value is served relabelled as stale.
- **Negative entries beside, never over, the last good value.** A definite answer (no data, not
  in plan, bad token) is kept under `<key>:neg`, so the good value survives it and is served
  (stale) in preference to fallback data. Negatives live for seconds with back-off per key
  (`negative_base_s`, doubling, capped at `negative_ttl_s`), so a short 401/403/404 blip costs
  seconds, not the cap; a later good answer deletes the marker for every worker.
- **Nothing is written back.** A local copy is never written into an emptied store (a flushed
  Redis stays empty of old decisions), and an upstream answer the codec calls empty (all values
  null) never replaces a good value: the good value is served stale instead.
- **Refresh hook.** `refresh(key, loader)` refetches a key that is about to expire (background
  refresh), through the same single-flight.

A store never raises (see `store.py`), so a failing Redis only costs hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from carbon_optimizer.errors import (
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderUnavailable,
)
from carbon_optimizer.metrics import CACHE_EVENTS, child
from carbon_optimizer.providers.budget import UpstreamBudgetExhausted
from carbon_optimizer.providers.store import CacheStore, LockingStore, ScanningStore

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

NEGATIVE_SUFFIX = ":neg"
# Definite upstream answers: cached as negative entries instead of being retried on every request.
NEGATIVE_KINDS: dict[str, type[ProviderError]] = {
    "no_data": NoDataForZone,
    "not_entitled": ProviderNotEntitled,
    "auth": ProviderAuthError,
}
DEFINITE = (NoDataForZone, ProviderNotEntitled, ProviderAuthError)


@dataclass(frozen=True)
class Entry(Generic[V]):
    """A cached answer: a value, or a negative (definite error) entry."""

    fresh_until: float  # epoch seconds
    value: V | None = None
    negative: tuple[str, str] | None = None  # (kind, message)

    def is_fresh(self, now: float) -> bool:
        """Whether the entry may be served without asking upstream."""
        return now < self.fresh_until

    def error(self, source: str = "cache") -> ProviderError:
        """The cached error of a negative entry."""
        assert self.negative is not None
        kind, message = self.negative
        return NEGATIVE_KINDS.get(kind, NoDataForZone)(message, source=source)

    def result(self) -> V:
        """The cached value, or the cached error raised again."""
        if self.negative is not None:
            raise self.error()
        assert self.value is not None
        return self.value


class Codec(Protocol[V]):
    """How one half stores its values: bytes ⇄ entries, stale relabelling, emptiness."""

    def encode(self, entry: Entry[V]) -> bytes:
        """Bytes for the store (a versioned format)."""
        ...

    def decode(self, data: bytes) -> Entry[V] | None:
        """The entry, or None for bytes of another format or version (a miss)."""
        ...

    def fetched_at(self, value: V) -> float:
        """Epoch seconds when the value was fetched upstream (for the stale age limit)."""
        ...

    def stale(self, value: V, error: str) -> V:
        """The same value labelled stale, carrying the error that made us serve it."""
        ...

    def empty(self, value: V) -> bool:
        """True for an answer with no usable values (it never replaces a good one)."""
        ...


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """Freshness, patience and memory of one tiered cache."""

    local_ttl_s: float = 30.0
    local_max_entries: int = 4096
    stale_max_age_s: float = 24 * 3600.0
    negative_base_s: float = 5.0
    negative_ttl_s: float = 600.0
    lock_ttl_s: float = 10.0
    lock_wait_s: float = 5.0
    failure_cooldown_s: float = 5.0


class LocalTier(Generic[K, V]):
    """Small LRU of decoded values, each remembering when it entered the tier.

    `generation` counts every change of what the tier holds (put, pop, eviction): a `Lease` taken
    at one generation knows that every key still maps to the object it saw while it is unchanged.
    """

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_entries = max_entries
        self.generation = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> tuple[float, V] | None:
        """(stored_at, value) or None."""
        item = self._data.get(key)
        if item is not None:
            self._data.move_to_end(key)
        return item

    def put(self, key: K, value: V, now: float) -> None:
        """Insert, evicting the least recently used entry when full."""
        self.generation += 1
        self._data[key] = (now, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget `key`."""
        if self._data.pop(key, None) is not None:
            self.generation += 1

    def keys(self) -> list[K]:
        """Every key (oldest first)."""
        return list(self._data)


class Generational(Protocol):
    """Anything whose peeked answers can change only when its `generation` changes (or by time)."""

    @property
    def generation(self) -> int:
        """A counter bumped on every change that could change a peeked answer."""
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    """How long what a `peek` answered stays its answer, checkable without asking again.

    Why: the fresh-answer path asks 20–150 zones per request, each through a few layers whose
    answer is an in-process memo hit; a caller that memoises the whole request's lookups keeps one
    lease per tier instead and walks no layer while it holds. A lease holds while `clock()` is
    before `until` (the earliest local expiry it covers: freshness and the local tier's TTL) and
    every holder's `generation` is the one seen (no entry put, replaced, evicted or dropped since).
    `peeks` counts the peeks it stands for, so a caller can count them as local hits.
    """

    name: str  # the tier's metric name
    clock: Callable[[], float]
    until: float
    holders: tuple[tuple[Generational, int], ...]
    peeks: int = 1

    def holds(self) -> bool:
        """Whether every peek it covers would still answer the same object now."""
        if not self.clock() < self.until:
            return False
        return all(holder.generation == seen for holder, seen in self.holders)

    def held_by(self, holder: Generational) -> Lease:
        """The same lease, also bounded by `holder`'s generation (a layer above the tier with state)."""
        holders = (*self.holders, (holder, holder.generation))
        return Lease(self.name, self.clock, self.until, holders, self.peeks)

    def joined(self, other: Lease) -> Lease | None:
        """One lease for both when they share a tier (name and clock); None otherwise."""
        if other.clock is not self.clock or other.name != self.name:
            return None
        holders = dict.fromkeys(self.holders)
        holders.update(dict.fromkeys(other.holders))
        until = min(self.until, other.until)
        return Lease(self.name, self.clock, until, tuple(holders), self.peeks + other.peeks)


def join_leases(leases: list[Lease]) -> tuple[Lease, ...]:
    """The leases merged per tier (what a request-shape memo checks: one per tier, not per key)."""
    merged: list[Lease] = []
    for lease in leases:
        for i, have in enumerate(merged):
            joined = have.joined(lease)
            if joined is not None:
                merged[i] = joined
                break
        else:
            merged.append(lease)
    return tuple(merged)


class SingleFlight(Generic[K, T]):
    """One running task per key; every concurrent caller awaits the same one (shielded)."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: K) -> asyncio.Task[T] | None:
        """The task in flight for `key`, if any."""
        return self._tasks.get(key)

    def keys(self) -> list[K]:
        """Keys with a task in flight."""
        return list(self._tasks)

    def start(
        self, key: K, factory: Callable[[], Awaitable[T]], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """The task for `key`, started from `factory` unless one is already running."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            if name is not None:
                task.set_name(name)
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return task

    async def run(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        """Join or start the key's task; one caller giving up (its deadline) never cancels it."""
        return await asyncio.shield(self.start(key, factory))

    def _forget(self, key: K, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not reported as unhandled

    async def aclose(self) -> None:
        """Cancel every task in flight (shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TieredCache(Generic[V]):
    """Local tier + shared store + single-flight upstream, for values of one codec (module doc)."""

    def __init__(
        self,
        name: str,
        store: CacheStore,
        codec: Codec[V],
        policy: TierPolicy,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.store = store
        self.codec = codec
        self.policy = policy
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._locking: LockingStore | None = store if isinstance(store, LockingStore) else None
        # With only this process writing (memory store), local entries are as good as the store's.
        self._local_ttl_s = policy.local_ttl_s if self._locking is not None else math.inf
        self._local: LocalTier[str, Entry[V]] = LocalTier(policy.local_max_entries)
        self.flights: SingleFlight[str, V] = SingleFlight()
        # key → (until, reason, best good entry known then): during a cool-down the hot path
        # answers from memory without a store round trip per zone.
        self._cooling: OrderedDict[str, tuple[float, str, Entry[V] | None]] = OrderedDict()
        self._negative_level: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._local)

    # ----- reading -----

    async def get(self, key: str, loader: Callable[[], Awaitable[V]], ttl_s: float) -> V:
        """Answer from the local tier, the store, or one shared upstream call."""
        now = self._clock()
        answer = self._from_local(key, now)
        if answer is not None:
            return answer.result()
        return await self.flights.run(key, lambda: self._load(key, loader, ttl_s))

    def peek(self, key: str) -> V | None:
        """The value `get` would answer from the local tier right now, synchronously; else None.

        For callers that memoise work derived from a value (the carbon chain's painted answers):
        the same object back means nothing changed. Counts a local hit like `get`; never answers
        a negative marker or a stale value (those take `get`).
        """
        got = self.peek_lease(key)
        return None if got is None else got[0]

    def peek_lease(self, key: str) -> tuple[V, Lease] | None:
        """`peek`, plus the `Lease` saying how long that very object stays its answer.

        The lease ends at the entry's freshness or its local-tier life, whichever comes first, or
        at any change of the local tier (a refresh replaces the entry: a new object). Counts a
        local hit like `peek`.
        """
        item = self._local.get(key)
        entry = self._fresh_local(item, self._clock())
        if entry is None or entry.negative is not None or item is None:
            return None
        child(CACHE_EVENTS, self.name, "local", "hit").inc()
        until = min(entry.fresh_until, item[0] + self._local_ttl_s)
        tier = self._local
        assert entry.value is not None
        return entry.value, Lease(self.name, self._clock, until, ((tier, tier.generation),))

    async def refresh(
        self, key: str, loader: Callable[[], Awaitable[V]], ttl_s: float, *, min_remaining_s: float = 0.0
    ) -> bool:
        """Fetch upstream now unless the entry stays fresh for `min_remaining_s`; True if refreshed."""
        best = self._best_known(key, await self._store_get(key))
        if best is not None and best.fresh_until - self._clock() > min_remaining_s:
            return False
        with contextlib.suppress(ProviderError):
            await self.flights.run(key, lambda: self._refresh(key, loader, ttl_s, best))
            return True
        return False

    async def clear_negative(self, key: str) -> None:
        """Forget a key's negative marker everywhere (the operators' lever after a fixed token)."""
        self._local.pop(key + NEGATIVE_SUFFIX)
        self._negative_level.pop(key, None)
        self._cooling.pop(key, None)
        await self.store.delete(key + NEGATIVE_SUFFIX)

    async def clear_negatives(self, patterns: list[str]) -> int:
        """Forget every negative marker matching a glob of `patterns`, here and in the shared store.

        The operators' lever for a zone (`POST /v1/admin/zones/{zone}/clear-negative`, `carbon-optimizer
        cache clear-negative`): the store's markers go for every worker and replica at once; other
        workers' local copies of a marker live at most `negative_base_s` (see `_from_local`).
        Returns the number of markers deleted from the store (-1: the store could not be swept).
        """
        for key in list(self._local.keys()):
            if key.endswith(NEGATIVE_SUFFIX) and any(fnmatch.fnmatchcase(key, p) for p in patterns):
                self._local.pop(key)
                base = key.removesuffix(NEGATIVE_SUFFIX)
                self._negative_level.pop(base, None)
                self._cooling.pop(base, None)
        if not isinstance(self.store, ScanningStore):
            return 0
        total = 0
        for pattern in patterns:
            deleted = await self.store.delete_matching(pattern)
            if deleted < 0:
                return -1
            total += deleted
        return total

    def _fresh_local(self, item: tuple[float, Entry[V]] | None, now: float) -> Entry[V] | None:
        """The local entry if it may still answer: fresh, and younger than the local tier's TTL."""
        if item is None:
            return None
        stored_at, entry = item
        return entry if entry.is_fresh(now) and now - stored_at < self._local_ttl_s else None

    def _from_local(self, key: str, now: float) -> _Answer[V] | None:
        item = self._local.get(key)
        entry = self._fresh_local(item, now)
        if entry is not None:
            child(CACHE_EVENTS, self.name, "local", "hit").inc()
            return _Answer(value=entry.value)
        neg = self._local.get(key + NEGATIVE_SUFFIX)
        if neg is not None:
            stored_at, marker = neg
            # A marker is trusted locally for one base negative life at most, so an operator's
            # clear in the shared store reaches every worker within seconds.
            if marker.is_fresh(now) and now - stored_at < min(self._local_ttl_s, self.policy.negative_base_s):
                child(CACHE_EVENTS, self.name, "local", "negative").inc()
                return self._stale_or_error(item[1] if item else None, marker.error())
        return None

    async def _store_get(self, key: str) -> Entry[V] | None:
        data = await self.store.get(key)
        return self.codec.decode(data) if data is not None else None

    def _best_known(self, key: str, stored: Entry[V] | None) -> Entry[V] | None:
        item = self._local.get(key)
        local = item[1] if item is not None else None
        if stored is not None and stored.negative is not None:
            stored = None  # a marker written by an older version under the good key: not a value
        if local is None:
            return stored
        if stored is None:
            return local
        return stored if stored.fresh_until >= local.fresh_until else local

    async def _load(self, key: str, loader: Callable[[], Awaitable[V]], ttl_s: float) -> V:
        cooling = self._cooling.get(key)
        if cooling is not None:
            until, reason, known = cooling
            if self._monotonic() < until:
                # This key just failed upstream: answer stale/error now, from memory.
                best = self._best_known(key, known)
                if best is not None and best.is_fresh(self._clock()):
                    return best.result()
                return self._stale_or_error(best, ProviderUnavailable(f"{reason} (recent failure)")).result()
            del self._cooling[key]
        stored = await self._store_get(key)
        now = self._clock()
        tier = self.store.name
        if stored is not None and stored.negative is None and stored.is_fresh(now):
            self._local.put(key, stored, now)
            # Another worker got a good answer: this worker's negative back-off starts over too.
            self._negative_level.pop(key, None)
            child(CACHE_EVENTS, self.name, tier, "hit").inc()
            return stored.result()
        best = self._best_known(key, stored)
        if best is not None and best.is_fresh(now):
            # The store lost it (eviction, flush) or was down when we fetched, but our copy is still
            # fresh: serve it. It is not written back: an emptied store stays empty of old decisions.
            child(CACHE_EVENTS, self.name, "local", "hit").inc()
            return best.result()
        marker = await self._store_get(key + NEGATIVE_SUFFIX)
        if marker is not None and marker.negative is not None and marker.is_fresh(now):
            self._local.put(key + NEGATIVE_SUFFIX, marker, now)
            child(CACHE_EVENTS, self.name, tier, "negative").inc()
            return self._stale_or_error(best, marker.error()).result()
        child(CACHE_EVENTS, self.name, tier, "miss").inc()
        return await self._refresh(key, loader, ttl_s, best)

    async def _refresh(
        self, key: str, loader: Callable[[], Awaitable[V]], ttl_s: float, fallback: Entry[V] | None
    ) -> V:
        token = secrets.token_hex(8)
        lock_key = key + ":lock"
        held = False
        if self._locking is not None:
            acquired = await self._locking.acquire_lock(lock_key, token, self.policy.lock_ttl_s)
            if acquired is False:
                other = await self._wait_for_other(key, lock_key)
                if other is not None:
                    slot = key if other.negative is None else key + NEGATIVE_SUFFIX
                    self._local.put(slot, other, self._clock())
                    if other.negative is None:
                        return other.result()
                    return self._stale_or_error(fallback, other.error()).result()
                return self._failed(
                    key, fallback, ProviderUnavailable("another worker's upstream fetch did not complete")
                )
            held = acquired is True
        try:
            return await self._fetch_and_store(key, loader, ttl_s, fallback)
        finally:
            # Only once the answer (or the negative marker) is in the store: a waiter that sees
            # the lock gone reads the store once more, and must find it there. Releasing before
            # the write served those waiters the fallback under load (a 2-process test caught it).
            if held and self._locking is not None:
                await self._locking.release_lock(lock_key, token)

    async def _fetch_and_store(
        self, key: str, loader: Callable[[], Awaitable[V]], ttl_s: float, fallback: Entry[V] | None
    ) -> V:
        try:
            value = await loader()
        except UpstreamBudgetExhausted as exc:
            # The caller's budget, not the upstream, said no: no cool-down for the other callers.
            return self._stale_or_error(fallback, exc).result()
        except DEFINITE as exc:
            self._cooling.pop(key, None)
            await self._put_negative(key, exc)
            return self._stale_or_error(fallback, exc).result()
        except ProviderError as exc:
            return self._failed(key, fallback, exc)
        good = fallback is not None and fallback.value is not None and not self.codec.empty(fallback.value)
        if good and self.codec.empty(value):
            return self._failed(
                key, fallback, ProviderUnavailable(f"{self.name}: upstream answered without values")
            )
        self._cooling.pop(key, None)
        self._negative_level.pop(key, None)
        entry: Entry[V] = Entry(fresh_until=self._clock() + ttl_s, value=value)
        self._local.put(key, entry, self._clock())
        self._local.pop(key + NEGATIVE_SUFFIX)
        await self.store.set(key, self.codec.encode(entry), ttl_s + self.policy.stale_max_age_s)
        await self.store.delete(key + NEGATIVE_SUFFIX)  # recovered: no worker obeys an old "no"
        return value

    async def _put_negative(self, key: str, exc: ProviderError) -> None:
        level = self._negative_level.pop(key, 0)
        self._negative_level[key] = level + 1
        while len(self._negative_level) > self.policy.local_max_entries:
            self._negative_level.popitem(last=False)
        ttl = min(self.policy.negative_ttl_s, self.policy.negative_base_s * (2.0**level))
        kind = next(k for k, cls in NEGATIVE_KINDS.items() if isinstance(exc, cls))
        marker: Entry[V] = Entry(fresh_until=self._clock() + ttl, negative=(kind, exc.message))
        self._local.put(key + NEGATIVE_SUFFIX, marker, self._clock())
        await self.store.set(key + NEGATIVE_SUFFIX, self.codec.encode(marker), ttl)

    async def _wait_for_other(self, key: str, lock_key: str) -> Entry[V] | None:
        """Poll the store for the answer another process is fetching, up to `lock_wait_s`."""
        assert self._locking is not None
        give_up_at = self._monotonic() + self.policy.lock_wait_s
        delay = 0.01
        while (remaining := give_up_at - self._monotonic()) > 0:
            await self._sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.05)  # a short cap: waiters see the value soon after it lands
            entry = await self._store_get(key)
            if entry is not None and entry.negative is None and entry.is_fresh(self._clock()):
                child(CACHE_EVENTS, self.name, self.store.name, "hit").inc()
                return entry
            held = await self._locking.lock_held(lock_key)
            if held is None:
                return None  # store went away: stop waiting on it
            if not held:
                for candidate in (key, key + NEGATIVE_SUFFIX):  # it may have landed just before the release
                    entry = await self._store_get(candidate)
                    wanted = entry is not None and (entry.negative is None) == (candidate == key)
                    if wanted and entry is not None and entry.is_fresh(self._clock()):
                        return entry
                return None
        return None

    def _failed(self, key: str, fallback: Entry[V] | None, exc: ProviderError) -> V:
        self._cooling[key] = (self._monotonic() + self.policy.failure_cooldown_s, exc.message, fallback)
        self._cooling.move_to_end(key)
        while len(self._cooling) > self.policy.local_max_entries:
            self._cooling.popitem(last=False)
        return self._stale_or_error(fallback, exc).result()

    def _stale_or_error(self, fallback: Entry[V] | None, exc: ProviderError) -> _Answer[V]:
        now = self._clock()
        if fallback is not None and fallback.value is not None:
            age = now - self.codec.fetched_at(fallback.value)
            if age <= self.policy.stale_max_age_s:
                child(CACHE_EVENTS, self.name, "any", "stale").inc()
                return _Answer(value=self.codec.stale(fallback.value, f"{type(exc).__name__}: {exc.message}"))
        return _Answer(error=exc)

    async def aclose(self) -> None:
        """Cancel the fetches still running (shutdown)."""
        await self.flights.aclose()


@dataclass(frozen=True)
class _Answer(Generic[V]):
    value: V | None = None
    error: ProviderError | None = None

    def result(self) -> V:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value
