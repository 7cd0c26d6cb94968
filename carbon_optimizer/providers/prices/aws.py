"""AWS prices through boto3 (optional extra `aws`): Price List `GetProducts` and spot price history.

Why boto3 in a worker thread: the Price List Query API needs SigV4-signed requests and its paging,
retries and credential chain are boto3's job (docs/data-sources.md §2.1); boto3 is
synchronous, so every call runs under `asyncio.to_thread` and never blocks the event loop. boto3
is imported lazily: without it, or without credentials, the AWS source is skipped (not an error)
and AWS prices come from the cache or the bundled table.

On-demand uses Karpenter's production filter set (Linux, shared tenancy, no pre-installed
software, capacitystatus Used, marketoption OnDemand, productFamily Compute Instance), so one
`PriceList` item remains per instance type; each item is a JSON *string*. Spot prices come from
EC2 `DescribeSpotPriceHistory` with `StartTime=now` (the current price per availability zone);
the region's spot price is the cheapest zone, since a placement can pick its zone.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from carbon_optimizer.metrics import UPSTREAM_LATENCY, UPSTREAM_REQUESTS

from ._common import Memo, as_of_today, check_region, log, utc_now
from ._specs import Spec, SpecIndex

UPSTREAM = "aws"
ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client
_STANDARD_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_AUTH_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
}
_THROTTLE_CODES = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}


def boto3_unavailable_reason() -> str | None:
    """Why the AWS source cannot run here (boto3 missing or no credentials), or None if it can."""
    try:
        boto3 = importlib.import_module("boto3")
    except ImportError:
        return "boto3 is not installed (pip install 'carbon-optimizer[aws]')"
    try:
        credentials = boto3.session.Session().get_credentials()
    except Exception as exc:  # a broken profile or config file: skip AWS, do not crash start-up
        return f"AWS credentials could not be loaded ({type(exc).__name__})"
    if credentials is None:
        return "no AWS credentials found (environment, shared config, or instance role)"
    return None


def pricing_endpoint_region(region: str) -> str:
    """The Price List endpoint nearest `region` (Karpenter's choice); all serve every region."""
    if region.startswith("ap-"):
        return "ap-south-1"
    if region.startswith(("eu-", "me-", "af-", "il-")):
        return "eu-central-1"
    if region.startswith("cn-"):
        return "cn-northwest-1"
    return "us-east-1"


def on_demand_filters(region: str) -> list[dict[str, str]]:
    """Karpenter's GetProducts filters for a Linux, shared-tenancy, on-demand instance-hour."""
    terms = {
        "regionCode": region,
        "serviceCode": "AmazonEC2",
        "preInstalledSw": "NA",
        "operatingSystem": "Linux",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
        "tenancy": "Shared",
        "productFamily": "Compute Instance",
    }
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()]


def _memory_gib(raw: object) -> float | None:
    """'32 GiB' → 32.0; 'NA' → None."""
    if not isinstance(raw, str):
        return None
    match = re.match(r"^\s*([\d,.]+)\s*GiB\s*$", raw)
    return float(match.group(1).replace(",", "")) if match else None


def _int_or_none(raw: object) -> int | None:
    try:
        return int(str(raw))
    except ValueError:
        return None


def parse_price_item(raw: object) -> tuple[str, float, Spec] | None:
    """(instance type, USD/hour, spec) from one PriceList element (a JSON string), or None."""
    try:
        document = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError as exc:
        raise MalformedUpstreamResponse("aws: PriceList item is not JSON", source=UPSTREAM) from exc
    if not isinstance(document, Mapping):
        raise MalformedUpstreamResponse("aws: PriceList item is not an object", source=UPSTREAM)
    product = document.get("product")
    attributes = product.get("attributes") if isinstance(product, Mapping) else None
    if not isinstance(attributes, Mapping) or not isinstance(attributes.get("instanceType"), str):
        return None
    price: float | None = None
    terms = document.get("terms")
    on_demand = terms.get("OnDemand") if isinstance(terms, Mapping) else None
    for term in (on_demand or {}).values():
        dimensions = term.get("priceDimensions") if isinstance(term, Mapping) else None
        for dimension in (dimensions or {}).values():
            if not isinstance(dimension, Mapping) or dimension.get("unit") != "Hrs":
                continue
            usd = dimension.get("pricePerUnit", {}).get("USD")
            try:
                value = float(usd)
            except (TypeError, ValueError):
                continue
            if value > 0:
                price = value if price is None else min(price, value)
    if price is None:
        return None
    spec = Spec(
        vcpus=_int_or_none(attributes.get("vcpu")),
        memory_gib=_memory_gib(attributes.get("memory")),
        gpu_count=_int_or_none(attributes.get("gpu")) or 0,
        gpu_model=None,  # not in the price list: joined from the bundled catalog
    )
    return attributes["instanceType"], price, spec


