"""Lambda Cloud `GET /api/v1/instance-types` client (Bearer API key): on-demand GPU instance prices.

Why it looks like this (docs/data-sources.md §2.4): the price is `price_cents_per_hour`, an
integer in cents for the whole instance, the same in every region, so one call prices every
region and the table is cached once under region "*". `regions_with_capacity_available` is what
can be launched *right now*: an empty list means sold out, not "not offered", so it never removes
a type. Lambda sells no spot capacity. Instance names are the API's (`gpu_1x_a10`), which is what
one launches with; the bundled table uses the marketing labels instead ("1x NVIDIA A10").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx
from pydantic import SecretStr

from carbon_optimizer.domain.gpu import normalize_gpu_model
from carbon_optimizer.domain.models import InstanceOffer, OfferTable, PriceType
from carbon_optimizer.errors import MalformedUpstreamResponse

from ._common import HttpPolicy, Memo, as_of_today, check_region, expect_mapping, get_json, utc_now
from ._specs import Spec

UPSTREAM = "lambda"
ANY_REGION = "*"
# "A100 (80 GB SXM4)", "Tesla V100 (16 GB)", "H100 (80 GB PCIe)", "GH200 (96 GB)"
_GPU_DESCRIPTION = re.compile(r"^\s*(?P<name>.+?)\s*\((?P<mem>\d+)\s*GB\s*(?P<form>[^)]*)\)\s*$")
# Lambda's own spellings that the shared normaliser does not know.
_LAMBDA_ALIASES = {"RTX 6000": "Quadro RTX 6000"}


def normalize_lambda_gpu(description: str) -> str | None:
    """Map Lambda's `gpu_description` ("A100 (40 GB SXM4)") to the bundled tables' model name."""
    match = _GPU_DESCRIPTION.match(description)
    if match is None:
        name, mem, form = description.strip(), "", ""
    else:
        name, mem, form = match["name"], match["mem"], match["form"].strip()
    name = _LAMBDA_ALIASES.get(name, name)
    candidates = []
    if form.upper() == "PCIE":
        candidates.append(f"{name} PCIe")  # H100 PCIe is its own model; "80 GB" alone would hide it
    if mem:
        candidates.append(f"{name} {mem}GB")
    if form:
        candidates.append(f"{name} {form}")
    candidates.append(name)
    for candidate in candidates:
        try:
            return normalize_gpu_model(candidate)
        except ValueError:
            continue
    return None


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedUpstreamResponse(f"lambda: {what} is not a number", source=UPSTREAM)
    return int(value)


def parse_instance_types(document: object, region: str, fetched_at: datetime) -> list[InstanceOffer]:
    """Offers from an /instance-types answer (cents → USD; capacity is ignored on purpose)."""
    data = expect_mapping(expect_mapping(document, UPSTREAM, "answer").get("data"), UPSTREAM, "data")
    as_of = as_of_today(fetched_at)
    offers = []
    for key in sorted(data):
        entry = expect_mapping(data[key], UPSTREAM, "entry")
        itype = expect_mapping(entry.get("instance_type"), UPSTREAM, "instance_type")
        specs: Mapping[str, object] = expect_mapping(itype.get("specs", {}), UPSTREAM, "specs")
        cents = _int(itype.get("price_cents_per_hour"), "price_cents_per_hour")
        if cents <= 0:
            continue
        gpus = _int(specs.get("gpus", 0), "gpus")
        description = itype.get("gpu_description")
        model = normalize_lambda_gpu(description) if isinstance(description, str) and gpus else None
        vcpus = specs.get("vcpus")
        memory = specs.get("memory_gib")
        offers.append(
            Spec(
                vcpus=_int(vcpus, "vcpus") if vcpus is not None else None,
                memory_gib=float(_int(memory, "memory_gib")) if memory is not None else None,
                gpu_count=gpus,
                gpu_model=model,
            ).live_offer(
                UPSTREAM, region, str(itype.get("name") or key), cents / 100.0, PriceType.ON_DEMAND, as_of
            )
        )
    return offers


class LambdaCloudPrices:
    """`PriceProvider` over Lambda Cloud's instance-types endpoint."""

    name = UPSTREAM

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        base_url: str = "https://cloud.lambda.ai/api/v1",
        policy: HttpPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        memo_ttl_s: float = 60.0,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/instance-types"
        self._policy = policy or HttpPolicy()
        self._clock = clock
        # The API allows about one request per second: concurrent regions share one call.
        self._memo: Memo[str, tuple[datetime, object]] = Memo(memo_ttl_s)

    def supports(self, price_type: PriceType) -> bool:
        """Lambda has on-demand prices only."""
        return price_type is PriceType.ON_DEMAND

    async def _fetch(self) -> tuple[datetime, object]:
        headers = {
            "authorization": f"Bearer {self._api_key.get_secret_value()}",
            "accept": "application/json",
        }
        document = await get_json(
            self._http,
            self._url,
            upstream=UPSTREAM,
            endpoint="instance_types",
            policy=self._policy,
            headers=headers,
        )
        return self._clock(), document

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Every Lambda instance type with its price (region-independent)."""
        if provider != UPSTREAM or not self.supports(price_type):
            return None
        if region != ANY_REGION:
            check_region(UPSTREAM, region)
        fetched_at, document = await self._memo.get("all", self._fetch)
        offers = parse_instance_types(document, region, fetched_at)
        if not offers:
            return None
        return OfferTable.from_offers(UPSTREAM, region, price_type, offers, fetched_at=fetched_at)

    async def regions(self) -> list[str]:
        """The one cache region ("*"): prices do not depend on the region."""
        return [ANY_REGION]

    async def aclose(self) -> None:
        """Nothing to close: the shared httpx client belongs to the caller."""
        self._memo.clear()
