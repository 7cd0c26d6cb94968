"""A small in-process cache of whole optimisation answers, for identical repeated requests.

Schedulers, CI hooks and probes often send the very same body many times a minute. An answer is a
pure function of (body, the minute `now` is floored to, the data behind it), so an identical body
within the same minute and within `ttl_s` (default 15 s, shorter than the carbon cache's local
tier) gets the stored answer with a fresh `request_id` and `generated_at`. The data can therefore
be at most `ttl_s` older than a recomputation would see. `Cache-Control: no-cache` on the request
bypasses it; responses say `X-Result-Cache: hit|miss|bypass`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ResultCache:
    """LRU of response bodies keyed by (request bytes, minute), each valid for `ttl_s`."""

    def __init__(
        self, *, max_entries: int = 256, ttl_s: float = 15.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[bytes, int], tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, body: bytes, minute: int) -> dict[str, Any] | None:
        """The stored answer for this body in this minute, if still fresh."""
        if self.max_entries == 0:
            return None
        key = (body, minute)
        hit = self._entries.get(key)
        if hit is None:
            return None
        stored_at, result = hit
        if self._clock() - stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, body: bytes, minute: int, result: dict[str, Any]) -> None:
        """Store an answer (the caller must not mutate it afterwards)."""
        if self.max_entries == 0:
            return
        self._entries[(body, minute)] = (self._clock(), result)
        self._entries.move_to_end((body, minute))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
