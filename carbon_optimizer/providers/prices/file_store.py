"""A `KeyValueStore` on local files: the price cache of the embedded (no Redis) mode.

Why: `carbon-optimizer prices refresh` runs as its own process and the embedded server must see
what it fetched, across restarts, without Redis. One file per key under a private directory
(default `$XDG_CACHE_HOME/carbon-optimizer/prices`, or `PricingSettings.file_cache_dir`); each file
is a one-line JSON header (key, expiry) followed by the value bytes, written to a temporary file
and renamed, so a reader never sees half a file and a crashed writer leaves the old value intact.
Like every store it never raises: failures are misses or dropped writes, and mark it unhealthy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ._common import log

_SUFFIX = ".entry"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/carbon-optimizer/prices` (or `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carbon-optimizer" / "prices"


class FileStore:
    """Bytes by key with a TTL, one file per key; safe for several processes on one host."""

    name = "file"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._healthy = True

    @property
    def healthy(self) -> bool:
        """False after an I/O failure, until the next success."""
        return self._healthy

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.directory / f"{digest}{_SUFFIX}"

    def _get_sync(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline())
                value = handle.read()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._failed("read", exc)
            return None
        self._healthy = True
        if header.get("key") != key:
            return None  # a hash collision (or a foreign file): a miss, never someone else's value
        if float(header.get("expires_at", 0)) <= time.time():
            self._unlink(path)
            return None
        return value

    def _set_sync(self, key: str, value: bytes, ttl_s: float) -> None:
        header = json.dumps({"key": key, "expires_at": time.time() + ttl_s}).encode() + b"\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(header)
                    handle.write(value)
                os.replace(tmp, self._path(key))
            except BaseException:
                self._unlink(Path(tmp))
                raise
        except OSError as exc:
            self._failed("write", exc)
            return
        self._healthy = True

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self._failed("delete", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._healthy = False
        log.warning("price file cache %s failed in %s: %s", what, self.directory, type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None on a miss, an expired entry or an I/O failure."""
        return await asyncio.to_thread(self._get_sync, key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store the value for ttl_s seconds (atomic replace; best effort)."""
        await asyncio.to_thread(self._set_sync, key, value, ttl_s)

    async def delete(self, key: str) -> None:
        """Remove the key (best effort)."""
        await asyncio.to_thread(self._unlink, self._path(key))
