"""The `carbon-optimizer` command: thin parse → call → print.

- `serve`: uvicorn with the app factory (gunicorn.conf.py is the production entry point).
- `plan`: the same optimisation as POST /v1/optimize, in-process through the very same runtime as
  the server (or against `--server URL`), printed as a table or as the API's JSON with `--json`.
Exit codes: 0 success, 2 bad input (argument, validation or nothing feasible), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import httpx
from pydantic import ValidationError

from carbon_optimizer.commands import db as ledger_db
from carbon_optimizer.commands import report as ledger_report

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*$"
)


class _BadInputError(Exception):
    """A command-line value that cannot be turned into a request."""


def parse_minutes(text: str) -> int:
    """'180', '3h', '1h30m', '2d' → whole minutes."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    match = _DURATION.match(stripped.lower())
    if not match or not any(match.groups()):
        raise _BadInputError(f"cannot read duration {text!r} (use minutes or e.g. 3h, 1h30m, 2d)")
    days, hours, minutes = (float(g) if g else 0.0 for g in match.groups())
    return round(days * 1440 + hours * 60 + minutes)


def _location(text: str) -> dict[str, Any]:
    """'aws:us-east-1', 'gcp:europe-west1@0.40' or 'zone:DE@0.35' / 'DE' → a location object."""
    price: float | None = None
    if "@" in text:
        text, raw_price = text.rsplit("@", 1)
        try:
            price = float(raw_price)
        except ValueError as exc:
            raise _BadInputError(f"bad price in location {text!r}: {raw_price!r}") from exc
    if ":" in text:
        kind, name = text.split(":", 1)
        loc: dict[str, Any] = {"zone": name} if kind == "zone" else {"provider": kind, "region": name}
    else:
        loc = {"zone": text}
    if price is not None:
        loc["price_usd_per_hour"] = price
    return loc


