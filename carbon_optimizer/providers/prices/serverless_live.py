"""Live serverless rates from the providers' price APIs: pure parsers plus small fetch functions.

Why a file of its own: the instance-price clients beside it are being restructured, so these
parsers share nothing with them but the wire shapes (documented in docs/serverless.md):

- AWS Price List, service code `AWSLambda`: the anonymous regional offer file
  `/offers/v1.0/aws/AWSLambda/current/<region>/index.json` (`products` + `terms.OnDemand`,
  tiered `priceDimensions` with `beginRange`/`endRange`), or `GetProducts` items of the same
  product/terms shape (each a JSON string). Duration meters are the usage types ending
  `Lambda-GB-Second` (x86) and `Lambda-GB-Second-ARM`; requests `Request` / `Request-ARM`;
  Provisioned Concurrency and Lambda@Edge meters are skipped.
- Azure Retail Prices, `serviceName eq 'Functions'`: Consumption meters `Standard Execution Time`
  (unit `1 GB Second`) and `Standard Total Executions` (unit `10`), Flex `On Demand Execution Time`
  and `On Demand Total Executions`; the free grant is the `tierMinimumUnits` of the first paid tier.
- GCP Cloud Billing Catalog, Cloud Run service (`services/<id>/skus`, API key): request-based CPU
  and memory SKUs and `Requests`, `tieredRates` (`units` + `nanos`); a zero-priced first tier is
  the free allowance.

Parsers return `LiveRates` (only what the answer carried) or nothing; the chain in
`providers/serverless_prices.py` overlays them on the bundled table and caches them. Fetchers take
an injected `httpx.AsyncClient`, so tests use `httpx.MockTransport` and the app shares its client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import orjson

from carbon_optimizer.domain.serverless import Option
from carbon_optimizer.errors import MalformedUpstreamResponse, ProviderUnavailable
from carbon_optimizer.providers.serverless_prices import LiveFetcher, LiveRates, ServerlessPriceChain
from carbon_optimizer.providers.store import KeyValueStore
from carbon_optimizer.providers.upstream import RetryPolicy, Upstream
from carbon_optimizer.settings import Settings

AWS_OFFERS_BASE = "https://pricing.us-east-1.amazonaws.com"
AZURE_RETAIL_URL = "https://prices.azure.com/api/retail/prices"
GCP_BILLING_BASE = "https://cloudbilling.googleapis.com/v1"
# Cloud Run's service id in the Cloud Billing Catalog (verify with `GET /v1/services`; uncertain).
GCP_CLOUD_RUN_SERVICE = "152E-C115-5142"
_MAX_PAGES = 20

Tier = tuple[float | None, float]


# ----- AWS -----


def _tiers_from_dimensions(dimensions: Iterable[Mapping[str, Any]]) -> list[Tier]:
    rows: list[tuple[float, float | None, float]] = []
    for dim in dimensions:
        usd = float(dim["pricePerUnit"]["USD"])
        begin = float(dim.get("beginRange", "0") or 0)
        end_raw = str(dim.get("endRange", "Inf"))
        end = None if end_raw in ("Inf", "", "inf") else float(end_raw)
        rows.append((begin, end, usd))
    rows.sort(key=lambda r: r[0])
    return [(end, usd) for _, end, usd in rows]


def parse_aws_lambda_offer(doc: Mapping[str, Any], region: str) -> dict[Option, LiveRates]:
    """Lambda on-demand duration tiers and request prices of `region` from an offer document."""
    products: Mapping[str, Any] = doc.get("products", {})
    on_demand: Mapping[str, Any] = doc.get("terms", {}).get("OnDemand", {})
    found: dict[tuple[str, str], list[Tier]] = {}
    for sku, product in products.items():
        attrs = product.get("attributes", {})
        if attrs.get("regionCode", region) != region:
            continue
        usage = str(attrs.get("usagetype", ""))
        group = str(attrs.get("group", ""))
        if any(word in usage or word in group for word in ("Provisioned", "Edge", "Storage")):
            continue
        arch = "arm64" if usage.endswith("-ARM") else "x86_64"
        core = usage.removesuffix("-ARM")
        if core.endswith("Lambda-GB-Second"):
            meter = "duration"
        elif core.endswith("Request"):
            meter = "requests"
        else:
            continue
        dims = [
            d for term in on_demand.get(sku, {}).values() for d in term.get("priceDimensions", {}).values()
        ]
        if dims:
            found[(arch, meter)] = _tiers_from_dimensions(dims)
    ref = f"AWS Price List AWSLambda offer, {region}"
    out: dict[Option, LiveRates] = {}
    for option, arch in ((Option.LAMBDA_X86, "x86_64"), (Option.LAMBDA_ARM, "arm64")):
        duration = found.get((arch, "duration"))
        requests = found.get((arch, "requests"))
        if duration is None and requests is None:
            continue
        out[option] = LiveRates(
            option=option,
            region=region,
            compute={"gb_s": duration} if duration else {},
            request_price=requests[0][1] if requests else None,
            reference=ref,
        )
    return out


def parse_aws_get_products(
    price_list: Iterable[str | Mapping[str, Any]], region: str
) -> dict[Option, LiveRates]:
    """The same from `GetProducts` `PriceList` items (JSON strings of product + terms)."""
    products: dict[str, Any] = {}
    on_demand: dict[str, Any] = {}
    for raw in price_list:
        item = orjson.loads(raw) if isinstance(raw, str) else raw
        sku = item["product"]["sku"]
        products[sku] = item["product"]
        on_demand[sku] = item.get("terms", {}).get("OnDemand", {})
    return parse_aws_lambda_offer({"products": products, "terms": {"OnDemand": on_demand}}, region)


async def fetch_aws_lambda(
    http: httpx.AsyncClient, region: str, *, base_url: str = AWS_OFFERS_BASE
) -> dict[Option, LiveRates]:
    """GET the anonymous regional AWSLambda offer file and parse it."""
    url = f"{base_url}/offers/v1.0/aws/AWSLambda/current/{region}/index.json"
    return parse_aws_lambda_offer(await _get_json(http, url, "aws"), region)


# ----- Azure -----

_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KM]?)\b")


def _units_per_measure(unit: str) -> float:
    """`"10"` → 10, `"1M"` → 1e6, `"10K"` → 1e4, `"1 GB Second"` → 1."""
    match = _UNIT.match(unit)
    if match is None:
        return 1.0
    scale = {"": 1.0, "K": 1e3, "M": 1e6}[match.group(2)]
    return float(match.group(1)) * scale


def _azure_meter(items: list[Mapping[str, Any]]) -> tuple[float, float] | None:
    """(price per unit, free units) from the tiered items of one meter."""
    paid = sorted(
        (i for i in items if float(i.get("retailPrice", 0)) > 0), key=lambda i: i["tierMinimumUnits"]
    )
    if not paid:
        return None
    first = paid[0]
    per = _units_per_measure(str(first.get("unitOfMeasure", "1")))
    return float(first["retailPrice"]) / per, float(first.get("tierMinimumUnits", 0)) * per


_AZURE_METERS: dict[Option, tuple[str, str]] = {
    Option.AZURE_CONSUMPTION: ("Standard Execution Time", "Standard Total Executions"),
    Option.AZURE_FLEX: ("On Demand Execution Time", "On Demand Total Executions"),
}


def parse_azure_functions(items: Iterable[Mapping[str, Any]], region: str) -> dict[Option, LiveRates]:
    """Consumption and Flex (on-demand) rates of `region` from Retail Prices API items."""
    by_meter: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        if item.get("serviceName") != "Functions" or item.get("armRegionName") != region:
            continue
        if (
            item.get("type", item.get("priceType")) != "Consumption"
            or item.get("currencyCode", "USD") != "USD"
        ):
            continue
        by_meter.setdefault(str(item.get("meterName")), []).append(item)
    out: dict[Option, LiveRates] = {}
    for option, (time_meter, count_meter) in _AZURE_METERS.items():
        compute = _azure_meter(by_meter.get(time_meter, []))
        count = _azure_meter(by_meter.get(count_meter, []))
        if compute is None and count is None:
            continue
        out[option] = LiveRates(
            option=option,
            region=region,
            compute={"gb_s": [(None, compute[0])]} if compute else {},
            free_compute={"gb_s": compute[1]} if compute else {},
            request_price=count[0] if count else None,
            free_requests=count[1] if count else None,
            reference=f"Azure Retail Prices API, serviceName 'Functions', {region}",
        )
    return out


async def fetch_azure_functions(
    http: httpx.AsyncClient, region: str, *, base_url: str = AZURE_RETAIL_URL
) -> dict[Option, LiveRates]:
    """GET every Functions item of a region (following `NextPageLink`) and parse them."""
    query = f"serviceName eq 'Functions' and armRegionName eq '{region}' and priceType eq 'Consumption'"
    url: str | None = (
        f"{base_url}?{httpx.QueryParams({'api-version': '2023-01-01-preview', '$filter': query})}"
    )
    items: list[Mapping[str, Any]] = []
    for _ in range(_MAX_PAGES):
        if not url:
            break
        page = await _get_json(http, url, "azure")
        items.extend(page.get("Items", []))
        url = page.get("NextPageLink") or None
    return parse_azure_functions(items, region)


# ----- GCP -----

_GCP_UNIT_PER_SECOND = {"s": 1.0, "h": 1 / 3600, "ms": 1000.0, "GiBy.s": 1.0, "GiBy.h": 1 / 3600}
_GCP_EXCLUDE = ("idle", "min instance", "instance-based", "always", "job", "commit", "gpu", "cud")


def _gcp_price(money: Mapping[str, Any]) -> float:
    return float(money.get("units", 0) or 0) + float(money.get("nanos", 0) or 0) / 1e9


def _gcp_sku(sku: Mapping[str, Any]) -> tuple[list[Tier], float] | None:
    """(tiers per second-unit, free units) of a SKU's first pricing expression."""
    info = sku.get("pricingInfo") or []
    if not info:
        return None
    expr = info[0]["pricingExpression"]
    unit = str(expr.get("usageUnit", "s"))
    factor = _GCP_UNIT_PER_SECOND.get(unit, 1.0)  # price per usage unit → per second-unit
    rates = sorted(expr.get("tieredRates", []), key=lambda r: float(r.get("startUsageAmount", 0)))
    free = 0.0
    tiers: list[Tier] = []
    for i, rate in enumerate(rates):
        price = _gcp_price(rate["unitPrice"]) * factor
        start = float(rate.get("startUsageAmount", 0)) / factor if factor else 0.0
        if price == 0 and not tiers:
            nxt = rates[i + 1] if i + 1 < len(rates) else None
            free = float(nxt["startUsageAmount"]) / factor if nxt else 0.0
            continue
        if tiers:
            tiers[-1] = (start, tiers[-1][1])
        tiers.append((None, price))
    return (tiers, free) if tiers else None