def translate_boto_error(exc: Exception, operation: str) -> ProviderError:
    """Map a botocore exception onto the domain error tree (message without exception text)."""
    name = type(exc).__name__
    response = getattr(exc, "response", None)
    code = ""
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            code = str(error.get("Code", ""))
    where = f"aws {operation}"
    if code in _AUTH_CODES or name in ("NoCredentialsError", "PartialCredentialsError"):
        return ProviderAuthError(
            f"{where}: credentials rejected or missing ({code or name})", source=UPSTREAM
        )
    if code in _THROTTLE_CODES:
        return ProviderRateLimited(f"{where}: throttled ({code})", source=UPSTREAM)
    if code:
        return ProviderUnavailable(f"{where}: {code}", source=UPSTREAM, retryable=True)
    return ProviderUnavailable(f"{where}: {name}", source=UPSTREAM, retryable=True)


def _outcome(error: ProviderError) -> str:
    if isinstance(error, ProviderAuthError):
        return "auth_error"
    if isinstance(error, ProviderRateLimited):
        return "rate_limited"
    if isinstance(error, MalformedUpstreamResponse):
        return "malformed"
    return "error"


def _pages(pages: Iterator[Mapping[str, Any]], endpoint: str) -> Iterator[Mapping[str, Any]]:
    """Iterate boto3 pages, timing each request and translating its failures."""
    while True:
        started = time.perf_counter()
        try:
            page = next(pages)
        except StopIteration:
            return
        except ProviderError:
            raise
        except Exception as exc:  # botocore's tree is imported lazily; classify by name and code
            error = translate_boto_error(exc, endpoint)
            UPSTREAM_LATENCY.labels(UPSTREAM, endpoint).observe(time.perf_counter() - started)
            UPSTREAM_REQUESTS.labels(UPSTREAM, endpoint, _outcome(error)).inc()
            raise error from exc
        UPSTREAM_LATENCY.labels(UPSTREAM, endpoint).observe(time.perf_counter() - started)
        UPSTREAM_REQUESTS.labels(UPSTREAM, endpoint, "ok").inc()
        yield page


def default_client_factory(connect_timeout_s: float, read_timeout_s: float) -> ClientFactory:
    """boto3 clients with standard retries and timeouts (boto3 imported on first use)."""

    def make(service: str, region: str) -> Any:
        boto3 = importlib.import_module("boto3")
        config_module = importlib.import_module("botocore.config")
        config = config_module.Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
        )
        # A session per client: boto3 sessions are not thread-safe, clients are.
        return boto3.session.Session().client(service, region_name=region, config=config)

    return make