def _gpu(text: str) -> dict[str, Any]:
    """'A100-80GB', '2xH100' or '2' → a gpu object."""
    match = re.match(r"^(\d+)\s*x\s*(.+)$", text.strip(), re.IGNORECASE)
    if match:
        return {"count": int(match.group(1)), "model": match.group(2).strip()}
    if text.strip().isdigit():
        return {"count": int(text.strip())}
    return {"count": 1, "model": text.strip()}


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """Turn `plan` arguments into an OptimizeRequest body (or read it from --request)."""
    if args.request:
        with open(args.request, encoding="utf-8") as handle:
            loaded: dict[str, Any] = json.load(handle)
        return loaded
    workload: dict[str, Any] = {
        "duration_minutes": parse_minutes(args.duration),
        "vcpus": args.vcpus,
        "memory_gib": args.memory,
    }
    if args.gpu:
        workload["gpu"] = _gpu(args.gpu)
    if args.power_watts is not None:
        workload["power_watts"] = args.power_watts
    if args.instance_type:
        pinned = {}
        for item in args.instance_type:
            if "=" not in item:
                raise _BadInputError(f"--instance-type wants provider=type, got {item!r}")
            provider, name = item.split("=", 1)
            pinned[provider] = name
        workload["instance_types"] = pinned
    if args.spot:
        workload["price_type"] = "spot"
    body: dict[str, Any] = {"workload": workload}
    locations = [_location(x) for x in args.location or []]
    if locations:
        body["locations"] = locations
    if args.providers:
        body["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    window: dict[str, Any] = {}
    if args.earliest:
        window["earliest_start"] = args.earliest
    if args.deadline:
        window["deadline"] = args.deadline
    if window:
        body["window"] = window
    objective: dict[str, Any] = {"mode": args.mode}
    if args.carbon_weight is not None:
        objective["carbon_weight"] = args.carbon_weight
    if args.max_cost_increase_pct is not None:
        objective["max_cost_increase_pct"] = args.max_cost_increase_pct
    if args.carbon_price is not None:
        objective["carbon_price_usd_per_tonne"] = args.carbon_price
    body["objective"] = objective
    body["time_step_minutes"] = args.step
    body["max_results"] = args.top
    return body


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _where(option: dict[str, Any]) -> str:
    loc = option["location"]
    if loc.get("provider"):
        return f"{loc['provider']}/{loc['region']} ({loc['zone']})"
    return f"zone {loc['zone']}"


def render_table(result: dict[str, Any], out: TextIO) -> None:
    """Human-readable summary of an optimisation answer."""
    headers = [
        "#",
        "location",
        "instance",
        "start (UTC)",
        "gCO2e/kWh",
        "kWh",
        "gCO2e",
        "USD",
        "score",
        "carbon data",
    ]
    rows = [
        [
            _fmt(o["rank"]),
            _where(o),
            _fmt(o["instance_type"]),
            o["start"].replace("T", " ").rstrip("Z"),
            _fmt(o["avg_carbon_intensity_g_per_kwh"], 1),
            _fmt(o["energy_kwh"], 4),
            _fmt(o["emissions_g"], 1),
            _fmt(o["cost_usd"], 4),
            _fmt(o["score"], 4),
            o["carbon_source"],
        ]
        for o in result["options"]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    baseline, savings = result.get("baseline"), result.get("savings")
    if baseline and savings:
        pct = savings.get("emissions_pct")
        out.write(
            f"\nvs baseline {_where(baseline)} at {baseline['start']}: "
            f"saves {_fmt(savings['emissions_g'], 1)} gCO2e"
            + (f" ({pct:.1f} %)" if pct is not None else "")
            + (
                f", cost difference {savings['cost_usd']:+.4f} USD"
                if savings.get("cost_usd") is not None
                else ""
            )
            + "\n"
        )
    model = result["energy_model"]
    out.write(
        f"energy model: {model['name']}: {model['watts']:.1f} W x PUE {model['pue']} "
        f"({result['candidates_evaluated']} candidates evaluated)\n"
    )
    for item in result.get("infeasible", []):
        loc = item["location"]
        where = f"{loc.get('provider')}/{loc.get('region')}" if loc.get("provider") else f"zone {loc['zone']}"
        out.write(f"infeasible: {where}: {item['reason']}\n")
    for warning in result.get("warnings", []):
        out.write(f"warning: {warning}\n")


def _print_problem(problem: dict[str, Any], err: TextIO) -> None:
    err.write(f"error: {problem.get('detail') or problem.get('title')}\n")
    for item in problem.get("errors") or []:
        where = ".".join(str(p) for p in item.get("loc", []))
        err.write(f"  {where}: {item.get('msg')}\n")
    for item in problem.get("infeasible") or []:
        err.write(f"  {item.get('location')}: {item.get('reason')}\n")


def emit(
    status: int,
    result: dict[str, Any],
    *,
    as_json: bool,
    render: Callable[[dict[str, Any], TextIO], None],
    out: TextIO,
    err: TextIO,
) -> int:
    """Print an API-shaped answer (table or JSON) or its problem; return the exit code."""
    if status != 200:
        _print_problem(result, err)
        return EXIT_BAD_INPUT if 400 <= status < 500 else EXIT_ERROR
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        render(result, out)
    return EXIT_OK


async def _plan_in_process(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the optimisation through the same runtime the server uses; return (status, body)."""
    from carbon_optimizer.api.convert import to_query
    from carbon_optimizer.api.schemas import OptimizeRequest
    from carbon_optimizer.app import runtime
    from carbon_optimizer.errors import DataUnavailable, InvalidInput, NothingFeasible
    from carbon_optimizer.settings import Settings

    try:
        request = OptimizeRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return 422, {"detail": "Request validation failed", "errors": errors}
    async with runtime(Settings()) as state:
        try:
            return 200, await state.service.optimize(to_query(request, "cli"))
        except InvalidInput as exc:
            return 422, {"detail": exc.message, "errors": [{"loc": list(exc.loc), "msg": exc.message}]}
        except NothingFeasible as exc:
            infeasible = [{"location": k, "reason": r} for k, r in exc.infeasible]
            return 422, {"detail": exc.message, "infeasible": infeasible}
        except DataUnavailable as exc:
            return 503, {"detail": exc.message}


def _plan_remote(body: dict[str, Any], server: str, api_key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(server.rstrip("/") + "/v1/optimize", json=body, headers=headers, timeout=30.0)
    try:
        payload: dict[str, Any] = response.json()
    except ValueError:
        payload = {"detail": f"HTTP {response.status_code} with a non-JSON body"}
    return response.status_code, payload


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer plan`."""
    try:
        body = build_request(args)
    except (_BadInputError, OSError, json.JSONDecodeError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    try:
        if args.server:
            status, result = _plan_remote(body, args.server, args.api_key)
        else:
            status, result = asyncio.run(_plan_in_process(body))
    except httpx.HTTPError as exc:
        err.write(f"error: cannot reach {args.server}: {type(exc).__name__}\n")
        return EXIT_ERROR
    return emit(status, result, as_json=args.json, render=render_table, out=out, err=err)


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer serve`: uvicorn with the app factory."""
    import uvicorn

    from carbon_optimizer.logging_config import configure_logging
    from carbon_optimizer.settings import Settings

    settings = Settings()
    configure_logging(settings)  # JSON lines; the app's own middleware writes the access log
    uvicorn.run(
        "carbon_optimizer.app:create_app",
        factory=True,
        host=args.host or settings.server.host,
        port=args.port or settings.server.port,
        workers=args.workers,
        log_level=args.log_level or settings.server.log_level,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    return EXIT_OK


# ----- prices refresh / estimate (live price catalogs; see carbon_optimizer/providers/prices) -----

DEFAULT_REGIONS = {"aws": "us-east-1", "azure": "eastus", "gcp": "us-central1", "lambda": "us-west-1"}
PRICE_PROVIDERS = ("aws", "azure", "gcp", "lambda")


class ProgressBar:
    """Refresh progress on stderr: one line redrawn in place on a terminal, start/end lines otherwise."""

    def __init__(self, stream: TextIO, width: int = 20) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.state: dict[str, tuple[int, int]] = {}

    def __call__(self, provider: str, done: int, total: int) -> None:
        """Record progress of one provider and redraw."""
        self.state[provider] = (done, total)
        if self.tty:
            parts = []
            for name, (d, t) in sorted(self.state.items()):
                filled = self.width * d // t if t else self.width
                parts.append(f"{name} [{'#' * filled}{'.' * (self.width - filled)}] {d}/{t}")
            self.stream.write("\r" + "  ".join(parts))
            self.stream.flush()
        elif done == 0:
            self.stream.write(f"{provider}: refreshing {total} price tables\n")
        elif done == total:
            self.stream.write(f"{provider}: {done}/{total} done\n")

    def close(self) -> None:
        """End the redrawn line."""
        if self.tty and self.state:
            self.stream.write("\n")


async def _refresh(args: argparse.Namespace, progress: ProgressBar) -> Any:
    from carbon_optimizer import __version__
    from carbon_optimizer.kv import KeyValueStore
    from carbon_optimizer.providers.prices import refresh_prices
    from carbon_optimizer.settings import Settings

    settings = Settings()
    store: KeyValueStore | None = None
    redis_store = None
    if settings.redis.url is not None:
        from carbon_optimizer.cache import RedisStore

        redis_store = RedisStore.from_settings(settings.redis)
        store = redis_store
    else:
        from carbon_optimizer.providers.prices import FileStore

        store = FileStore(settings.pricing.file_cache_dir)
    regions = {p: list(args.region) for p in (args.provider or PRICE_PROVIDERS)} if args.region else None
    try:
        async with httpx.AsyncClient(headers={"user-agent": f"carbon-optimizer/{__version__}"}) as http:
            return await refresh_prices(
                settings, http=http, store=store, providers=args.provider, progress=progress, regions=regions
            )
    finally:
        if redis_store is not None:
            await redis_store.aclose()


def cmd_prices_refresh(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer prices refresh`: fetch live catalogs into the cache (Redis or local files)."""
    progress = ProgressBar(err)
    try:
        report = asyncio.run(_refresh(args, progress))
    finally:
        progress.close()
    if args.json:
        out.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        out.write(report.summary() + "\n")
    if report.ok_count == 0:
        err.write("error: no price table could be refreshed (see above; nothing cached was changed)\n")
        return EXIT_ERROR
    return EXIT_ERROR if report.failed_count else EXIT_OK


async def _estimate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from carbon_optimizer.app import runtime
    from carbon_optimizer.domain.models import PriceType
    from carbon_optimizer.errors import DataUnavailable, InvalidInput
    from carbon_optimizer.settings import Settings

    async with runtime(Settings()) as state:
        try:
            return 200, await state.service.estimate(
                provider=args.provider,
                region=args.region or DEFAULT_REGIONS[args.provider],
                instance_type=args.instance_type,
                hours=args.hours,
                price_type=PriceType.SPOT if args.spot else PriceType.ON_DEMAND,
                start=None,
            )
        except InvalidInput as exc:
            return 422, {"detail": exc.message, "errors": [{"loc": list(exc.loc), "msg": exc.message}]}
        except DataUnavailable as exc:
            return 503, {"detail": exc.message}


def render_estimate(result: dict[str, Any], out: TextIO) -> None:
    """Human-readable POST /v1/estimate answer."""
    size = ", ".join(
        part
        for part in (
            f"{result['vcpus']} vCPU" if result.get("vcpus") else "",
            f"{_fmt(result.get('memory_gib'), 1)} GiB" if result.get("memory_gib") else "",
            f"{result['gpu_count']}x {result.get('gpu_model') or 'GPU'}" if result.get("gpu_count") else "",
        )
        if part
    )
    out.write(
        f"{result['provider']}/{result['region']} {result['instance_type']}"
        + (f" ({size})" if size else "")
        + f", {_fmt(result['hours'], 2)} h {result['price_type'].replace('_', '-')}\n"
    )
    out.write(
        f"price     {result['price_usd_per_hour']} USD/h  "
        f"(source {result['price_source']}, as of {result.get('as_of') or 'undated'})\n"
    )
    out.write(f"cost      {result['cost_usd']:.4f} USD\n")
    if result.get("energy_kwh") is not None:
        out.write(
            f"energy    {_fmt(result['energy_kwh'], 4)} kWh -> {_fmt(result.get('emissions_g'), 1)} gCO2e "
            f"at {_fmt(result.get('avg_carbon_intensity_g_per_kwh'), 1)} gCO2e/kWh "
            f"({result.get('carbon_source')}) from {result.get('start')}\n"
        )
    for warning in result.get("warnings", []):
        out.write(f"warning: {warning}\n")


def cmd_estimate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer estimate aws t3.large --hours 8`: the same answer as POST /v1/estimate."""
    if not args.hours > 0:
        err.write("error: --hours must be greater than 0\n")
        return EXIT_BAD_INPUT
    status, result = asyncio.run(_estimate(args))
    return emit(status, result, as_json=args.json, render=render_estimate, out=out, err=err)


def add_price_commands(sub: Any) -> None:
    """Register `prices refresh` and `estimate` on the top-level subparsers."""
    prices = sub.add_parser("prices", help="live price catalogs")
    prices_sub = prices.add_subparsers(dest="prices_command", required=True)
    refresh = prices_sub.add_parser(
        "refresh", help="fetch live price catalogs into the cache (Redis if configured, else local files)"
    )
    refresh.add_argument(
        "--provider",
        action="append",
        choices=PRICE_PROVIDERS,
        help="only this provider (repeatable; default all)",
    )
    refresh.add_argument(
        "--region",
        action="append",
        help="only this region code (repeatable; default every region the API lists)",
    )
    refresh.add_argument("--json", action="store_true", help="print the full report as JSON")
    refresh.set_defaults(func=cmd_prices_refresh)

    estimate = sub.add_parser("estimate", help="list cost of one instance type (same as POST /v1/estimate)")
    estimate.add_argument("provider", choices=PRICE_PROVIDERS)
    estimate.add_argument("instance_type")
    estimate.add_argument("--hours", type=float, required=True)
    estimate.add_argument(
        "--region",
        help="region code (default: "
        + ", ".join(f"{p} {r}" for p, r in DEFAULT_REGIONS.items()).replace("%", "%%")
        + ")",
    )
    estimate.add_argument("--spot", action="store_true", help="spot price instead of on-demand")
    estimate.add_argument("--json", action="store_true", help="print the API's JSON answer")
    estimate.set_defaults(func=cmd_estimate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and for extra subcommands)."""
    parser = argparse.ArgumentParser(
        prog="carbon-optimizer", description="Carbon- and price-aware workload placement."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default=None, help="bind address (default from settings: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default from settings: 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (production: gunicorn)"
    )
    serve.add_argument("--log-level", default=None)
    serve.set_defaults(func=cmd_serve)

    plan = sub.add_parser("plan", help="rank placements for one workload (same as POST /v1/optimize)")
    plan.add_argument("--duration", default="60", help="run length: minutes or 3h, 1h30m, 2d (default 60)")
    plan.add_argument("--vcpus", type=int, default=2)
    plan.add_argument("--memory", type=float, default=4.0, help="GiB")
    plan.add_argument("--gpu", help="e.g. A100-80GB, 2xH100, or a count")
    plan.add_argument("--power-watts", type=float, help="average IT power draw (overrides the energy model)")
    plan.add_argument("--instance-type", action="append", help="pin a type: provider=type (repeatable)")
    plan.add_argument("--spot", action="store_true", help="use spot prices")
    plan.add_argument(
        "--location", "-l", action="append", help="aws:us-east-1, gcp:europe-west1, zone:DE@0.35 (repeatable)"
    )
    plan.add_argument("--providers", help="every catalogued region of these providers, e.g. aws,gcp")
    plan.add_argument("--earliest", help="RFC 3339 earliest start (default now)")
    plan.add_argument("--deadline", help="RFC 3339 latest end (default earliest + 24 h)")
    plan.add_argument(
        "--mode",
        default="balanced",
        choices=["carbon", "cost", "balanced", "carbon_within_budget", "monetized"],
    )
    plan.add_argument("--carbon-weight", type=float)
    plan.add_argument("--max-cost-increase-pct", type=float)
    plan.add_argument("--carbon-price", type=float, help="USD per tonne CO2e (mode monetized)")
    plan.add_argument(
        "--step", type=int, default=60, choices=[5, 15, 30, 60], help="start-time step, minutes"
    )
    plan.add_argument("--top", type=int, default=5, help="how many options")
    plan.add_argument("--request", help="read the whole request body from this JSON file instead")
    plan.add_argument("--server", help="ask a running server instead of computing in-process")
    plan.add_argument("--api-key", help="API key for --server (or set CARBON_OPTIMIZER_CLIENT_API_KEY)")
    plan.add_argument("--json", action="store_true", help="print the API's JSON answer")
    plan.set_defaults(func=cmd_plan)
    add_price_commands(sub)
    ledger_db.register(sub)
    ledger_report.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of the `carbon-optimizer` console script."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if getattr(args, "api_key", None) is None and args.command == "plan":
        import os

        args.api_key = os.environ.get("CARBON_OPTIMIZER_CLIENT_API_KEY")
    code: int = args.func(args, out, err)
    return code
