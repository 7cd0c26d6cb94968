"""Shared builders for ledger tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from carbon_optimizer.ledger.ledger import Ledger, catalog_resolver
from carbon_optimizer.ledger.recorder import PlacementWriter, Recorder
from carbon_optimizer.ledger.repository import LedgerRepository
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.settings import LedgerSettings

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def option(
    zone: str,
    start: datetime,
    hours: float = 2.0,
    *,
    kwh: float = 1.0,
    intensity: float = 100.0,
    cost: float | None = 1.0,
    provider: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """An option dict shaped like the optimize response's."""
    location: dict[str, Any] = {"zone": zone}
    if provider is not None:
        location.update(provider=provider, region=region)
    return {
        "location": location,
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(hours=hours)).isoformat().replace("+00:00", "Z"),
        "energy_kwh": kwh,
        "avg_carbon_intensity_g_per_kwh": intensity,
        "emissions_g": kwh * intensity,
        "cost_usd": cost,
        "instance_type": None,
        "carbon_source": "fake:test",
        "price_source": None,
    }


def make_ledger(
    repository: LedgerRepository,
    *,
    now: datetime = T0,
    settings: LedgerSettings | None = None,
    write_timeout_s: float = 20.0,  # generous: the CI machine may be busy
    commit_interval_s: float = 0.0,
    caller_write_timeout_s: float | None = None,
    writer: PlacementWriter | None = None,  # what the recorder writes through (default: repository)
) -> tuple[Ledger, Recorder]:
    recorder = Recorder(
        writer or repository,
        queue_max=100,
        write_timeout_s=write_timeout_s,
        retry_interval_s=0.05,
        commit_interval_s=commit_interval_s,
    )
    recorder.start()
    ledger = Ledger(
        repository,
        recorder,
        settings=settings or LedgerSettings(reconcile_delay_s=0),
        resolver=catalog_resolver(load_region_catalog()),
        clock=lambda: now,
        signal="location-based average, lifecycle",
        caller_write_timeout_s=write_timeout_s if caller_write_timeout_s is None else caller_write_timeout_s,
    )
    return ledger, recorder


async def record(
    ledger: Ledger,
    client: str,
    chosen: dict[str, Any],
    baseline: dict[str, Any] | None,
    key: str | None = None,
) -> str:
    body: dict[str, Any] = {"chosen": chosen}
    if baseline is not None:
        body["baseline"] = {**baseline, "name": "test baseline"}
    ack = await ledger.record_caller(body=body, client_id=client, request_id="rid", idempotency_key=key)
    assert ack.recorded, ack
    return ack.placement_id


def placement_row(
    placement_id: str, *, client: str = "alice", key: str | None = None, fingerprint: str = "f"
) -> dict[str, Any]:
    """A complete placement row as the recorder hands it to the database (all required columns)."""
    start = T0 + timedelta(hours=1)
    return {
        "id": placement_id,
        "client_id": client,
        "created_at": T0,
        "request_id": f"rid-{placement_id}",
        "origin": "optimize",
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "workload": {"duration_minutes": 120},
        "signal": "location-based average, lifecycle",
        "location": "zone/DE",
        "zone": "DE",
        "start_at": start,
        "end_at": start + timedelta(hours=2),
        "energy_kwh": 1.0,
        "intensity_g_per_kwh": 100.0,
        "emissions_g": 100.0,
        "quality": {"warnings": []},
        "status": "recorded",
        "due_at": start + timedelta(hours=2),
        "attempts": 0,
    }
