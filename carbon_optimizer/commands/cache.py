"""`carbon-optimizer cache clear-negative ZONE`: the operators' lever over the shared carbon cache.

Forgets a zone's negative markers (`<key>:neg`: "no data", "not in plan", "token rejected") in
the shared store the settings name (`CARBON_OPTIMIZER_REDIS__URL`), so every worker and replica
asks the upstream again within seconds — the same as `POST /v1/admin/zones/{zone}/clear-negative`,
for an operator with shell access to the deployment's configuration rather than an admin key.
Without Redis each process has its own memory cache and nothing shared is left to clear.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, TextIO

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


async def clear_negative(zone: str) -> dict[str, int]:
    """Clear `zone` through the app's runtime (the same store, keys and sources as the server)."""
    from carbon_optimizer.app import runtime
    from carbon_optimizer.settings import load_settings

    async with runtime(load_settings()) as state:
        clear = getattr(state.service.carbon, "clear_negative", None)
        return dict(await clear(zone)) if clear is not None else {}


def cmd_clear_negative(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run `cache clear-negative`; exit 1 when the shared store could not be swept."""
    from carbon_optimizer.errors import UnknownZone
    from carbon_optimizer.settings import load_settings

    settings = load_settings()
    if settings.redis.url is None:
        err.write(
            "carbon-optimizer: no shared store configured (CARBON_OPTIMIZER_REDIS__URL); nothing to clear\n"
        )
        return EXIT_OK
    try:
        cleared = asyncio.run(clear_negative(args.zone))
    except UnknownZone as exc:
        err.write(f"carbon-optimizer: {exc.message}\n")
        return EXIT_BAD_INPUT
    if not cleared:
        out.write(f"{args.zone}: no live carbon source configured; nothing to clear\n")
        return EXIT_OK
    failed = [name for name, count in cleared.items() if count < 0]
    for name, count in cleared.items():
        shown = "store unavailable" if count < 0 else f"{count} negative marker(s) deleted"
        out.write(f"{args.zone} {name}: {shown}\n")
    return EXIT_ERROR if failed else EXIT_OK


def register(subparsers: Any) -> None:
    """Add `cache` (with `clear-negative`) to the top-level subparsers."""
    cache = subparsers.add_parser("cache", help="operate on the shared carbon cache (Redis)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    clear = cache_sub.add_parser(
        "clear-negative",
        help="forget a zone's negative cache state for every worker and replica",
        description="Delete ZONE's negative markers (no data / not in plan / token rejected) from the "
        "shared store, so every replica asks the upstream again. Needs CARBON_OPTIMIZER_REDIS__URL.",
    )
    clear.add_argument("zone", metavar="ZONE", help="zone key, e.g. DE or US-CAL-CISO")
    clear.set_defaults(func=cmd_clear_negative)
