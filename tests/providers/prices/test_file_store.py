"""The local-file KeyValueStore of the embedded mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from carbon_optimizer.providers.store import FileStore, KeyValueStore, default_cache_dir


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_round_trip_overwrite_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "prices")
    assert isinstance(store, KeyValueStore)
    assert await store.get("prices:aws:us-east-1:on_demand") is None  # no directory yet: a miss

    await store.set("prices:aws:us-east-1:on_demand", b"\x00binary\nvalue", 3600)
    assert await store.get("prices:aws:us-east-1:on_demand") == b"\x00binary\nvalue"
    await store.set("prices:aws:us-east-1:on_demand", b"v2", 3600)
    assert await store.get("prices:aws:us-east-1:on_demand") == b"v2"
    assert await store.get("prices:aws:us-east-1:spot") is None

    await store.delete("prices:aws:us-east-1:on_demand")
    assert await store.get("prices:aws:us-east-1:on_demand") is None
    assert store.healthy
    assert [name for name in _files(tmp_path / "prices") if name.startswith(".tmp-")] == []
    assert stat.S_IMODE((tmp_path / "prices").stat().st_mode) == 0o700


async def test_expired_entries_are_misses_and_removed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.set("k", b"v", -1)
    assert await store.get("k") is None
    assert _files(tmp_path) == []


async def test_unwritable_directory_marks_unhealthy_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = FileStore(blocker / "prices")
    await store.set("k", b"v", 60)
    assert store.healthy is False
    assert await store.get("k") is None


async def test_a_second_instance_sees_the_first_ones_writes(tmp_path: Path) -> None:
    await FileStore(tmp_path).set("prices:lambda:*:on_demand", b"table", 60)
    assert await FileStore(tmp_path).get("prices:lambda:*:on_demand") == b"table"


def test_default_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "carbon-optimizer" / "prices"
    assert FileStore().directory == tmp_path / "carbon-optimizer" / "prices"
