"""Live cloud prices (AWS, Azure, GCP, Lambda Cloud) with a cache and a bundled fallback.

Why a package of its own: each price API has its own wire format and gotchas (see
docs/data-sources.md §2), but the rest of the service sees one `PriceProvider`: the chain in
`chain.py` (cache → live → bundled, provenance on every row), composed by `stack.py` for the app
lifespan, and filled in bulk by `refresh.py` for `carbon-optimizer prices refresh`. Importing it
does no I/O and does not import boto3.
"""

from __future__ import annotations

from .chain import CachedPriceProvider, CachePolicy
from .refresh import RefreshItem, RefreshReport, refresh_prices
from .serverless_live import build_serverless_chain
from .stack import PriceStack, build_price_stack

__all__ = [
    "CachePolicy",
    "CachedPriceProvider",
    "PriceStack",
    "RefreshItem",
    "RefreshReport",
    "build_price_stack",
    "build_serverless_chain",
    "refresh_prices",
]