class AwsPriceList:
    """`PriceProvider` over the AWS Price List Query API (on-demand) and EC2 spot price history."""

    name = UPSTREAM

    def __init__(
        self,
        *,
        client_factory: ClientFactory,
        specs: SpecIndex | None = None,
        clock: Callable[[], datetime] = utc_now,
        memo_ttl_s: float = 60.0,
        page_size: int = 100,
    ) -> None:
        self._factory = client_factory
        self._specs = specs or SpecIndex(None)
        self._clock = clock
        self._page_size = page_size
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._memo: Memo[tuple[str, PriceType], tuple[datetime, dict[str, tuple[float, Spec]]]] = Memo(
            memo_ttl_s
        )

    def supports(self, price_type: PriceType) -> bool:
        """AWS has on-demand (Price List) and spot (EC2) prices."""
        return price_type in (PriceType.ON_DEMAND, PriceType.SPOT)

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                client = self._factory(service, region)
                self._clients[(service, region)] = client
            return client

    def _on_demand_sync(self, region: str) -> dict[str, tuple[float, Spec]]:
        client = self._client("pricing", pricing_endpoint_region(region))
        pages = client.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2",
            Filters=on_demand_filters(region),
            FormatVersion="aws_v1",
            PaginationConfig={"PageSize": self._page_size},
        )
        found: dict[str, tuple[float, Spec]] = {}
        for page in _pages(iter(pages), "get_products"):
            for raw in page.get("PriceList", []):
                parsed = parse_price_item(raw)
                if parsed is not None and parsed[0] not in found:
                    found[parsed[0]] = (parsed[1], parsed[2])
        return found

    def _spot_sync(self, region: str, now: datetime) -> dict[str, tuple[float, Spec]]:
        client = self._client("ec2", region)
        pages = client.get_paginator("describe_spot_price_history").paginate(
            ProductDescriptions=["Linux/UNIX"], StartTime=now, PaginationConfig={"PageSize": 1000}
        )
        cheapest: dict[str, float] = {}
        for page in _pages(iter(pages), "spot_price_history"):
            for entry in page.get("SpotPriceHistory", []):
                name = entry.get("InstanceType")
                try:
                    price = float(entry.get("SpotPrice"))
                except (TypeError, ValueError):
                    continue
                if isinstance(name, str) and price > 0:
                    cheapest[name] = min(price, cheapest.get(name, price))
        return {name: (price, Spec(None, None, 0, None)) for name, price in cheapest.items()}

    async def _fetch(
        self, region: str, price_type: PriceType
    ) -> tuple[datetime, dict[str, tuple[float, Spec]]]:
        now = self._clock()
        if price_type is PriceType.SPOT:
            found = await asyncio.to_thread(self._spot_sync, region, now)
        else:
            found = await asyncio.to_thread(self._on_demand_sync, region)
            self._specs.learn(UPSTREAM, {name: spec for name, (_, spec) in found.items()})
        log.info("aws %s %s: %d prices", region, price_type.value, len(found))
        return now, found

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        """Live Linux prices of one AWS region (GPU models joined from the bundled catalog)."""
        if provider != UPSTREAM or not self.supports(price_type):
            return None
        check_region(UPSTREAM, region)
        fetched_at, found = await self._memo.get(
            (region, price_type), lambda: self._fetch(region, price_type)
        )
        if not found:
            return None
        known = await self._specs.for_region(UPSTREAM, region)
        as_of = as_of_today(fetched_at)
        offers = []
        for name in sorted(found):
            price, spec = found[name]
            if name in known:
                spec = spec.merged_over(known[name])
            offers.append(spec.live_offer(UPSTREAM, region, name, price, price_type, as_of))
        return OfferTable.from_offers(UPSTREAM, region, price_type, offers, fetched_at=fetched_at)

    def _regions_sync(self) -> list[str]:
        client = self._client("pricing", "us-east-1")
        pages = client.get_paginator("get_attribute_values").paginate(
            ServiceCode="AmazonEC2", AttributeName="regionCode"
        )
        found = set()
        for page in _pages(iter(pages), "attribute_values"):
            for item in page.get("AttributeValues", []):
                value = item.get("Value")
                if isinstance(value, str) and _STANDARD_REGION.match(value):
                    found.add(value)  # Local Zones and Wavelength zones are not placement regions
        return sorted(found)

    async def regions(self) -> list[str]:
        """Every standard region code the Price List knows for EC2."""
        return await asyncio.to_thread(self._regions_sync)

    async def aclose(self) -> None:
        """Close the boto3 clients' connection pools."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            close = getattr(client, "close", None)
            if callable(close):
                close()
        self._memo.clear()
