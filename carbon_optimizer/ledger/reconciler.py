"""Background reconciliation: realised intensity for placements whose window has passed.

For each due placement it asks the carbon provider (the `CarbonIntensityProvider` protocol the
service ranks with: the carbon chain, live history through the cache when a source is configured,
the bundled data offline) for the
intensity over what actually ran (the reported outcome, else the plan) and over the baseline
window, and stores realised emissions of both, hence realised savings and the forecast error.

- One replica at a time: a lease row in the database (`ledger_leases`), renewed every batch; a
  replica that dies stops renewing and another takes over after `lease_ttl_s`.
- Resumable: all state is in the placement rows (status, attempts, due_at); each batch commits,
  so a restart continues with what is still due. Recomputing a row is harmless (same inputs).
- Never blocks requests: an asyncio task that awaits I/O between small CPU steps; failures are
  logged and retried with backoff (`attempts`), never raised into the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from carbon_optimizer.domain.scoring import evaluate_window
from carbon_optimizer.domain.series import align_series
from carbon_optimizer.errors import CarbonOptimizerError, InvalidInput, ProviderError
from carbon_optimizer.ledger import metrics
from carbon_optimizer.ledger.models import FAILED, RECONCILED
from carbon_optimizer.ledger.repository import LedgerRepository
from carbon_optimizer.providers.base import CarbonIntensityProvider
from carbon_optimizer.settings import LedgerSettings

log = logging.getLogger(__name__)
LEASE_NAME: Final = "reconciler"
_MAX_RETRY_DELAY: Final = timedelta(days=1)
BUNDLED_PREFIX: Final = "fallback:"  # source labels of the bundled data (providers/carbon/offline.py)


class LiveHistoryMissing(CarbonOptimizerError):
    """The chain answered the window from bundled data only; retried while attempts remain."""


def holder_id() -> str:
    """Who holds the lease: host, pid and a random suffix (unique per process start)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Reconciler:
    """Computes realised figures for due placements, one batch at a time, under a lease."""

    def __init__(
        self,
        repository: LedgerRepository,
        carbon: CarbonIntensityProvider,
        *,
        settings: LedgerSettings,
        clock: Callable[[], datetime],
        fallback: CarbonIntensityProvider | None = None,
        holder: str | None = None,
        wait_for_live: bool = False,
    ) -> None:
        self.repository = repository
        self.carbon = carbon
        self.fallback = fallback
        # A live source is configured: a window painted (partly) from the bundled data is retried
        # until the last attempt instead of being settled on it (the chain fills gaps silently).
        self.wait_for_live = wait_for_live
        self.settings = settings
        self.clock = clock
        self.holder = holder or holder_id()
        self.last_run: datetime | None = None
        self.last_error: str | None = None

    async def run_once(self) -> int:
        """Reconcile everything due now (batch by batch while the lease is ours); return the count."""
        done = 0
        while True:
            now = self.clock()
            lease_until = now + timedelta(seconds=self.settings.lease_ttl_s)
            if not await self.repository.acquire_lease(LEASE_NAME, self.holder, now, lease_until):
                return done  # another replica is reconciling
            batch = await self.repository.due(now, self.settings.reconcile_batch)
            if not batch:
                self.last_run = now
                return done
            updates = [(row["id"], row["outcome_at"], await self._reconcile(row, now)) for row in batch]
            await self.repository.save_reconciliation(updates)
            done += sum(1 for _, _, values in updates if values.get("status") == RECONCILED)
            if len(batch) < self.settings.reconcile_batch:
                self.last_run = now
                return done

    async def run_forever(self) -> None:
        """Loop until cancelled; every error is logged and retried next interval."""
        while True:
            try:
                # SQLite's report rollups: the writer catches them up while it writes, this
                # when it is idle (a no-op on PostgreSQL and when nothing is new). Its failure
                # must not cost this round's reconciliation: reports stay exact without it.
                await self.repository.roll_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ledger rollup catch-up failed (%s); retrying later", type(exc).__name__)
            try:
                await self.run_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down etc.: requests never see this
                self.last_error = type(exc).__name__
                log.warning("ledger reconciliation failed (%s); retrying later", type(exc).__name__)
            await asyncio.sleep(self.settings.reconcile_interval_s)

    async def release(self) -> None:
        """Give up the lease (shutdown)."""
        with contextlib.suppress(Exception):
            await self.repository.release_lease(LEASE_NAME, self.holder, self.clock())

    # ----- one placement -----

    async def _reconcile(self, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        try:
            return await self._realise(row, now)
        except InvalidInput as exc:  # unknown zone: will never succeed
            metrics.RECONCILED.labels(outcome="unreconcilable").inc()
            return {"status": FAILED, "reconcile_error": exc.message, "attempts": row["attempts"] + 1}
        except (ProviderError, CarbonOptimizerError, ValueError) as exc:
            attempts = int(row["attempts"]) + 1
            message = f"{type(exc).__name__}: {exc}"[:500]
            if attempts >= self.settings.reconcile_max_attempts:
                metrics.RECONCILED.labels(outcome="unreconcilable").inc()
                return {"status": FAILED, "reconcile_error": message, "attempts": attempts}
            metrics.RECONCILED.labels(outcome="retry").inc()
            delay = min(timedelta(seconds=self.settings.reconcile_interval_s * 2**attempts), _MAX_RETRY_DELAY)
            return {"attempts": attempts, "reconcile_error": message, "due_at": now + delay}

    async def _realise(self, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        # Live history first; the bundled data only on the last attempt (labelled in the source),
        # so a short outage delays a placement instead of settling it on climatology.
        last_try = int(row["attempts"]) + 1 >= self.settings.reconcile_max_attempts
        start: datetime = row["actual_start_at"] or row["start_at"]
        end: datetime = row["actual_end_at"] or row["end_at"]
        zone: str = row["actual_zone"] or row["zone"]
        planned = (row["end_at"] - row["start_at"]).total_seconds()
        energy = row["measured_energy_kwh"]
        if energy is None:
            # The energy model's estimate, scaled to how long the job really ran.
            ran = (end - start).total_seconds()
            energy = row["energy_kwh"] * (ran / planned if planned > 0 else 1.0)
        intensity, source = await self._intensity(zone, start, end, last_try)
        values: dict[str, Any] = {
            "status": RECONCILED,
            "reconciled_at": now,
            "reconcile_error": None,
            "attempts": int(row["attempts"]) + 1,
            "realised_energy_kwh": energy,
            "realised_intensity_g_per_kwh": intensity,
            "realised_emissions_g": energy * intensity,
            "realised_source": source,
        }
        metrics.REALISED_EMISSIONS.labels(kind="chosen").inc(max(energy * intensity, 0.0))
        if row["baseline_zone"] and row["baseline_start_at"] and row["baseline_end_at"]:
            # The counterfactual ran the same job: apply the same energy correction to it.
            ratio = energy / row["energy_kwh"] if row["energy_kwh"] else 1.0
            base_energy = (row["baseline_energy_kwh"] or row["energy_kwh"]) * ratio
            base_intensity, base_source = await self._intensity(
                row["baseline_zone"], row["baseline_start_at"], row["baseline_end_at"], last_try
            )
            values.update(
                realised_baseline_intensity_g_per_kwh=base_intensity,
                realised_baseline_emissions_g=base_energy * base_intensity,
                realised_baseline_source=base_source,
            )
            metrics.REALISED_EMISSIONS.labels(kind="baseline").inc(max(base_energy * base_intensity, 0.0))
            saved = base_energy * base_intensity - energy * intensity
            if saved > 0:
                metrics.REALISED_SAVINGS.inc(saved)
        metrics.RECONCILED.labels(outcome="reconciled").inc()
        return values

    async def _intensity(
        self, zone: str, start: datetime, end: datetime, allow_fallback: bool
    ) -> tuple[float, str]:
        """Time-weighted mean intensity over [start, end) and the sources it came from."""
        try:
            series = (await self.carbon.series(zone, start, end)).series
        except ProviderError:
            if self.fallback is None or not allow_fallback:
                raise
            series = (await self.fallback.series(zone, start, end)).series
        sources = series.sources_between(start, end)
        if self.wait_for_live and not allow_fallback and any(s.startswith(BUNDLED_PREFIX) for s in sources):
            raise LiveHistoryMissing(f"no live history yet for {zone} (only {'+'.join(sources)})")
        grid = align_series([series], start, end)
        mean = evaluate_window(grid, 0, start, end - start)
        return float(mean), "+".join(sources)
