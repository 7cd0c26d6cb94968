"""The one storage seam shared by the carbon cache and the price cache.

Implementations: `RedisStore` (shared by every worker and replica) and `MemoryStore`
(in-process, the embedded default), both in `carbon_optimizer.cache`; a file store for the
embedded price refresh lives with the price providers. A store never raises on backend failure:
it reports a miss (get) or drops the write (set) and marks itself degraded, so a dead Redis costs
a request nothing but cache hits.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class KeyValueStore(Protocol):
    """Bytes by key with a time-to-live."""

    name: str

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None on a miss or a backend failure."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store the value for ttl_s seconds (best effort)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the key (best effort)."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the backend is failing (reported by /health and /readyz)."""
        ...