def parse_gcp_cloud_run(skus: Iterable[Mapping[str, Any]], region: str) -> dict[Option, LiveRates]:
    """Request-based CPU, memory and request rates of `region` from Cloud Billing Catalog SKUs."""
    found: dict[str, tuple[list[Tier], float]] = {}
    for sku in skus:
        if region not in sku.get("serviceRegions", []):
            continue
        text = str(sku.get("description", "")).lower()
        if any(word in text for word in _GCP_EXCLUDE):
            continue
        if text.startswith("requests"):
            meter = "requests"
        elif "cpu" in text:
            meter = "vcpu_s"
        elif "memory" in text:
            meter = "gib_s"
        else:
            continue
        parsed = _gcp_sku(sku)
        if parsed is not None and meter not in found:
            found[meter] = parsed
    if not found:
        return {}
    requests = found.pop("requests", None)
    return {
        Option.CLOUD_RUN: LiveRates(
            option=Option.CLOUD_RUN,
            region=region,
            compute={m: t for m, (t, _) in found.items()},
            free_compute={m: f for m, (_, f) in found.items()},
            request_price=requests[0][0][1] if requests else None,
            free_requests=requests[1] if requests else None,
            reference=f"GCP Cloud Billing Catalog, Cloud Run SKUs, {region}",
        )
    }


