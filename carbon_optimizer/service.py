"""Orchestration: resolve locations, fetch prices and carbon series concurrently, call the engine.

Nothing here knows HTTP or a wire format. The API layer converts request schemas into the domain
`OptimizeQuery` and presents the typed `Plan` this returns (`api/present.py`). Every upstream failure ends in
fallback data plus a warning: the only exception that escapes for data reasons is
`DataUnavailable`, when not even the bundled data can answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import numpy as np

from carbon_optimizer.domain import data_quality
from carbon_optimizer.domain.data_quality import FittedOn, data_quality_warnings
from carbon_optimizer.domain.energy import PowerEstimate, energy_kwh, estimate_power
from carbon_optimizer.domain.instances import Infeasible, select_instance
from carbon_optimizer.domain.models import (
    CarbonSeries,
    FloatArray,
    GpuRequirement,
    InstanceOffer,
    Location,
    Objective,
    ObjectiveMode,
    OfferTable,
    PriceType,
    Workload,
    format_utc,
)
from carbon_optimizer.domain.plan import Option, Plan, baseline_score, margin, savings
from carbon_optimizer.domain.scoring import (
    RankedCandidate,
    ScoringInput,
    candidate_grid,
    evaluate_window,
    rank_candidates,
    window_means,
)
from carbon_optimizer.domain.series import IntensityGrid, align_series, seconds
from carbon_optimizer.errors import (
    InvalidInput,
    NothingFeasible,
    UnknownRegion,
    UnknownZone,
)
from carbon_optimizer.metrics import OPTIMIZE_CANDIDATES
from carbon_optimizer.providers.base import (
    CarbonIntensityProvider,
    InMemoryCarbonBatch,
    InMemoryCarbonLookup,
    InMemoryPriceBatch,
    InMemoryPriceLookup,
    PriceProvider,
)
from carbon_optimizer.providers.carbon.base import SeriesResult, Signal
from carbon_optimizer.providers.catalog import RegionCatalog
from carbon_optimizer.uncertainty_step import CandidateWindows, UncertaintyStep

log = logging.getLogger(__name__)
Loc = tuple[str | int, ...]
_SELECTION_CACHE_SIZE = 4096
_GRID_CACHE_SIZE = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    """Wall clock in UTC (injected into the service so tests control time)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LocationQuery:
    """A requested location before catalog resolution, with its position for error messages."""

    provider: str | None
    region: str | None
    zone: str | None
    price_usd_per_hour: float | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class OptimizeQuery:
    """Domain form of an optimisation request (validated for shape by the API schemas)."""

    workload: Workload
    locations: Sequence[LocationQuery] | None
    providers: Sequence[str] | None
    earliest_start: datetime | None
    deadline: datetime | None
    objective: Objective
    time_step: timedelta
    max_results: int
    baseline_location: LocationQuery | None = None
    baseline_start: datetime | None = None
    request_id: str = "-"
    signal: Signal = Signal.AVERAGE
    max_per_location: int | None = 1
    risk: str = "p50"  # "p90": the top options ranked by their pessimistic emissions


# A request's location list as `_resolve_all` memoises it: what resolution reads of each query
# (provider, region, zone, price), or the providers listed. The API's location specs carry the same
# four fields (`api/convert` memoises its queries on them with this getter too).
QUERY_FIELDS = attrgetter("provider", "region", "zone", "price_usd_per_hour")
_ListKey = tuple[tuple[tuple[str | None, str | None, str | None, float | None], ...] | None, tuple[str, ...]]


def _selection_shape(workload: Workload) -> tuple[Any, ...]:
    """What instance selection reads of a workload (its memo key; never the job's length)."""
    return (
        workload.vcpus,
        workload.memory_gib,
        workload.gpu,
        tuple(sorted(workload.instance_types.items())),
        workload.cpu_architecture,
        workload.allow_burstable,
    )


@dataclass(slots=True)
class _Placed:
    """A resolved location with what the engine needs about it."""

    location: Location
    offer: InstanceOffer | None
    price_usd_per_hour: float | None
    price_source: str | None
    power: PowerEstimate
    energy_kwh: float


_Row = tuple[Location, InstanceOffer | None, float | None, str | None, PowerEstimate]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One location's placement for a workload shape: its row (no energy) or why it is infeasible."""

    row: _Row | None
    infeasible: str | None  # the reason, when it cannot host the workload
    warnings: tuple[str, ...]
    # False when it read no price table of its own (its reason reads other tables): not kept.
    keep: bool


@dataclass(frozen=True, slots=True)
class _Placement:
    """`_place`'s memoised part: every location's outcome, in order (None: made per request)."""

    locations: tuple[Location, ...]  # kept: the memo's key holds their ids
    tables: tuple[OfferTable | None, ...]
    outcomes: tuple[_Outcome | None, ...]


@dataclass(slots=True)
class _Context:
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


