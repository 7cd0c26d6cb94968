"""Instance specs (vCPUs, GiB, GPUs) for live prices whose API does not carry them.

Why: the Azure retail API has prices but no sizes, and AWS's price list has sizes but no GPU
model; the engine can only select rows whose size it knows. The bundled catalog knows the size of
every type it lists, and a type's size does not depend on its region, so the join key is
(provider, instance type). Sizes learnt from live tables that do carry them (AWS on-demand) are
kept too, so AWS spot rows get sizes even for types the bundled tables never listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType
from carbon_optimizer.errors import CarbonOptimizerError
from carbon_optimizer.providers.base import PriceProvider

from ._common import log


@dataclass(frozen=True, slots=True)
class Spec:
    """Size of one instance type; None where unknown."""

    vcpus: int | None
    memory_gib: float | None
    gpu_count: int
    gpu_model: str | None

    def merged_over(self, other: Spec) -> Spec:
        """Copy of this spec with its unknown fields filled from `other`."""
        return Spec(
            vcpus=self.vcpus if self.vcpus is not None else other.vcpus,
            memory_gib=self.memory_gib if self.memory_gib is not None else other.memory_gib,
            gpu_count=self.gpu_count or other.gpu_count,
            gpu_model=self.gpu_model or other.gpu_model,
        )

    def live_offer(
        self,
        upstream: str,
        region: str,
        instance_type: str,
        price_usd_per_hour: float,
        price_type: PriceType,
        as_of: date,
    ) -> InstanceOffer:
        """The offer a live price API reported for this size, labelled `live:<upstream>`."""
        return InstanceOffer(
            provider=upstream,
            region=region,
            instance_type=instance_type,
            vcpus=self.vcpus,
            memory_gib=self.memory_gib,
            gpu_count=self.gpu_count,
            gpu_model=self.gpu_model,
            price_usd_per_hour=price_usd_per_hour,
            price_type=price_type,
            as_of=as_of,
            source=f"live:{upstream}",
        )


UNKNOWN = Spec(None, None, 0, None)


def specs_of(table: OfferTable) -> dict[str, Spec]:
    """The specs a table carries, by instance type (rows without any size are left out)."""
    found: dict[str, Spec] = {}
    for i, name in enumerate(table.instance_types):
        vcpus = float(table.vcpus[i])
        mem = float(table.memory_gib[i])
        spec = Spec(
            vcpus=None if math.isnan(vcpus) else int(vcpus),
            memory_gib=None if math.isnan(mem) else mem,
            gpu_count=int(table.gpu_count[i]),
            gpu_model=table.gpu_models[i],
        )
        if spec != UNKNOWN:
            found[name] = spec
    return found


class SpecIndex:
    """Specs by (provider, instance type), filled from the bundled catalog and from live tables."""

    def __init__(self, bundled: PriceProvider | None) -> None:
        self._bundled = bundled
        self._by_provider: dict[str, dict[str, Spec]] = {}
        self._loaded: set[tuple[str, str]] = set()
        self._listed: dict[tuple[str, str], set[str]] = {}

    def learn(self, provider: str, specs: dict[str, Spec]) -> None:
        """Remember sizes seen in a live table (they win over nothing, never over known fields)."""
        known = self._by_provider.setdefault(provider, {})
        for name, spec in specs.items():
            old = known.get(name)
            known[name] = spec if old is None else old.merged_over(spec)

    async def _load_region(self, provider: str, region: str) -> None:
        if self._bundled is None or (provider, region) in self._loaded:
            return
        self._loaded.add((provider, region))
        for price_type in (PriceType.ON_DEMAND, PriceType.SPOT):
            try:
                table = await self._bundled.offers(provider, region, price_type)
            except CarbonOptimizerError as exc:  # the bundled catalog should not fail; sizes are optional
                log.warning("no bundled specs for %s/%s: %s", provider, region, type(exc).__name__)
                continue
            if table is not None and len(table):
                self.learn(provider, specs_of(table))
                self._listed.setdefault((provider, region), set()).update(table.instance_types)

    async def lookup(self, provider: str, region: str, instance_type: str) -> Spec:
        """Size of one type (UNKNOWN when neither the bundled catalog nor a live table had it)."""
        await self._load_region(provider, region)
        return self._by_provider.get(provider, {}).get(instance_type, UNKNOWN)

    async def for_region(self, provider: str, region: str) -> dict[str, Spec]:
        """Every size known for `provider`, after loading the bundled tables of `region`."""
        await self._load_region(provider, region)
        return self._by_provider.get(provider, {})

    async def listed_types(self, provider: str, region: str) -> set[str]:
        """Instance types the bundled catalog lists in `region` (empty when it has none there)."""
        await self._load_region(provider, region)
        return self._listed.get((provider, region), set())
