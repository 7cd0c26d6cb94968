"""Benchmark of the price chain's read path: what a price lookup costs on the request path.

Run: `python -m bench.bench_prices [--runs N]`. Prints a table; it is a script, not a test.

What is timed (median and p90 of N calls, `time.perf_counter`, after a warm-up), for a realistic
Azure region table (every bundled `eastus` SKU, ~1,100 rows) and a GCP one (composed + merged):
- `local hit`: the in-process tier answers (the common case; no store, no decode);
- `store hit`: the local tier is off, so each call reads the store (an in-memory fake here; add
  Redis's round trip on top), decodes the JSON entry and joins sizes from the bundled table;
- `bundled`: the bundled catalog alone (the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.prices.chain import (
    CachedPriceProvider,
    CachePolicy,
    encode_table,
    store_table,
)

NOW = datetime.now(UTC)


class MemoryKV:
    name = "memory"
    healthy = True

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


def _as_live(table: OfferTable, drop_specs: bool) -> OfferTable:
    rows = []
    for i in range(len(table)):
        o = table.offer(i)
        rows.append(
            InstanceOffer(
                provider=o.provider,
                region=o.region,
                instance_type=o.instance_type,
                vcpus=None if drop_specs else o.vcpus,
                memory_gib=None if drop_specs else o.memory_gib,
                gpu_count=0 if drop_specs else o.gpu_count,
                gpu_model=None if drop_specs else o.gpu_model,
                price_usd_per_hour=o.price_usd_per_hour,
                price_type=o.price_type,
                as_of=NOW.date(),
                source=f"live:{o.provider}",
            )
        )
    return OfferTable.from_offers(table.provider, table.region, table.price_type, rows, fetched_at=NOW)


async def _time(call: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float]:
    for _ in range(20):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


async def main(runs: int) -> None:
    bundled = BundledPriceProvider()
    cases = [("azure", "eastus", True), ("gcp", "us-central1", False)]
    print(f"{'table':<22}{'rows':>6}  {'path':<10}{'median µs':>11}{'p90 µs':>10}")
    for provider, region, drop_specs in cases:
        source = await bundled.offers(provider, region, PriceType.ON_DEMAND)
        assert source is not None
        live = _as_live(source, drop_specs)
        kv = MemoryKV()
        policy = CachePolicy(local_ttl_s=3600)
        await store_table(kv, live, NOW, policy)
        warm = CachedPriceProvider(bundled=bundled, store=kv, policy=policy)
        cold = CachedPriceProvider(bundled=bundled, store=kv, policy=CachePolicy(local_ttl_s=0))
        entry_kib = len(encode_table(live, NOW)) / 1024
        paths: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("local hit", functools.partial(warm.offers, provider, region, PriceType.ON_DEMAND)),
            ("store hit", functools.partial(cold.offers, provider, region, PriceType.ON_DEMAND)),
            ("bundled", functools.partial(bundled.offers, provider, region, PriceType.ON_DEMAND)),
        ]
        for name, call in paths:
            median, p90 = await _time(call, runs)
            label = f"{provider}/{region}"
            print(f"{label:<22}{len(live):>6}  {name:<10}{median:>11.1f}{p90:>10.1f}")
        print(f"{'':<22}{'':>6}  entry size {entry_kib:.0f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    asyncio.run(main(parser.parse_args().runs))