async def fetch_gcp_cloud_run(
    http: httpx.AsyncClient,
    api_key: str,
    region: str,
    *,
    base_url: str = GCP_BILLING_BASE,
    service_id: str = GCP_CLOUD_RUN_SERVICE,
) -> dict[Option, LiveRates]:
    """GET the Cloud Run SKUs (following `nextPageToken`) and parse them for `region`."""
    skus: list[Mapping[str, Any]] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        params = {"pageSize": "5000", **({"pageToken": token} if token else {})}
        url = f"{base_url}/services/{service_id}/skus?{httpx.QueryParams(params)}"
        page = await _get_json(http, url, "gcp", headers={"x-goog-api-key": api_key})
        skus.extend(page.get("skus", []))
        token = page.get("nextPageToken") or None
        if not token:
            break
    return parse_gcp_cloud_run(skus, region)


# ----- shared -----


# One price document per call, no retries (the chain's cool-down paces the next try); the AWS
# offer file runs to megabytes, so the bound is generous.
_DEADLINE_S = 30.0


def _interpret(source: str) -> Callable[[str, httpx.Response], dict[str, Any]]:
    """Read one answer: 200 with a JSON object, else the domain error."""

    def interpret(endpoint: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise ProviderUnavailable(f"{source} price API answered {response.status_code}", source=source)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise MalformedUpstreamResponse(f"{source} price API sent invalid JSON", source=source) from exc
        if not isinstance(body, dict):
            raise MalformedUpstreamResponse(f"{source} price API sent an unexpected shape", source=source)
        return body

    return interpret


async def _get_json(
    http: httpx.AsyncClient, url: str, source: str, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One GET through the shared upstream seam (timeouts and transport errors → ProviderUnavailable)."""
    upstream = Upstream(
        source,
        http,
        deadline_s=_DEADLINE_S,
        read_timeout_s=_DEADLINE_S,
        retry=RetryPolicy(max_retries=0),
        interpret=_interpret(source),
        secrets=tuple((headers or {}).values()),
    )
    body: dict[str, Any] = await upstream.get_json("serverless-prices", url, headers=dict(headers or {}))
    return body


class ServerlessLiveSources:
    """Per-provider fetchers for the chain; one API call per (provider, region) serves all its options."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        aws: bool = True,
        azure: bool = True,
        gcp_api_key: str | None = None,
        aws_base_url: str = AWS_OFFERS_BASE,
        azure_base_url: str = AZURE_RETAIL_URL,
        gcp_base_url: str = GCP_BILLING_BASE,
    ) -> None:
        self.http = http
        self.memo_ttl_s = 3600.0
        self._memo: dict[tuple[str, str], tuple[float, dict[Option, LiveRates]]] = {}
        self.fetchers: dict[str, LiveFetcher] = {}
        if aws:
            self.fetchers["aws"] = self._fetcher(
                "aws", lambda r: fetch_aws_lambda(http, r, base_url=aws_base_url)
            )
        if azure:
            self.fetchers["azure"] = self._fetcher(
                "azure", lambda r: fetch_azure_functions(http, r, base_url=azure_base_url)
            )
        if gcp_api_key:
            key = gcp_api_key
            self.fetchers["gcp"] = self._fetcher(
                "gcp", lambda r: fetch_gcp_cloud_run(http, key, r, base_url=gcp_base_url)
            )

    def _fetcher(self, provider: str, fetch: Any) -> LiveFetcher:
        async def get(option: Option, region: str) -> LiveRates | None:
            key = (provider, region)
            hit = self._memo.get(key)
            # The chain's store caches across processes; this memo only spares sibling options
            # (Lambda x86 and Arm, Consumption and Flex) a second call for the same document.
            if hit is None or time.monotonic() - hit[0] > self.memo_ttl_s:
                hit = (time.monotonic(), await fetch(region))
                self._memo[key] = hit
            return hit[1].get(option)

        return get


def build_serverless_chain(
    settings: Settings, *, http: httpx.AsyncClient, store: KeyValueStore | None
) -> ServerlessPriceChain:
    """The chain the app serves: bundled tables only unless `pricing.live`.

    With `pricing.live`, AWS offer files (no credentials), Azure retail (when `azure_enabled`) and
    GCP (with `gcp_api_key`) overlay the bundled tables, cached in the shared store.
    """
    pricing = settings.pricing
    if not pricing.live:
        return ServerlessPriceChain()
    key = pricing.gcp_api_key.get_secret_value() if pricing.gcp_api_key is not None else None
    sources = ServerlessLiveSources(
        http,
        azure=pricing.azure_enabled,
        gcp_api_key=key or None,
        azure_base_url=pricing.azure_base_url,
        gcp_base_url=pricing.gcp_base_url,
    )
    return ServerlessPriceChain(
        store=store,
        fetchers=sources.fetchers,
        ttl_s=float(pricing.on_demand_ttl_s),
        failure_cooldown_s=pricing.failure_cooldown_s,
        key_prefix=settings.redis.key_prefix,
    )