class OptimizerService:
    """Application service behind every endpoint that needs data plus the engine."""

    def __init__(
        self,
        *,
        catalog: RegionCatalog,
        carbon: CarbonIntensityProvider,
        prices: PriceProvider,
        fallback_prices: PriceProvider | None = None,
        max_window: timedelta = timedelta(days=7),
        onprem_pue: float = 1.56,
        clock: Callable[[], datetime] = utc_now,
        uncertainty: UncertaintyStep | None = None,
        fitted_on: FittedOn | None = None,
    ) -> None:
        self.uncertainty = uncertainty
        # zone → what our forecaster's fit used ("live", "mixed", "replay"): a fit on measured
        # history supports `forecast` data quality, one on the replay only `replay`.
        self.fitted_on: FittedOn = fitted_on or _unknown_fit
        self.catalog = catalog
        self.carbon = carbon
        self.prices = prices
        self.fallback_prices = fallback_prices
        self.max_window = max_window
        self.onprem_pue = onprem_pue
        self.clock = clock
        # Offer tables are immutable and few; requests repeat: memoise selection per (table, needs).
        self._powers: dict[tuple[Any, ...], PowerEstimate] = {}
        self._selections: OrderedDict[
            tuple[Any, ...], dict[int, tuple[OfferTable, InstanceOffer | Infeasible]]
        ] = OrderedDict()
        self._grids: OrderedDict[tuple[Any, ...], tuple[tuple[CarbonSeries, ...], IntensityGrid]] = (
            OrderedDict()
        )
        self._workload_key: (
            tuple[Workload, dict[int, tuple[OfferTable, InstanceOffer | Infeasible]]] | None
        ) = None
        # Resolution is pure given the catalog (immutable once loaded): memoised per requested
        # location and per request's location list; errors are raised, never kept.
        self._resolved: dict[tuple[str | None, str | None, str | None, float | None], Location] = {}
        self._resolved_lists: OrderedDict[_ListKey, tuple[tuple[Location, ...], tuple[str, ...]]] = (
            OrderedDict()
        )
        self._placements: OrderedDict[tuple[Any, ...], _Placement] = OrderedDict()
        # Synchronous in-memory lanes of the providers, when they have them (see providers/base.py).
        self._carbon_now = carbon.series_cached if isinstance(carbon, InMemoryCarbonLookup) else None
        self._prices_now = prices.offers_cached if isinstance(prices, InMemoryPriceLookup) else None
        # Their batch forms (one pass per request, memoised per request shape), when they have them.
        self._carbon_many = carbon.series_many if isinstance(carbon, InMemoryCarbonBatch) else None
        self._prices_many = prices.offers_many if isinstance(prices, InMemoryPriceBatch) else None

    def _select(self, table: OfferTable, workload: Workload) -> InstanceOffer | Infeasible:
        """`select_instance`, memoised per workload shape and (immutable) table.

        Two levels: the workload's shape is looked up once per workload object (a request selects
        for 20–150 tables with the same one, and hashing the shape per table cost more than the
        hit), then each table by identity, checked against the table kept in the entry.
        """
        last = self._workload_key
        if last is not None and last[0] is workload:
            chosen_in = last[1]
        else:
            shape = _selection_shape(workload)
            found = self._selections.get(shape)
            if found is None:
                found = self._selections[shape] = {}
                if len(self._selections) > _GRID_CACHE_SIZE:
                    self._selections.popitem(last=False)
            chosen_in = found
            self._workload_key = (workload, chosen_in)
        hit = chosen_in.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        chosen = select_instance(table, workload)
        if len(chosen_in) >= _SELECTION_CACHE_SIZE:
            chosen_in.pop(next(iter(chosen_in)))
        chosen_in[id(table)] = (table, chosen)
        return chosen

    def _grid(self, series: list[CarbonSeries], start: datetime, end: datetime) -> IntensityGrid:
        """`align_series`, memoised on the very series objects and the grid's hour range.

        Why: fresh requests move their start by seconds, but the grid (start floored to the step,
        end rounded up) and the memoised series behind it stay the same for an hour, so the
        aligned (L, N) array and its exact prefix sums are built once and every later window
        query is index arithmetic on them. Keyed on object identity, checked against the series
        kept in the entry (which also keeps their ids from being reused).
        """
        hour = timedelta(hours=1)
        key = (tuple(id(s) for s in series), (start - _EPOCH) // hour, -((_EPOCH - end) // hour))
        hit = self._grids.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], series, strict=True)):
            grid = hit[1]
            if grid.start <= start and end <= grid.end:
                return grid
        grid = align_series(series, start, end)
        # Only grids on the hour lattice are shared (a finer series would make `end` matter).
        if grid.step == hour and grid.end == _EPOCH + key[2] * hour:
            self._grids[key] = (tuple(series), grid)
            if len(self._grids) > _GRID_CACHE_SIZE:
                self._grids.popitem(last=False)
        return grid

    def _power(self, provider: str | None, workload: Workload, offer: InstanceOffer | None) -> PowerEstimate:
        """Energy-model estimate, memoised: it depends only on these few inputs."""
        key = (
            provider,
            workload.vcpus,
            workload.memory_gib,
            workload.gpu,
            workload.power_watts,
            offer.gpu_model if offer is not None else None,
        )
        found = self._powers.get(key)
        if found is None:
            found = estimate_power(provider, workload, offer, onprem_pue=self.onprem_pue)
            if len(self._powers) >= _SELECTION_CACHE_SIZE:
                self._powers.pop(next(iter(self._powers)))
            self._powers[key] = found
        return found

    # ----- resolution -----

    def resolve(self, query: LocationQuery) -> Location:
        """Map a requested location onto the catalog (422 naming the field when unknown)."""
        key = (query.provider, query.region, query.zone, query.price_usd_per_hour)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolve(query)
            if len(self._resolved) >= _SELECTION_CACHE_SIZE:
                self._resolved.pop(next(iter(self._resolved)))
            self._resolved[key] = found
        return found

    def _resolve(self, query: LocationQuery) -> Location:
        if query.zone is not None:
            info = self.catalog.zone(query.zone)
            if info is None:
                raise UnknownZone(f"unknown zone '{query.zone}'", loc=(*query.loc, "zone"))
            return Location(zone=info.zone, price_usd_per_hour=query.price_usd_per_hour)
        if query.provider is None or query.region is None:
            raise InvalidInput("a location needs 'provider' and 'region', or 'zone'", loc=query.loc)
        region = self.catalog.get(query.provider, query.region)
        if region is None:
            raise UnknownRegion(
                f"unknown region '{query.region}' for provider '{query.provider}'", loc=(*query.loc, "region")
            )
        return Location(
            zone=region.zone,
            provider=region.provider,
            region=region.region,
            price_usd_per_hour=query.price_usd_per_hour,
        )

    def _resolve_all(self, query: OptimizeQuery, ctx: _Context) -> list[Location]:
        """The request's locations, resolved and de-duplicated; memoised per location list.

        The key is what resolution reads of each query (provider, region, zone, price), not its
        `loc`: only an error names the field, and a list with an unknown location raises and is
        not kept, so its error always names the field of this request. (Comparing the dataclasses
        themselves cost ~25 µs for 20 locations; these tuples compare in C.)
        """
        key = (
            tuple(map(QUERY_FIELDS, query.locations)) if query.locations is not None else None,
            tuple(query.providers or ()),
        )
        hit = self._resolved_lists.get(key)
        if hit is None:
            inner = _Context()
            hit = (tuple(self._resolve_list(query, inner)), tuple(inner.warnings))
            self._resolved_lists[key] = hit
            if len(self._resolved_lists) > _GRID_CACHE_SIZE:
                self._resolved_lists.popitem(last=False)
        for message in hit[1]:
            ctx.warn(message)
        return list(hit[0])

    def _resolve_list(self, query: OptimizeQuery, ctx: _Context) -> list[Location]:
        if query.locations is not None:
            resolved: list[Location] = []
            seen: set[str] = set()
            for item in query.locations:
                location = self.resolve(item)
                if location.key in seen:
                    ctx.warn(f"duplicate location {location.key} ignored")
                    continue
                seen.add(location.key)
                resolved.append(location)
            return resolved
        providers = query.providers or ()
        return [
            Location(zone=r.zone, provider=r.provider, region=r.region)
            for provider in providers
            for r in self.catalog.regions(provider)
        ]

    # ----- time window -----

    def _window(self, query: OptimizeQuery) -> tuple[datetime, datetime]:
        now = self.clock().astimezone(UTC).replace(second=0, microsecond=0)
        requested_start = query.earliest_start.astimezone(UTC) if query.earliest_start else now
        deadline = query.deadline.astimezone(UTC) if query.deadline else requested_start + timedelta(hours=24)
        duration = query.workload.duration
        if deadline - requested_start < duration:
            raise InvalidInput(
                "deadline - earliest_start is shorter than the workload duration",
                loc=("body", "window", "deadline"),
            )
        if deadline - requested_start > self.max_window:
            raise InvalidInput(
                f"window longer than the {self.max_window.total_seconds() / 86400:g}-day maximum",
                loc=("body", "window", "deadline"),
            )
        start = max(requested_start, now)
        if start + duration > deadline:
            raise InvalidInput(
                "the window has passed: now + duration is after the deadline",
                loc=("body", "window", "deadline"),
            )
        return start, deadline

    def _check_baseline_start(self, baseline_start: datetime, start: datetime, deadline: datetime) -> None:
        """422 on `baseline.start` outside [window start − max window, deadline].

        Further out, the carbon data for the baseline would be the bundled replay or annual average
        standing in for a time it does not describe (a 2020 start would be scored on the 2023 curve),
        so the savings would claim more than the data supports.
        """
        earliest = start - self.max_window
        if not earliest <= baseline_start <= deadline:
            days = self.max_window.total_seconds() / 86400
            raise InvalidInput(
                f"baseline.start {format_utc(baseline_start)} is outside the data's reach for this "
                f"request: it must lie between {format_utc(earliest)} (the window's start minus "
                f"{days:g} days) and the deadline {format_utc(deadline)}",
                loc=("body", "baseline", "start"),
            )

    # ----- data fetch -----

    async def _table(
        self, provider: str, region: str, price_type: PriceType, ctx: _Context
    ) -> OfferTable | None:
        # The price chain ends in the bundled tables itself: nothing to fall back to here.
        return await self.prices.offers(provider, region, price_type)

    async def _series(
        self,
        zone: str,
        start: datetime,
        end: datetime,
        ctx: _Context,
        signal: Signal = Signal.AVERAGE,
    ) -> CarbonSeries:
        # The carbon chain ends in the bundled data and says so in its warnings.
        result = await self.carbon.series(zone, start, end, signal)
        for message in result.warnings:
            ctx.warn(message)
        return result.series

    def _check_signal(self, zones: Sequence[str], signal: Signal) -> None:
        """422 naming every zone that has no source of `signal` (average is always answerable)."""
        if signal is Signal.AVERAGE:
            return
        lacking = [zone for zone in zones if signal not in self.carbon.signals(zone)]
        if lacking:
            raise InvalidInput(
                f"no {signal.value} carbon data source for zone(s) {', '.join(lacking)}; "
                "use signal 'average' or configure a source that has it",
                loc=("body", "signal"),
            )

    async def _tables(
        self, locations: Sequence[Location], price_type: PriceType, ctx: _Context
    ) -> list[OfferTable | None]:
        """Each location's offer table: in-memory hits synchronously, one gather for the rest."""
        tables: list[OfferTable | None] = [None] * len(locations)
        misses: list[tuple[int, str, str]] = []
        cloud: list[tuple[int, str, str]] = []
        for i, loc in enumerate(locations):
            if loc.provider is not None and loc.region is not None:
                cloud.append((i, loc.provider, loc.region))
        many, now = self._prices_many, self._prices_now
        hits: Sequence[tuple[OfferTable | None] | None]
        if many is not None:
            hits = many([(p, r) for _, p, r in cloud], price_type)
        elif now is not None:
            hits = [now(p, r, price_type) for _, p, r in cloud]
        else:
            hits = [None] * len(cloud)
        for place, hit in zip(cloud, hits, strict=True):
            if hit is None:
                misses.append(place)
            else:
                tables[place[0]] = hit[0]
        if misses:
            fetched = await asyncio.gather(*(self._table(p, r, price_type, ctx) for _, p, r in misses))
            for (i, _, _), table in zip(misses, fetched, strict=True):
                tables[i] = table
        return tables

    async def _zone_series(
        self, zones: Sequence[str], start: datetime, end: datetime, ctx: _Context, signal: Signal
    ) -> list[CarbonSeries]:
        """Each zone's series: in-memory hits synchronously, one gather for the rest.

        Warnings are added in zone order whichever way each answer came.
        """
        results: list[SeriesResult | None]
        many, now = self._carbon_many, self._carbon_now
        if many is not None:
            results = many(zones, start, end, signal)
        elif now is not None:
            results = [now(zone, start, end, signal) for zone in zones]
        else:
            results = [None] * len(zones)
        misses = [i for i, r in enumerate(results) if r is None]
        if misses:
            fetched = await asyncio.gather(
                *(self.carbon.series(zones[i], start, end, signal) for i in misses)
            )
            for i, answer in zip(misses, fetched, strict=True):
                results[i] = answer
        out: list[CarbonSeries] = []
        for result in results:
            assert result is not None
            for message in result.warnings:
                ctx.warn(message)
            out.append(result.series)
        return out

    async def _place(
        self, locations: Sequence[Location], workload: Workload, uses_cost: bool, ctx: _Context
    ) -> tuple[list[_Placed], list[tuple[Location, str]]]:
        """Each location's offer, price, power and energy for this workload (or why it cannot host it).

        Everything but the energy depends on the location, its (immutable) offer table and the
        workload's shape, not on its duration, so outcomes are memoised on those (object
        identities, checked against the entry): a scheduler's next request costs one `_Placed`
        per location. A location without a price table is made afresh on every request (its
        reason reads other tables); the others of the request stay memoised.
        """
        tables = await self._tables(locations, workload.price_type, ctx)
        # What placement reads of the workload besides what selection reads (never its length).
        shape = (_selection_shape(workload), workload.power_watts, workload.price_type, uses_cost)
        key = (tuple(map(id, locations)), tuple(map(id, tables)), shape)
        hit = self._placements.get(key)
        if (
            hit is not None
            and all(a is b for a, b in zip(hit.locations, locations, strict=True))
            and all(a is b for a, b in zip(hit.tables, tables, strict=True))
        ):
            self._placements.move_to_end(key)
            kept = hit.outcomes
        else:
            hit, kept = None, (None,) * len(locations)
        outcomes: list[_Outcome] = []
        for location, table, known in zip(locations, tables, kept, strict=True):
            outcomes.append(
                known if known is not None else await self._place_one(location, table, workload, uses_cost)
            )
        if hit is None:
            memo = tuple(o if o.keep else None for o in outcomes)
            self._placements[key] = _Placement(tuple(locations), tuple(tables), memo)
            if len(self._placements) > _GRID_CACHE_SIZE:
                self._placements.popitem(last=False)
        duration = workload.duration
        placed: list[_Placed] = []
        infeasible: list[tuple[Location, str]] = []
        for location, outcome in zip(locations, outcomes, strict=True):
            for message in outcome.warnings:
                ctx.warn(message)
            if outcome.row is not None:
                where, offer, price, source, power = outcome.row
                placed.append(_Placed(where, offer, price, source, power, energy_kwh(power, duration)))
            elif outcome.infeasible is not None:
                infeasible.append((location, outcome.infeasible))
        return placed, infeasible

    async def _place_one(
        self, location: Location, table: OfferTable | None, workload: Workload, uses_cost: bool
    ) -> _Outcome:
        price = location.price_usd_per_hour
        price_source: str | None = "request" if price is not None else None
        if not location.is_cloud:
            return _Outcome(
                (location, None, price, price_source, self._power(None, workload, None)), None, (), True
            )
        if table is None or len(table) == 0:
            missing = await self._missing_price(location, workload.price_type)
            if uses_cost and price is None:
                return _Outcome(None, missing, (), False)
            power = self._power(location.provider, workload, None)
            warning = f"{missing}; instance type and cost unknown"
            return _Outcome((location, None, price, price_source, power), None, (warning,), False)
        chosen = self._select(table, workload)
        if isinstance(chosen, Infeasible):
            return _Outcome(None, chosen.reason, (), True)
        warnings: tuple[str, ...] = ()
        asked = workload.gpu.count if workload.gpu is not None else 0
        if asked and chosen.gpu_count > asked:
            warnings = (
                f"{location.key}: {chosen.instance_type} has {chosen.gpu_count} GPUs for the "
                f"{asked} asked for: you pay for {chosen.gpu_count} (energy counts the {asked} "
                "in use); it is the cheapest type there with enough of the GPUs asked for",
            )
        if price is None:
            price, price_source = chosen.price_usd_per_hour, chosen.source
        power = self._power(location.provider, workload, chosen)
        return _Outcome((location, chosen, price, price_source, power), None, warnings, True)

    async def _missing_price(self, location: Location, price_type: PriceType) -> str:
        """Why a cloud location has no price, as precisely as the data allows.

        A spot request where only on-demand prices exist says so (the bundled tables carry spot
        prices for GCP only), instead of a bare "no price data".
        """
        if price_type is PriceType.SPOT and location.provider is not None and location.region is not None:
            on_demand = await self.prices.offers(location.provider, location.region, PriceType.ON_DEMAND)
            if on_demand is not None and len(on_demand) > 0:
                bundled = on_demand.offer(0).source.startswith("bundled")
                where = " in the bundled data" if bundled else ""
                return (
                    f"no spot price{where} for {location.provider} ({location.key}; on-demand available: "
                    "price_type on_demand)"
                )
        if price_type is PriceType.SPOT:
            return f"no spot or on-demand price data for {location.key}"
        return f"no price data for {location.key}"

    # ----- optimise -----

    async def optimize(self, query: OptimizeQuery) -> Plan:
        """Rank (location, start) options: the typed plan (presentation: `api/present.py`)."""
        ctx = _Context()
        workload = query.workload
        locations = self._resolve_all(query, ctx)
        start, deadline = self._window(query)
        grid = candidate_grid(start, deadline, workload.duration, query.time_step)
        uses_cost = query.objective.uses_cost

        baseline_query = query.baseline_location
        baseline_location = self.resolve(baseline_query) if baseline_query is not None else None
        baseline_start = (query.baseline_start or start).astimezone(UTC)  # floored at the edge
        self._check_baseline_start(baseline_start, start, deadline)

        placed, infeasible = await self._place(locations, workload, uses_cost, ctx)
        objective = query.objective
        if (
            uses_cost
            and query.objective.mode is not ObjectiveMode.COST
            and not any(p.price_usd_per_hour is not None for p in placed)
        ):
            # No candidate has any price: a mode that mixes cost into carbon (balanced, the default;
            # budget; monetized) degrades to its carbon part. Pure `cost` mode keeps its 422.
            objective = Objective(mode=ObjectiveMode.CARBON)
            ctx.warn(
                f"no candidate has a price, so objective mode '{query.objective.mode.value}' cannot use "
                "cost: ranked by carbon only (objective.mode 'carbon'; set price_usd_per_hour to "
                "rank by cost too)"
            )
            uses_cost = False
            placed, infeasible = await self._place(locations, workload, uses_cost, ctx)
        if uses_cost:
            for index, item in enumerate(placed):
                if item.price_usd_per_hour is None:
                    position = next(
                        (i for i, loc in enumerate(locations) if loc.key == item.location.key), index
                    )
                    raise InvalidInput(
                        f"objective mode '{query.objective.mode.value}' needs a price for every location; "
                        f"{item.location.key} has none (set price_usd_per_hour)",
                        loc=_location_loc(query, position, "price_usd_per_hour"),
                    )
        if not placed:
            raise NothingFeasible(
                "no location can host this workload",
                [(loc.key, reason) for loc, reason in infeasible],
            )

        zones = sorted({p.location.zone for p in placed})
        self._check_signal(zones, query.signal)
        series_list = await self._zone_series(zones, start, deadline, ctx, query.signal)
        by_zone = dict(zip(zones, series_list, strict=True))
        intensity = self._grid([by_zone[p.location.zone] for p in placed], start, deadline)
        scoring = rank_candidates(
            ScoringInput(
                grid=intensity,
                candidates=grid,
                energy_kwh=np.array([p.energy_kwh for p in placed], dtype=np.float64),
                cost_usd=np.array(
                    [
                        np.nan
                        if p.price_usd_per_hour is None
                        else p.price_usd_per_hour * workload.duration_hours
                        for p in placed
                    ],
                    dtype=np.float64,
                ),
                objective=objective,
                max_results=query.max_results,
                max_per_location=query.max_per_location,
                collapse_duplicates=True,
            )
        )
        OPTIMIZE_CANDIDATES.observe(scoring.candidates_evaluated)
        if not scoring.ranked:
            raise NothingFeasible("no candidate satisfies the objective's constraints")

        ranked = scoring.ranked
        chosen = [placed[c.location_index] for c in ranked]
        emissions = [p.energy_kwh * c.avg_intensity_g_per_kwh for p, c in zip(chosen, ranked, strict=True)]
        order: Sequence[int] = range(len(ranked))
        uncertainty = None
        if self.uncertainty is not None:
            windows = CandidateWindows(
                [p.location.zone for p in chosen],
                [c.start for c in ranked],
                [c.end for c in ranked],
                [p.energy_kwh for p in chosen],
                emissions,
            )
            order, uncertainty = self.uncertainty.apply(windows, by_zone, self.clock(), query.risk)
        # Each option made once, in its final rank, with its margin to the final best.
        best_g = emissions[order[0]]
        options = tuple(
            self._option(rank + 1, chosen[k], ranked[k], by_zone, workload, margin(emissions[k], best_g))
            for rank, k in enumerate(order)
        )
        # Per zone, then per location (resolution already dropped duplicate locations).
        zone_kinds = {
            zone: data_quality.weakest(series.sources_between(start, deadline), self.fitted_on(zone))
            for zone, series in by_zone.items()
        }
        for message in data_quality_warnings(options, grid.count > 1, self.fitted_on):
            ctx.warn(message)
        baseline = await self._baseline(
            baseline_location,
            baseline_start,
            placed,
            workload,
            objective,
            scoring.min_emissions_g,
            scoring.min_cost_usd,
            ctx,
            explicit=baseline_location is not None,
            first_requested=locations[0] if locations and query.locations is not None else None,
            intensity=intensity,
            by_zone=by_zone,
            signal=query.signal,
            first_start_means=None
            if scoring.means is None or baseline_start != start
            else scoring.means[:, 0],
        )
        return Plan(
            request_id=query.request_id,
            generated_at=self.clock(),
            objective=objective,
            requested_mode=query.objective.mode,
            window_start=start,
            window_end=deadline,
            options=options,
            baseline=baseline,
            savings=savings(options[0], baseline),
            candidates_evaluated=scoring.candidates_evaluated,
            infeasible=tuple(infeasible),
            energy_model=placed[scoring.ranked[0].location_index].power,
            warnings=tuple(ctx.warnings),
            data_quality=data_quality.summary(zone_kinds[p.location.zone] for p in placed),
            baseline_kind=(
                None
                if baseline is None
                else "explicit"
                if baseline_location is not None
                else "first-listed-now"
                if query.locations is not None
                else "median-now"
            ),
            uncertainty=uncertainty,
        )

    def _option(
        self,
        rank: int | None,
        item: _Placed,
        cand: RankedCandidate,
        by_zone: dict[str, CarbonSeries],
        workload: Workload,
        to_best: tuple[float, float | None],
    ) -> Option:
        series = by_zone[item.location.zone]
        return _option(
            rank=rank,
            item=item,
            start=cand.start,
            end=cand.end,
            avg=cand.avg_intensity_g_per_kwh,
            score=cand.score,
            carbon_sources=series.sources_between(cand.start, cand.end),
            duration_hours=workload.duration_hours,
            fitted_on=self.fitted_on(item.location.zone),
            to_best=to_best,
        )

    async def _baseline(
        self,
        location: Location | None,
        start: datetime,
        placed: Sequence[_Placed],
        workload: Workload,
        objective: Objective,
        min_emissions: float,
        min_cost: float | None,
        ctx: _Context,
        *,
        explicit: bool,
        first_requested: Location | None,
        intensity: IntensityGrid,
        by_zone: dict[str, CarbonSeries],
        signal: Signal = Signal.AVERAGE,
        first_start_means: FloatArray | None = None,
    ) -> Option | None:
        if not explicit and first_requested is None:
            # `providers` lists no location first: the median-emissions candidate starting now.
            item = self._median_now(placed, start, workload, intensity)
        elif not explicit:
            # Default baseline: the first location the caller listed, as soon as allowed.
            assert first_requested is not None
            match = next((p for p in placed if p.location.key == first_requested.key), None)
            if match is None:
                ctx.warn(f"baseline location {first_requested.key} is infeasible; no savings computed")
                return None
            item = match
        else:
            assert location is not None
            match = next((p for p in placed if p.location.key == location.key), None)
            if match is not None:
                item = match
            else:
                extra, bad = await self._place([location], workload, objective.uses_cost, ctx)
                if not extra:
                    reason = bad[0][1] if bad else "infeasible"
                    ctx.warn(
                        f"baseline location {location.key} is infeasible ({reason}); no savings computed"
                    )
                    return None
                item = extra[0]
        end = start + workload.duration
        scored = by_zone.get(item.location.zone)
        if scored is not None and intensity.start <= start and end <= intensity.end:
            # Usually the baseline is a scored location inside the window: reuse its row.
            row = next(i for i, p in enumerate(placed) if p.location.zone == item.location.zone)
            series = scored
            if first_start_means is not None:  # the engine already scored this very window
                avg = float(first_start_means[row])
            else:
                avg = evaluate_window(intensity, row, start, workload.duration)
        else:
            series = await self._series(item.location.zone, start, end, ctx, signal)
            avg = evaluate_window(align_series([series], start, end), 0, start, workload.duration)
        hours, price = workload.duration_hours, item.price_usd_per_hour
        # The option's own emissions_g and cost_usd, computed as its properties do (no copy to score it).
        cost = None if price is None else price * hours
        score = baseline_score(objective, item.energy_kwh * avg, cost, min_emissions, min_cost)
        return _option(
            rank=None,
            item=item,
            start=start,
            end=end,
            avg=avg,
            score=score,
            carbon_sources=series.sources_between(start, end),
            duration_hours=hours,
            fitted_on=self.fitted_on(item.location.zone),
        )

    def _median_now(
        self, placed: Sequence[_Placed], start: datetime, workload: Workload, intensity: IntensityGrid
    ) -> _Placed:
        """The candidate with the median emissions when started now (lower median; ties: request order).

        Why: with `providers` nobody listed a location first, and the catalog's first region (e.g.
        aws/af-south-1 on a coal grid) makes any saving look huge. The median is what an
        unoptimised choice of any of these regions achieves typically, is robust to the dirtiest
        and cleanest outliers, and is computed from the same grid as the ranking.
        """
        offset = np.array([seconds(start - intensity.start) / 60.0])
        means = window_means(intensity, offset, seconds(workload.duration) / 60.0)[:, 0]
        emissions = np.array([p.energy_kwh for p in placed], dtype=np.float64) * means
        order = np.argsort(emissions, kind="stable")
        return placed[int(order[(len(placed) - 1) // 2])]

    # ----- other endpoints -----

    async def zone_series(self, zone: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        """The series the engine would use for a zone over [start, end)."""
        info = self.catalog.zone(zone)
        if info is None:
            raise UnknownZone(f"unknown zone '{zone}'", loc=("path", "zone"))
        now = self.clock().astimezone(UTC)
        requested = (start or now).astimezone(UTC)
        # Points are listed from the hour containing `start`, but the cap applies to the range asked
        # for: a 7-day optimize window starting at 10:07 must be viewable here too.
        begin = requested.replace(minute=0, second=0, microsecond=0)
        finish = (end or begin + timedelta(hours=24)).astimezone(UTC)
        if finish <= requested:
            raise InvalidInput("end must be after start", loc=("query", "end"))
        if finish - requested > self.max_window:
            raise InvalidInput(
                f"range longer than the {self.max_window.total_seconds() / 86400:g}-day maximum",
                loc=("query", "end"),
            )
        ctx = _Context()
        series = await self._series(info.zone, begin, finish, ctx)
        first = max(series.index_of(begin), 0)
        last = min(-((series.start - finish) // series.step), len(series.values))
        points = []
        for run in series.runs:
            lo, hi = max(run.start_index, first), min(run.end_index, last)
            for i in range(lo, hi):
                points.append(
                    {
                        "datetime": format_utc(series.start + series.step * i),
                        "carbon_intensity_g_per_kwh": round(float(series.values[i]), 3),
                        "source": run.label,
                    }
                )
        return {
            "zone": info.zone,
            "zone_name": info.name,
            "start": format_utc(begin),
            "end": format_utc(finish),
            "step_minutes": int(series.step.total_seconds() // 60),
            "unit": "gCO2e/kWh",
            "emission_factor_type": series.emission_factor_type,
            "sources": list(series.sources_between(begin, finish)),
            "points": points,
            "warnings": ctx.warnings,
        }

    async def estimate(
        self,
        *,
        provider: str,
        region: str,
        instance_type: str,
        hours: float,
        price_type: PriceType,
        start: datetime | None,
    ) -> dict[str, Any]:
        """List cost of one instance type for `hours`, with its energy and emissions from `start`."""
        ctx = _Context()
        location = self.resolve(LocationQuery(provider, region, None, None, ("body",)))
        table = await self._table(provider, region, price_type, ctx)
        index = None if table is None else table.find(instance_type)
        if (table is None or index is None) and self.fallback_prices is not None:
            # Live catalogs may name types differently (Lambda's API vs its web labels): try bundled.
            table = await self.fallback_prices.offers(provider, region, price_type)
            index = None if table is None else table.find(instance_type)
        if table is None or index is None:
            raise InvalidInput(
                f"instance type '{instance_type}' has no {price_type.value} price in {provider}/{region}",
                loc=("body", "instance_type"),
            )
        offer: InstanceOffer = table.offer(index)
        workload = Workload(
            duration=timedelta(hours=hours),
            vcpus=max(1, round(offer.vcpus or 1)),
            memory_gib=offer.memory_gib or 0.0,
            # The instance's own GPUs draw power too (a2-highgpu-1g was 0.56 kWh instead of 2.55).
            gpu=GpuRequirement(count=offer.gpu_count) if offer.gpu_count > 0 else None,
            price_type=price_type,
        )
        power = estimate_power(provider, workload, offer, onprem_pue=self.onprem_pue)
        kwh = energy_kwh(power, workload.duration)
        begin = (start or self.clock()).astimezone(UTC).replace(second=0, microsecond=0)
        end = begin + workload.duration
        series = await self._series(location.zone, begin, end, ctx)
        avg = evaluate_window(align_series([series], begin, end), 0, begin, workload.duration)
        return {
            "provider": provider,
            "region": region,
            "zone": location.zone,
            "instance_type": instance_type,
            "vcpus": offer.vcpus,
            "memory_gib": offer.memory_gib,
            "gpu_count": offer.gpu_count,
            "gpu_model": offer.gpu_model,
            "hours": hours,
            "price_type": price_type.value,
            "price_usd_per_hour": offer.price_usd_per_hour,
            "cost_usd": round(offer.price_usd_per_hour * hours, 6),
            "currency": offer.currency,
            "price_source": offer.source,
            "as_of": offer.as_of.isoformat() if offer.as_of else None,
            "start": format_utc(begin),
            "end": format_utc(end),
            "energy_kwh": round(kwh, 6),
            "avg_carbon_intensity_g_per_kwh": round(avg, 3),
            "emissions_g": round(kwh * avg, 3),
            "carbon_source": "+".join(series.sources_between(begin, end)),
            "energy_model": _energy_model_out(power),
            "warnings": ctx.warnings,
        }


def _location_loc(query: OptimizeQuery, index: int, field_name: str) -> Loc:
    if query.locations is not None and index < len(query.locations):
        return (*query.locations[index].loc, field_name)
    return ("body", "providers")


def _unknown_fit(zone: str) -> str | None:
    return None  # no forecaster: any `forecast:` label reads as fitted on the replay (cautious)


def _option(
    *,
    rank: int | None,
    item: _Placed,
    start: datetime,
    end: datetime,
    avg: float,
    score: float | None,
    carbon_sources: Sequence[str],
    duration_hours: float,
    fitted_on: str | None = None,
    to_best: tuple[float | None, float | None] = (None, None),
) -> Option:
    return Option(
        rank=rank,
        location=item.location,
        instance_type=item.offer.instance_type if item.offer else None,
        start=start,
        end=end,
        avg_intensity_g_per_kwh=avg,
        energy_kwh=item.energy_kwh,
        power=item.power,
        price_usd_per_hour=item.price_usd_per_hour,
        duration_hours=duration_hours,
        score=score,
        carbon_source="+".join(carbon_sources),
        price_source=item.price_source,
        carbon_data=data_quality.weakest(carbon_sources, fitted_on),
        delta_to_best_g=to_best[0],
        delta_to_best_pct=to_best[1],
    )


def _energy_model_out(power: PowerEstimate) -> dict[str, Any]:
    return {
        "name": power.model,
        "source": power.source,
        "watts": round(power.watts, 3),
        "pue": power.pue,
        "utilization_pct": round(power.utilization * 100, 1),
        "cpu_watts": round(power.cpu_watts, 3),
        "memory_watts": round(power.memory_watts, 3),
        "gpu_watts": round(power.gpu_watts, 3),
        "gpu_model": power.gpu_model,
    }


__all__ = ["QUERY_FIELDS", "LocationQuery", "OptimizeQuery", "OptimizerService", "utc_now"]
