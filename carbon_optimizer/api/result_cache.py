"""A small in-process cache of whole optimisation answers, for identical repeated requests.

Schedulers, CI hooks and probes often send the very same body many times a minute. An answer is a
pure function of (body, the minute `now` is floored to, the data behind it), so an identical body
within the same minute and within `ttl_s` (default 15 s, shorter than the carbon cache's local
tier) gets the stored answer with a fresh `request_id` and `generated_at`. The data can therefore
be at most `ttl_s` older than a recomputation would see. `Cache-Control: no-cache` on the request
bypasses it; responses say `X-Result-Cache: hit|miss|bypass`.

Bounded twice: by entries and by bytes (`edge.result_cache_max_bytes`). Entries are keyed by a
16-byte BLAKE2b digest of the body, not the body itself (large bodies used to cost +70–90 MB per
worker), and each answer is charged its serialised size; an answer larger than the whole budget
is simply not cached.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

_ENTRY_OVERHEAD = 200  # dict slot, tuple, key bytes object, float: roughly, per entry
CacheKey = tuple[bytes, int]  # (16-byte digest of the body, minute)


class ResultCache:
    """LRU of answers keyed by (digest of the request bytes, minute), each valid for `ttl_s`."""

    def __init__(
        self,
        *,
        max_entries: int = 256,
        ttl_s: float = 15.0,
        max_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, dict[str, Any], int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(body: bytes, minute: int) -> CacheKey:
        """The entry key of a body in a minute: hashed once, for `lookup` and `store` alike."""
        return hashlib.blake2b(body, digest_size=16).digest(), minute

    def get(self, body: bytes, minute: int) -> dict[str, Any] | None:
        """The stored answer for this body in this minute, if still fresh."""
        return self.lookup(self.key(body, minute))

    def lookup(self, key: CacheKey) -> dict[str, Any] | None:
        """The stored answer under `key` (from `key`), if still fresh."""
        if self.max_entries == 0:
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        stored_at, result, _size = hit
        if self._clock() - stored_at > self.ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, body: bytes, minute: int, result: dict[str, Any], encoded_size: int | None = None) -> None:
        """Store an answer (the caller must not mutate it afterwards).

        `encoded_size`: the length of the answer as the caller already serialised it (the route
        sends those bytes anyway), so it is not encoded twice; measured here when not given.
        """
        self.store(self.key(body, minute), result, encoded_size)

    def store(self, key: CacheKey, result: dict[str, Any], encoded_size: int | None = None) -> None:
        """`put` under a key the caller already has (the route hashes a body once, not twice)."""
        if self.max_entries == 0 or self.max_bytes == 0:
            return
        size = (len(orjson.dumps(result)) if encoded_size is None else encoded_size) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock(), result, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: CacheKey) -> None:
        _, _, size = self._entries.pop(key)
        self._bytes -= size

    @property
    def nbytes(self) -> int:
        """Bytes charged to the stored answers (what the byte bound limits)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
