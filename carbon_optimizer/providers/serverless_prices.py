"""Serverless price tables: bundled JSON → `ServerlessPrices`, and the cache → live → bundled chain.

Why separate from the instance price chain: serverless prices are a handful of meters per region
(GB-s, vCPU-s, requests, free tiers) rather than an instance table, and the instance chain in
`providers/prices/` is being restructured; this module only *borrows* the same rules:

- bundled `data/serverless/prices.json` always answers (every figure with a dated source);
- when a live fetcher is configured for a provider (see `providers/prices/serverless_live.py`),
  its parsed rates are cached in the shared `KeyValueStore` for `ttl_s` and overlay the bundled
  table for that region (label `live:<provider>`, later `cache:<date>`); a failed or unparseable
  fetch never replaces anything: the answer falls back to cache, then to the bundled table, with
  a warning naming what happened.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import orjson

from carbon_optimizer.domain.models import price_label
from carbon_optimizer.domain.serverless import (
    GB_PER_GIB,
    NO_EGRESS,
    EgressPrices,
    Limits,
    Option,
    PriceItem,
    ServerlessPrices,
    Tiered,
)
from carbon_optimizer.providers.catalog import read_text
from carbon_optimizer.providers.store import KeyValueStore

log = logging.getLogger(__name__)
BUNDLED = "bundled"


@functools.cache
def load_tables() -> dict[str, Any]:
    """The bundled serverless price document (parsed once per process)."""
    doc: dict[str, Any] = json.loads(read_text("serverless", "prices.json"))
    if doc.get("format") != 1:
        raise RuntimeError("unsupported serverless price table format")
    return doc


def _tiers(rows: list[list[float | None]]) -> list[tuple[float | None, float]]:
    return [(None if b is None else float(b), float(p)) for b, p in rows]  # type: ignore[arg-type]


def _ref(doc: Mapping[str, Any], key: str) -> str:
    source = doc["sources"][key]
    return f"{source['url']} (seen {source['seen']})"


def _egress(doc: Mapping[str, Any], provider: str, region: str, gcp_reading: str) -> EgressPrices:
    spec = doc["egress"].get(provider)
    if spec is None:
        return NO_EGRESS
    as_of_label = price_label(BUNDLED, None)
    if provider == "gcp":
        ref = _ref(doc, spec["source"])
        continent = _gcp_continent(region)
        free = float(spec["free_gib_north_america"]) if continent == "north_america" else 0.0
        if gcp_reading == "legacy_premium":
            tiered = Tiered.of(_tiers(spec["legacy_premium"]))
            note = "GCP legacy Premium Tier egress ($0.12/GiB 0-1 TiB, $0.11 to 10 TiB, $0.08 above)"
        else:
            tiered = Tiered.flat(float(spec["source_destination"][continent]))
            note = f"GCP Premium Tier source-and-destination egress from {continent.replace('_', ' ')}"
        item = PriceItem("egress, first tier", tiered.first, "USD/GiB", as_of_label, ref, None, True)
        return EgressPrices(tiered, free, GB_PER_GIB, (item,), note + " (uncertain)")
    regional = spec.get("regions", {}).get(region)
    rows = regional["tiers"] if regional else spec["tiers"]
    ref = _ref(doc, regional["source"] if regional else spec["source"])
    tiered = Tiered.of(_tiers(rows))
    note = spec.get("tiers_note", "") if not regional else ""
    if regional is None and provider == "aws" and region != "us-east-1":
        note = (note + "; " if note else "") + "us-east-1 egress rate applied (no regional figure bundled)"
    if regional is None and provider == "azure" and region != "eastus":
        note = (note + "; " if note else "") + "East US egress rate applied (no regional figure bundled)"
    item = PriceItem("egress, first tier", tiered.first, "USD/GB", as_of_label, ref)
    return EgressPrices(tiered, float(spec["free_gb"]), 1.0, (item,), note)


def _gcp_continent(region: str) -> str:
    if region.startswith(("us-", "northamerica-")):
        return "north_america"
    if region.startswith("europe-"):
        return "europe"
    if region.startswith("me-"):
        return "middle_east"
    if region.startswith(("asia-", "australia-")):
        return "asia_pacific"
    return "other"


def _limits(spec: Mapping[str, Any], **extra: Any) -> Limits:
    lo, hi = spec["memory_mb"]
    return Limits(
        memory_mb=(float(lo), float(hi)),
        max_duration_s=None if spec.get("max_duration_s") is None else float(spec["max_duration_s"]),
        http_max_duration_s=None
        if spec.get("http_max_duration_s") is None
        else float(spec["http_max_duration_s"]),
        max_payload_mb=None if spec.get("max_payload_mb") is None else float(spec["max_payload_mb"]),
        **extra,
    )


@functools.lru_cache(maxsize=1024)
def bundled_prices(
    option: Option, region: str, *, gcp_egress: str = "source_destination"
) -> ServerlessPrices:
    """The bundled price table of one serverless option in one region (immutable, memoised)."""
    doc = load_tables()
    if option in (Option.LAMBDA_X86, Option.LAMBDA_ARM):
        return _lambda(doc, option, region)
    if option is Option.AZURE_CONSUMPTION:
        return _azure(doc, option, region, "azure_functions_consumption")
    if option is Option.AZURE_FLEX:
        return _azure(doc, option, region, "azure_functions_flex")
    if option is Option.CLOUD_RUN:
        return _cloud_run(doc, region, gcp_egress)
    raise ValueError(f"not a serverless option: {option}")


def _lambda(doc: Mapping[str, Any], option: Option, region: str) -> ServerlessPrices:
    spec = doc["aws_lambda"]
    arch = "arm64" if option is Option.LAMBDA_ARM else "x86_64"
    as_of = date.fromisoformat(spec["as_of"])
    label = price_label(BUNDLED, as_of)
    duration = spec["duration_tiers"][arch]
    tiered = Tiered.of(_tiers(duration["tiers"]))
    notes: list[str] = []
    uncertain = False
    regional = spec["regional_first_tier"]["prices"].get(region)
    if regional is not None:
        tiered = tiered.scaled(float(regional[arch]) / tiered.first)
        uncertain = True
        notes.append(
            f"{region} duration price from a secondary source; {spec['regional_first_tier']['note']}"
        )
    elif region not in spec["standard_regions"]:
        uncertain = True
        notes.append(f"no bundled Lambda price for {region}: the us-east-1 price is applied")
    duration_ref = _ref(
        doc, duration["source"] if regional is None else spec["regional_first_tier"]["source"]
    )
    request = float(spec["request_usd_per_million"]) / 1e6
    free = spec["free_tier"]
    limits = _limits(spec["limits"])
    items = (
        PriceItem(
            f"duration ({arch}), first tier", tiered.first, "USD/GB-s", label, duration_ref, as_of, uncertain
        ),
        *(
            PriceItem(
                f"duration ({arch}), tier {i + 1}", float(p), "USD/GB-s", label, duration_ref, as_of, True
            )
            for i, p in enumerate(tiered.prices[1:])
        ),
        PriceItem(
            "requests", request * 1e6, "USD/1M requests", label, _ref(doc, spec["request_source"]), as_of
        ),
        PriceItem(
            "free tier",
            0.0,
            f"{free['requests']:,} requests + {free['gb_seconds']:,} GB-s/month ({free['scope']})",
            label,
            _ref(doc, free["source"]),
            as_of,
        ),
    )
    egress = _egress(doc, "aws", region, "source_destination")
    if egress.note:
        notes.append(egress.note)
    return ServerlessPrices(
        option=option,
        region=region,
        compute={"gb_s": tiered},
        request_price=request,
        free_compute={"gb_s": float(free["gb_seconds"])},
        free_requests=float(free["requests"]),
        granularity_ms=float(spec["billing"]["granularity_ms"]),
        min_billed_ms=float(spec["billing"]["min_billed_ms"]),
        limits=limits,
        egress=egress,
        items=items + egress.items,
        source=label,
        notes=tuple(notes),
        mb_per_vcpu=float(spec["mb_per_vcpu"]),
    )


def _azure(doc: Mapping[str, Any], option: Option, region: str, key: str) -> ServerlessPrices:
    spec = doc[key]
    as_of = date.fromisoformat(spec["as_of"])
    label = price_label(BUNDLED, as_of)
    ref = _ref(doc, spec["source"])
    gb_s = float(spec["gb_second_usd"])
    request = float(spec["execution_usd_per_million"]) / 1e6
    free = spec["free_tier"]
    notes: list[str] = []
    if region != "eastus":
        notes.append(f"no bundled Functions price for {region}: the East US price is applied")
    extra: dict[str, Any] = {}
    if option is Option.AZURE_FLEX:
        sizes = [float(s) for s in spec["instance_memory_mb"]] + [
            float(s) for s in spec["instance_memory_mb_uncertain"]
        ]
        extra["allowed_instance_mb"] = tuple(sorted(sizes))
        notes.append(
            "Flex instance memory 512 MB appears only in later docs (uncertain); 2,048/4,096 MB confirmed"
        )
    billing = spec["billing"]
    if billing.get("min_billed_ms_uncertain"):
        notes.append(f"{billing['min_billed_ms']} ms minimum per execution is our reading (uncertain)")
    egress = _egress(doc, "azure", region, "source_destination")
    if egress.note:
        notes.append(egress.note)
    items = (
        PriceItem("execution time", gb_s, "USD/GB-s", label, ref, as_of, region != "eastus"),
        PriceItem("executions", request * 1e6, "USD/1M executions", label, ref, as_of, region != "eastus"),
        PriceItem(
            "free grant",
            0.0,
            f"{free['executions']:,} executions + {free['gb_seconds']:,} GB-s/month ({free['scope']})",
            label,
            ref,
            as_of,
        ),
    )
    return ServerlessPrices(
        option=option,
        region=region,
        compute={"gb_s": Tiered.flat(gb_s)},
        request_price=request,
        free_compute={"gb_s": float(free["gb_seconds"])},
        free_requests=float(free["executions"]),
        granularity_ms=float(billing["granularity_ms"]),
        min_billed_ms=float(billing["min_billed_ms"]),
        limits=_limits(spec["limits"], **extra),
        egress=egress,
        items=items + egress.items,
        source=label,
        notes=tuple(notes),
        mb_per_vcpu=float(spec.get("mb_per_vcpu", 0)) or None,
    )


def _cloud_run(doc: Mapping[str, Any], region: str, gcp_egress: str) -> ServerlessPrices:
    spec = doc["gcp_cloud_run"]
    as_of = date.fromisoformat(spec["as_of"])
    label = price_label(BUNDLED, as_of)
    tier = "1" if region in spec["tier1_regions"] else "2"
    rates = spec["tiers"][tier]
    tier1 = spec["tiers"]["1"]
    ref = _ref(doc, spec["source"])
    mem_ref = _ref(doc, spec["memory_source"])
    request = float(spec["request_usd_per_million"]) / 1e6
    free = spec["free_tier"]
    notes = [f"Cloud Run pricing Tier {tier} for {region}"]
    if tier == "2":
        notes.append(spec["tier2_note"])
    egress = _egress(doc, "gcp", region, gcp_egress)
    notes.append(egress.note)
    items = (
        PriceItem(
            f"CPU, Tier {tier}",
            float(rates["vcpu_second_usd"]),
            "USD/vCPU-s",
            label,
            ref if tier == "1" else mem_ref,
            as_of,
            tier == "2",
        ),
        PriceItem(
            f"memory, Tier {tier}",
            float(rates["gib_second_usd"]),
            "USD/GiB-s",
            label,
            mem_ref,
            as_of,
            tier == "2",
        ),
        PriceItem("requests", request * 1e6, "USD/1M requests", label, mem_ref, as_of),
        PriceItem(
            "free tier",
            0.0,
            f"{free['vcpu_seconds']:,} vCPU-s + {free['gib_seconds']:,} GiB-s + "
            f"{free['requests']:,} requests/month ({free['scope']})",
            label,
            ref,
            as_of,
        ),
    )
    lo_v, hi_v = spec["limits"]["vcpu"]
    return ServerlessPrices(
        option=Option.CLOUD_RUN,
        region=region,
        compute={
            "vcpu_s": Tiered.flat(float(rates["vcpu_second_usd"])),
            "gib_s": Tiered.flat(float(rates["gib_second_usd"])),
        },
        request_price=request,
        free_compute={"vcpu_s": float(free["vcpu_seconds"]), "gib_s": float(free["gib_seconds"])},
        free_requests=float(free["requests"]),
        granularity_ms=float(spec["billing"]["granularity_ms"]),
        min_billed_ms=float(spec["billing"]["min_billed_ms"]),
        limits=_limits(spec["limits"], vcpu_range=(float(lo_v), float(hi_v))),
        egress=egress,
        items=items + egress.items,
        source=label,
        free_reference={"vcpu_s": float(tier1["vcpu_second_usd"]), "gib_s": float(tier1["gib_second_usd"])},
        notes=tuple(notes),
        min_vcpu_for_memory=tuple((float(m), float(v)) for m, v in spec["min_vcpu_for_memory_mb"]),
    )


@functools.lru_cache(maxsize=1024)
def bundled_egress(provider: str, region: str, *, gcp_egress: str = "source_destination") -> EgressPrices:
    """Internet egress prices of a cloud region (VMs pay the same rates as serverless)."""
    return _egress(load_tables(), provider, region, gcp_egress)


# ----- live overlay and the chain -----


@dataclass(frozen=True, slots=True)
class LiveRates:
    """Rates parsed from a provider price API for one option in one region (all optional).

    `compute` maps a meter to tiers `[(upper bound | None, price)]`; free amounts are units.
    """

    option: Option
    region: str
    compute: Mapping[str, list[tuple[float | None, float]]] = field(default_factory=dict)
    request_price: float | None = None
    free_compute: Mapping[str, float] = field(default_factory=dict)
    free_requests: float | None = None
    reference: str = ""

    def to_json(self) -> bytes:
        """Cache form."""
        return orjson.dumps(
            {
                "option": self.option.value,
                "region": self.region,
                "compute": {k: [list(t) for t in v] for k, v in self.compute.items()},
                "request_price": self.request_price,
                "free_compute": dict(self.free_compute),
                "free_requests": self.free_requests,
                "reference": self.reference,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> LiveRates:
        """Inverse of `to_json`."""
        data = orjson.loads(raw)
        return cls(
            option=Option(data["option"]),
            region=data["region"],
            compute={k: [(b, float(p)) for b, p in v] for k, v in data["compute"].items()},
            request_price=data["request_price"],
            free_compute={k: float(v) for k, v in data["free_compute"].items()},
            free_requests=data["free_requests"],
            reference=data.get("reference", ""),
        )


def overlay(base: ServerlessPrices, live: LiveRates, label: str, as_of: date | None) -> ServerlessPrices:
    """The bundled table with every rate the live answer carries replaced (and relabelled)."""
    compute = dict(base.compute)
    items: list[PriceItem] = []
    for meter, tiers in live.compute.items():
        if meter in compute and tiers:
            compute[meter] = Tiered.of(tiers)
            items.append(
                PriceItem(
                    f"{meter} (live)", compute[meter].first, f"USD/{meter}", label, live.reference, as_of
                )
            )
    request = base.request_price if live.request_price is None else live.request_price
    if live.request_price is not None:
        items.append(
            PriceItem("requests (live)", request * 1e6, "USD/1M requests", label, live.reference, as_of)
        )
    free_compute = {
        **base.free_compute,
        **{k: v for k, v in live.free_compute.items() if k in base.free_compute},
    }
    kept = tuple(i for i in base.items if not _replaced(i, live))
    return replace(
        base,
        compute=compute,
        request_price=request,
        free_compute=free_compute,
        free_requests=base.free_requests if live.free_requests is None else live.free_requests,
        items=tuple(items) + kept,
        source=label,
    )


def _replaced(item: PriceItem, live: LiveRates) -> bool:
    if item.item.startswith(("duration", "execution time", "CPU", "memory")):
        return bool(live.compute)
    if item.item.startswith(("requests", "executions")):
        return live.request_price is not None
    return False


LiveFetcher = Callable[[Option, str], Awaitable[LiveRates | None]]
LIVE_PROVIDER: dict[Option, str] = {
    Option.LAMBDA_X86: "aws",
    Option.LAMBDA_ARM: "aws",
    Option.AZURE_CONSUMPTION: "azure",
    Option.AZURE_FLEX: "azure",
    Option.CLOUD_RUN: "gcp",
}


class ServerlessPriceChain:
    """cache → live → bundled for serverless price tables (bundled only when no fetcher is set)."""

    def __init__(
        self,
        *,
        store: KeyValueStore | None = None,
        fetchers: Mapping[str, LiveFetcher] | None = None,
        ttl_s: float = 24 * 3600.0,
        failure_cooldown_s: float = 300.0,
        key_prefix: str = "co:v1",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.fetchers = dict(fetchers or {})
        self.ttl_s = ttl_s
        self.failure_cooldown_s = failure_cooldown_s
        self.key_prefix = key_prefix
        self.clock = clock
        self._cooldown_until: dict[str, float] = {}

    def _key(self, option: Option, region: str) -> str:
        return f"{self.key_prefix.rstrip(':')}:serverless:{option.value}:{region}"

    async def prices(
        self, option: Option, region: str, *, gcp_egress: str = "source_destination"
    ) -> tuple[ServerlessPrices, list[str]]:
        """The table for (option, region) and any warnings about how it was obtained."""
        base = bundled_prices(option, region, gcp_egress=gcp_egress)
        provider = LIVE_PROVIDER[option]
        fetcher = self.fetchers.get(provider)
        if fetcher is None:
            return base, []
        warnings: list[str] = []
        key = self._key(option, region)
        if self.store is not None:
            raw = await self.store.get(key)
            if raw is not None:
                try:
                    envelope = orjson.loads(raw)
                    fetched = datetime.fromisoformat(envelope["fetched_at"])
                    rates = LiveRates.from_json(envelope["rates"].encode())
                    return overlay(
                        base, rates, price_label("cache", fetched.date()), fetched.date()
                    ), warnings
                except (ValueError, KeyError, TypeError):
                    warnings.append(f"unreadable cached {option.value} prices for {region} ignored")
        if time.monotonic() < self._cooldown_until.get(provider, 0.0):
            return base, [
                *warnings,
                f"{provider} serverless price API cooling down after a failure; bundled prices used",
            ]
        try:
            fetched_rates = await fetcher(option, region)
        except Exception as exc:  # any fetch/parse failure degrades to bundled data, never a 5xx
            self._cooldown_until[provider] = time.monotonic() + self.failure_cooldown_s
            log.warning("serverless live prices failed for %s/%s: %s", provider, region, type(exc).__name__)
            return base, [*warnings, f"{provider} serverless price API failed; bundled prices used"]
        if fetched_rates is None:
            return base, [
                *warnings,
                f"{provider} price API has no {option.value} rates for {region}; bundled prices used",
            ]
        now = self.clock()
        if self.store is not None:
            envelope = {"fetched_at": now.isoformat(), "rates": fetched_rates.to_json().decode()}
            await self.store.set(key, orjson.dumps(envelope), self.ttl_s)
        return overlay(base, fetched_rates, f"live:{provider}", now.date()), warnings
