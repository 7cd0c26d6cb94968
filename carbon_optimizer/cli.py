"""The `carbon-optimizer` command: thin parse → call → print.

- `serve`: uvicorn with the app factory (gunicorn.conf.py is the production entry point).
- `plan`: the same optimisation as POST /v1/optimize, in-process through the very same runtime as
  the server (or against `--server URL`), printed as a table or as the API's JSON with `--json`.
Exit codes: 0 success, 2 bad input (argument, validation or nothing feasible), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import difflib
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx
from pydantic import ValidationError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*$"
)
_ISO_DURATION = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_DURATION_HELP = "minutes, 3h, 1h30m, 2d or ISO 8601 such as PT3H, P1DT2H"
_GIVEN = "given_plan_options"


class _BadInputError(Exception):
    """A command-line value that cannot be turned into a request."""


def parse_minutes(text: str) -> int:
    """'180', '3h', '1h30m', '2d', 'PT3H', 'P1DT2H' → whole minutes."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    iso = _ISO_DURATION.match(stripped)
    if iso and any(iso.groups()):
        weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return round(weeks * 10080 + days * 1440 + hours * 60 + minutes + seconds / 60)
    match = _DURATION.match(stripped.lower())
    if not match or not any(match.groups()):
        raise _BadInputError(f"cannot read duration {text!r} (use {_DURATION_HELP})")
    days, hours, minutes = (float(g) if g else 0.0 for g in match.groups())
    return round(days * 1440 + hours * 60 + minutes)


def parse_time(text: str, now: datetime, flag: str) -> str:
    """'now', '+30m' / '+PT2H' (from now, on the minute) or an RFC 3339 time → RFC 3339 UTC.

    A time without an offset is refused here rather than guessed: the API refuses it too, and a
    shell step in another time zone would silently plan hours off.
    """
    stripped = text.strip()
    base = now.astimezone(UTC).replace(second=0, microsecond=0)
    if stripped.lower() == "now":
        return _utc_text(base)
    if stripped.startswith("+"):
        try:
            return _utc_text(base + timedelta(minutes=parse_minutes(stripped[1:])))
        except _BadInputError as exc:
            raise _BadInputError(f"{flag}: {exc}") from exc
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError as exc:
        raise _BadInputError(
            f"{flag}: cannot read time {text!r} (use RFC 3339 such as 2026-12-01T22:00Z, 'now', or +2h)"
        ) from exc
    if parsed.tzinfo is None:
        raise _BadInputError(f"{flag}: {text!r} has no UTC offset (add Z or +01:00, or use +2h)")
    return _utc_text(parsed)


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(flag: str, text: str) -> int:
    try:
        return parse_minutes(text)
    except _BadInputError as exc:
        raise _BadInputError(f"{flag}: {exc}") from exc


def _location(text: str, flag: str = "-l/--location") -> dict[str, Any]:
    """'aws:us-east-1', 'gcp:europe-west1@0.40' or 'zone:DE@0.35' / 'DE' → a location object."""
    price: float | None = None
    if "@" in text:
        text, raw_price = text.rsplit("@", 1)
        try:
            price = float(raw_price)
        except ValueError as exc:
            raise _BadInputError(f"{flag}: bad price in location {text!r}: {raw_price!r}") from exc
    if ":" in text:
        kind, name = text.split(":", 1)
        loc: dict[str, Any] = {"zone": name} if kind == "zone" else {"provider": kind, "region": name}
    else:
        loc = {"zone": text}
    if price is not None:
        loc["price_usd_per_hour"] = price
    return loc


def _baseline(text: str, now: datetime) -> dict[str, Any]:
    """'aws:us-east-1', 'zone:DE@0.35', 'zone:DE@+2h' or 'aws:us-east-1@2026-12-01T10:00Z'.

    The part after the last '@' is a start time unless it is a number (then it is the location's
    price, as in `-l`); both may be given: 'zone:DE@0.35@now'.
    """
    where, start = text, None
    if "@" in text:
        head, tail = text.rsplit("@", 1)
        try:
            float(tail)
        except ValueError:
            where, start = head, tail
    baseline: dict[str, Any] = {"location": _location(where, "--baseline")}
    if start is not None:
        baseline["start"] = parse_time(start, now, "--baseline")
    return baseline


def _gpu(text: str) -> dict[str, Any]:
    """'A100-80GB', '2xH100' or '2' → a gpu object."""
    match = re.match(r"^(\d+)\s*x\s*(.+)$", text.strip(), re.IGNORECASE)
    if match:
        return {"count": int(match.group(1)), "model": match.group(2).strip()}
    if text.strip().isdigit():
        return {"count": int(text.strip())}
    return {"count": 1, "model": text.strip()}


# ----- which options the user actually typed (for --request merging) -----


def _remember(namespace: argparse.Namespace, dest: str) -> None:
    given: set[str] | None = getattr(namespace, _GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, _GIVEN, given)
    given.add(dest)


class _Store(argparse.Action):
    """`store` that also records the option as given (a default is not a request to override)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        setattr(namespace, self.dest, values)
        _remember(namespace, self.dest)


class _Append(argparse.Action):
    """`append` that also records the option as given."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        _remember(namespace, self.dest)


class _Flag(argparse.Action):
    """`store_true` that also records the option as given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", False)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        setattr(namespace, self.dest, True)
        _remember(namespace, self.dest)


def given_options(args: argparse.Namespace) -> frozenset[str]:
    """The plan options typed on the command line (by argparse dest), defaults excluded."""
    return frozenset(getattr(args, _GIVEN, None) or ())


def _read_request(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except OSError as exc:
        raise _BadInputError(f"--request: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise _BadInputError(f"--request: {path} is not JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise _BadInputError(f"--request: {path} must hold a JSON object (an /v1/optimize body)")
    return loaded


def _put(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = body
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def build_request(args: argparse.Namespace, now: datetime | None = None) -> dict[str, Any]:
    """Turn `plan` arguments into an OptimizeRequest body.

    With `--request FILE` the file is the body and every option typed on the command line
    overrides its field (`--top 10` sets `max_results`, `-l` replaces `locations` and drops
    `providers`, …); options left at their defaults do not touch the file. Without it, the
    options (and their defaults) make the whole body.
    """
    now = now or datetime.now(UTC)
    given = given_options(args)
    from_file = bool(args.request)
    body: dict[str, Any] = _read_request(args.request) if from_file else {}

    def want(dest: str) -> bool:
        return dest in given or not from_file

    if "location" in given and "providers" in given:
        raise _BadInputError("give -l/--location or --providers, not both")
    if not from_file and not args.location and not args.providers:
        raise _BadInputError("say where the job may run: -l/--location (repeatable) or --providers")

    if want("duration"):
        _put(body, ("workload", "duration_minutes"), _duration("--duration", args.duration))
    if want("vcpus"):
        _put(body, ("workload", "vcpus"), args.vcpus)
    if want("memory"):
        _put(body, ("workload", "memory_gib"), args.memory)
    if want("gpu") and args.gpu:
        _put(body, ("workload", "gpu"), _gpu(args.gpu))
    if want("power_watts") and args.power_watts is not None:
        _put(body, ("workload", "power_watts"), args.power_watts)
    if want("instance_type") and args.instance_type:
        pinned = {}
        for item in args.instance_type:
            if "=" not in item:
                raise _BadInputError(f"--instance-type wants provider=type, got {item!r}")
            provider, name = item.split("=", 1)
            pinned[provider] = name
        _put(body, ("workload", "instance_types"), pinned)
    if want("spot") and args.spot:
        _put(body, ("workload", "price_type"), "spot")
    if want("location") and args.location:
        body["locations"] = [_location(x) for x in args.location]
        body.pop("providers", None)
    if want("providers") and args.providers:
        body["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
        body.pop("locations", None)
    if want("start") and args.start:
        _put(body, ("window", "earliest_start"), parse_time(args.start, now, "--start"))
    if want("deadline") and args.deadline:
        _put(body, ("window", "deadline"), parse_time(args.deadline, now, "--deadline"))
    if want("mode"):
        _put(body, ("objective", "mode"), args.mode)
    if want("carbon_weight") and args.carbon_weight is not None:
        _put(body, ("objective", "carbon_weight"), args.carbon_weight)
    if want("max_cost_increase_pct") and args.max_cost_increase_pct is not None:
        _put(body, ("objective", "max_cost_increase_pct"), args.max_cost_increase_pct)
    if want("carbon_price") and args.carbon_price is not None:
        _put(body, ("objective", "carbon_price_usd_per_tonne"), args.carbon_price)
    if want("step"):
        body["time_step_minutes"] = args.step
    if want("top"):
        body["max_results"] = args.top
    if "per_location" in given:
        body["max_per_location"] = None if args.per_location == "all" else int(args.per_location)
    if want("baseline") and args.baseline:
        body["baseline"] = _baseline(args.baseline, now)
    return body


def _per_location(text: str) -> str:
    """`--per-location`: a positive count or `all` (argparse type; kept as text, converted later)."""
    if text == "all" or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"expected a count >= 1 or 'all', got {text!r}")


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


def _pct_text(pct: float | None) -> str:
    if pct is None:
        return ""
    size = abs(pct)
    return f" ({size:.0f} %)" if size >= 10 else f" ({size:.1f} %)"


def _usd_text(amount: float) -> str:
    size = abs(amount)
    return f"{size:.2f}" if size >= 0.01 else f"{size:.4f}"


def describe_savings(savings: dict[str, Any]) -> str:
    """'saves 143.2 gCO2e (37 %), costs 0.15 USD more': words carry the sign, numbers are sizes."""
    grams = float(savings["emissions_g"])
    if round(grams, 1) == 0:
        parts = ["same emissions"]
    elif grams > 0:
        parts = [f"saves {grams:.1f} gCO2e{_pct_text(savings.get('emissions_pct'))}"]
    else:
        parts = [f"emits {-grams:.1f} gCO2e more{_pct_text(savings.get('emissions_pct'))}"]
    cost = savings.get("cost_usd")
    if cost is not None:
        pct = _pct_text(savings.get("cost_pct"))
        if float(_usd_text(cost)) == 0:
            parts.append("same cost")
        elif cost > 0:
            parts.append(f"saves {_usd_text(cost)} USD{pct}")
        else:
            parts.append(f"costs {_usd_text(cost)} USD more{pct}")
    return ", ".join(parts)


CSV_COLUMNS = (
    "rank",
    "provider",
    "region",
    "zone",
    "instance_type",
    "start",
    "end",
    "avg_carbon_intensity_g_per_kwh",
    "energy_kwh",
    "emissions_g",
    "power_watts",
    "pue",
    "price_usd_per_hour",
    "cost_usd",
    "score",
    "carbon_source",
    "price_source",
)


def render_csv(result: dict[str, Any], out: TextIO) -> None:
    """One row per ranked option (header first); other scalar option fields follow, by name."""
    options = result["options"]
    extra = sorted(
        {
            key
            for option in options
            for key, value in option.items()
            if key not in CSV_COLUMNS and key != "location" and not isinstance(value, dict | list)
        }
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *extra])
    for option in options:
        row = {**option, **{k: option["location"].get(k) for k in ("provider", "region", "zone")}}
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in (*CSV_COLUMNS, *extra)])


def render_start(result: dict[str, Any], out: TextIO) -> None:
    """Only the chosen start time (RFC 3339 UTC), for `START=$(carbon-optimizer plan … --format start)`."""
    out.write(result["best"]["start"] + "\n")


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
        "data",
        "carbon source",
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
            _fmt(o.get("carbon_data")),
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
        out.write(f"\nvs baseline {_where(baseline)} at {baseline['start']}: {describe_savings(savings)}\n")
    model = result["energy_model"]
    out.write(
        f"energy model: {model['name']}: {model['watts']:.1f} W x PUE {model['pue']} "
        f"({result['candidates_evaluated']} candidates evaluated)\n"
    )
    quality = result.get("data_quality")
    if quality:
        counts = ", ".join(f"{kind} {n}" for kind, n in quality.items() if n)
        out.write(f"carbon data of the scored locations: {counts}\n")
    for item in result.get("infeasible", []):
        loc = item["location"]
        where = f"{loc.get('provider')}/{loc.get('region')}" if loc.get("provider") else f"zone {loc['zone']}"
        out.write(f"infeasible: {where}: {item['reason']}\n")
    for warning in result.get("warnings", []):
        out.write(f"warning: {warning}\n")


@dataclass(frozen=True)
class PlanContext:
    """What an error message needs to speak in command-line terms: the body and where it came from."""

    body: dict[str, Any]
    request_file: str | None = None
    given: frozenset[str] = frozenset()


# Body path prefix → the option that sets it, and that option's argparse dest (longest prefix first).
_FLAGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("workload", "duration_minutes"), "--duration", "duration"),
    (("workload", "vcpus"), "--vcpus", "vcpus"),
    (("workload", "memory_gib"), "--memory", "memory"),
    (("workload", "gpu"), "--gpu", "gpu"),
    (("workload", "power_watts"), "--power-watts", "power_watts"),
    (("workload", "instance_types"), "--instance-type", "instance_type"),
    (("workload", "price_type"), "--spot", "spot"),
    (("locations",), "-l/--location", "location"),
    (("providers",), "--providers", "providers"),
    (("window", "earliest_start"), "--start", "start"),
    (("window", "deadline"), "--deadline", "deadline"),
    (("window",), "--start/--deadline", "deadline"),
    (("objective", "carbon_weight"), "--carbon-weight", "carbon_weight"),
    (("objective", "max_cost_increase_pct"), "--max-cost-increase-pct", "max_cost_increase_pct"),
    (("objective", "carbon_price_usd_per_tonne"), "--carbon-price", "carbon_price"),
    (("objective",), "--mode", "mode"),
    (("time_step_minutes",), "--step", "step"),
    (("max_results",), "--top", "top"),
    (("max_per_location",), "--per-location", "per_location"),
    (("baseline",), "--baseline", "baseline"),
)


# API field names inside messages, as this command line spells them (only when an option set them).
_TERMS = {
    "carbon_price_usd_per_tonne": "--carbon-price",
    "max_cost_increase_pct": "--max-cost-increase-pct",
    "carbon_weight": "--carbon-weight",
    "earliest_start": "--start",
    "duration_minutes": "--duration",
    "time_step_minutes": "--step",
    "max_results": "--top",
    "max_per_location": "--per-location",
    "price_usd_per_hour": "@PRICE, e.g. -l zone:DE@0.35",
}


def _in_cli_terms(message: str) -> str:
    return re.sub(r"\b(" + "|".join(_TERMS) + r")\b", lambda m: _TERMS[m.group(1)], message)


def _body_path(loc: Any) -> tuple[str | int, ...]:
    path = tuple(loc or ())
    return path[1:] if path[:1] == ("body",) else path


def _spell_input(location: Any) -> str:
    """A location object as the user would have typed it after -l."""
    if not isinstance(location, dict):
        return str(location)
    if location.get("provider"):
        return f"{location.get('provider')}:{location.get('region')}"
    return str(location.get("zone"))


def flag_for(loc: Any, context: PlanContext | None = None) -> str:
    """Name a body field the way the command line spells it (`-l/--location eu-west-1`, `--top`).

    A field that came from `--request FILE` and was not overridden by an option is named in the
    file (`body.json: workload.vcpus`), since no option of this command line set it.
    """
    path = _body_path(loc)
    dotted = ".".join(str(p) for p in path)
    for prefix, flag, dest in _FLAGS:
        if path[: len(prefix)] != prefix:
            continue
        if context is not None and context.request_file and dest not in context.given:
            return f"{context.request_file}: {dotted}"
        if prefix == ("locations",) and len(path) > 1 and isinstance(path[1], int) and context:
            listed = context.body.get("locations") or []
            if path[1] < len(listed):
                return f"{flag} {_spell_input(listed[path[1]])}"
        return flag
    if context is not None and context.request_file:
        return f"{context.request_file}: {dotted or 'the body'}"
    return dotted


def suggest_location(location: dict[str, Any]) -> str | None:
    """'did you mean aws:eu-west-1?' for a location the catalog does not know as written.

    A bare name is read as a grid zone; when it is in fact a region code, every provider that has
    a region of that name is suggested. A provider:region pair that exists under another provider
    (or is a zone) is suggested in its right form; otherwise near spellings are offered.
    """
    from carbon_optimizer.providers.catalog import load_region_catalog

    catalog = load_region_catalog()
    provider = location.get("provider")
    name = str(location.get("region") if provider else location.get("zone") or "")
    if not name:
        return None
    folded = name.casefold()
    found = [
        f"{r.provider}:{r.region}"
        for r in catalog.regions()
        if r.region.casefold() == folded and r.provider != provider
    ]
    zone = catalog.zone(name)
    if provider and zone is not None:
        found.append(f"zone:{zone.zone}")
    if not found:
        if provider:
            pool = {r.region.casefold(): f"{provider}:{r.region}" for r in catalog.regions(str(provider))}
        else:
            pool = {z.zone.casefold(): f"zone:{z.zone}" for z in catalog.zones()}
            pool.update({r.region.casefold(): f"{r.provider}:{r.region}" for r in catalog.regions()})
        found = [pool[m] for m in difflib.get_close_matches(folded, list(pool), n=3, cutoff=0.75)]
    return f"did you mean {' or '.join(dict.fromkeys(found))}?" if found else None


def _suggestion(loc: Any, message: str, context: PlanContext | None) -> str | None:
    path = _body_path(loc)
    if context is None or "unknown" not in message or not path or path[-1] not in ("zone", "region"):
        return None
    node: Any = context.body
    for key in path[:-1]:
        if isinstance(node, dict) and isinstance(key, str):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return suggest_location(node) if isinstance(node, dict) else None


def _print_problem(problem: dict[str, Any], err: TextIO, context: PlanContext | None = None) -> None:
    """Each error once, on one line, naming the option (not the body path) when one set it."""
    errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)]
    messages = [str(e.get("msg") or "").removeprefix("Value error, ") for e in errors]
    detail = str(problem.get("detail") or problem.get("title") or "request failed")
    # The detail is said once: dropped when it only repeats an error's message or summarises the list.
    repeats = detail.startswith("Request validation failed") or any(detail in m for m in messages)
    if not errors or not repeats:
        err.write(f"error: {detail}\n")
    for item, message in zip(errors, messages, strict=True):
        where = flag_for(item.get("loc"), context)
        if not (context is not None and context.request_file and where.startswith(context.request_file)):
            message = _in_cli_terms(message)
        hint = _suggestion(item.get("loc"), message, context)
        prefix = "error: " if repeats else "  "
        err.write(f"{prefix}{where + ': ' if where else ''}{message}{'; ' + hint if hint else ''}\n")
    for item in problem.get("infeasible") or []:
        location = item.get("location")
        where = _spell_input(location) if isinstance(location, dict) else location
        err.write(f"  {where}: {item.get('reason')}\n")


def exit_code_for(status: int) -> int:
    """2 for input the service rejects; 1 for auth (401/403), overload (429) and failures."""
    if status in (401, 403, 429) or not 400 <= status < 500:
        return EXIT_ERROR
    return EXIT_BAD_INPUT


def emit(
    status: int,
    result: dict[str, Any],
    *,
    as_json: bool,
    render: Callable[[dict[str, Any], TextIO], None],
    out: TextIO,
    err: TextIO,
    context: PlanContext | None = None,
) -> int:
    """Print an API-shaped answer (rendered, or JSON) or its problem; return the exit code."""
    if status in (401, 403):
        detail = result.get("detail") or result.get("title") or ""
        err.write(
            f"error: the server refused the request (HTTP {status}{': ' + detail if detail else ''}); "
            "check --api-key or CARBON_OPTIMIZER_CLIENT_API_KEY\n"
        )
        return EXIT_ERROR
    if status != 200:
        _print_problem(result, err, context)
        return exit_code_for(status)
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        render(result, out)
    return EXIT_OK


async def _plan_in_process(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the optimisation through the same runtime the server uses; return (status, body)."""
    from carbon_optimizer.api.convert import to_query
    from carbon_optimizer.api.present import plan_json
    from carbon_optimizer.api.schemas import OptimizeRequest
    from carbon_optimizer.app import runtime
    from carbon_optimizer.errors import DataUnavailable, InvalidInput, NothingFeasible
    from carbon_optimizer.settings import load_settings

    try:
        request = OptimizeRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return 422, {"detail": "Request validation failed", "errors": errors}
    async with runtime(load_settings()) as state:
        try:
            return 200, plan_json(await state.service.optimize(to_query(request, "cli")))
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


PLAN_FORMATS: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "table": render_table,
    "csv": render_csv,
    "start": render_start,
}


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer plan`."""
    fmt = args.format
    if args.json:
        if "format" in given_options(args) and fmt != "json":
            err.write(f"error: --json is --format json; it cannot be combined with --format {fmt}\n")
            return EXIT_BAD_INPUT
        fmt = "json"
    try:
        body = build_request(args)
    except _BadInputError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    context = PlanContext(body, args.request, given_options(args))
    try:
        if args.server:
            status, result = _plan_remote(body, args.server, args.api_key)
        else:
            status, result = asyncio.run(_plan_in_process(body))
    except httpx.HTTPError as exc:
        err.write(f"error: cannot reach {args.server}: {type(exc).__name__}\n")
        return EXIT_ERROR
    render = PLAN_FORMATS.get(fmt, render_table)
    code = emit(status, result, as_json=fmt == "json", render=render, out=out, err=err, context=context)
    if code == EXIT_OK and fmt in ("start", "csv"):
        # stdout stays machine-readable; what the answer rests on still reaches the log.
        for warning in result.get("warnings") or []:
            err.write(f"warning: {warning}\n")
    return code


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer serve`: uvicorn with the app factory."""
    import uvicorn

    from carbon_optimizer.logging_config import configure_logging
    from carbon_optimizer.settings import load_settings

    settings = load_settings()
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
            # No "n/n done" line: `done` counts answers, not successes; the summary says which.
            self.stream.write(f"{provider}: refreshing {total} price tables\n")

    def close(self) -> None:
        """End the redrawn line."""
        if self.tty and self.state:
            self.stream.write("\n")


class _RecordingClient(httpx.AsyncClient):
    """An AsyncClient that remembers which hosts it could not reach (to name them afterwards).

    A subclass rather than a wrapping transport: passing `transport=` to httpx turns off the
    HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment handling this command relies on behind a proxy.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unreachable: dict[str, str] = {}  # host → transport error type

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send; on a transport failure (connect, DNS, proxy, timeout) note the host and re-raise."""
        try:
            return await super().send(request, **kwargs)
        except httpx.TransportError as exc:
            self.unreachable.setdefault(request.url.host, type(exc).__name__)
            raise


async def _refresh(
    args: argparse.Namespace, progress: ProgressBar, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Any, dict[str, str]]:
    from carbon_optimizer import __version__
    from carbon_optimizer.app import AppOverrides, runtime
    from carbon_optimizer.providers.prices import refresh_prices
    from carbon_optimizer.settings import load_settings

    settings = load_settings()
    regions = {p: list(args.region) for p in (args.provider or PRICE_PROVIDERS)} if args.region else None
    # The same runtime as the server (its price store: Redis or local files), with an HTTP client
    # that notes unreachable hosts so the summary can name them.
    async with (
        _RecordingClient(
            headers={"user-agent": f"carbon-optimizer/{__version__}"}, transport=transport
        ) as http,
        runtime(settings, AppOverrides(http=http)) as state,
    ):
        report = await refresh_prices(
            settings,
            http=http,
            store=state.price_store,
            providers=args.provider,
            progress=progress,
            regions=regions,
        )
        return report, http.unreachable


def refresh_summary(report: Any) -> str:
    """One line per provider: 'azure: 0 of 2 refreshed, 2 failed (e.g. eastus spot: …)'."""
    lines = []
    for provider in sorted({i.provider for i in report.items} | set(report.skipped)):
        if provider in report.skipped:
            lines.append(f"{provider}: skipped: {report.skipped[provider]}")
            continue
        mine = [i for i in report.items if i.provider == provider]
        listing = [i for i in mine if i.region == "*"]  # region discovery failed: no tables tried
        if listing:
            lines.append(f"{provider}: could not list its regions: {listing[0].error}")
            continue
        ok = [i for i in mine if i.ok]
        failed = [i for i in mine if not i.ok]
        line = f"{provider}: {len(ok)} of {len(mine)} refreshed"
        if ok:
            line += f" ({sum(i.offers for i in ok)} prices)"
        if failed:
            first = failed[0]
            line += f", {len(failed)} failed (e.g. {first.region} {first.price_type}: {first.error})"
        lines.append(line)
    return "\n".join(lines)


def _unreachable_hint(unreachable: dict[str, str]) -> str:
    """Name the hosts that could not be reached and say how to go through a proxy."""
    hosts = ", ".join(f"{host} ({kind})" for host, kind in sorted(unreachable.items()))
    import os

    proxy_set = any(os.environ.get(n) for n in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    advice = (
        "HTTPS_PROXY is set: check that the proxy is reachable and lets these hosts through"
        if proxy_set
        else "if this machine reaches the internet through a proxy, set HTTPS_PROXY=http://proxy:port "
        "(and NO_PROXY for hosts that must bypass it)"
    )
    return f"error: could not reach {hosts}; {advice}\n"


def cmd_prices_refresh(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """`carbon-optimizer prices refresh`: fetch live catalogs into the cache (Redis or local files).

    `transport` is the test seam (an httpx.MockTransport); the command itself passes none, so
    httpx keeps honouring the proxy environment variables.
    """
    progress = ProgressBar(err)
    try:
        report, unreachable = asyncio.run(_refresh(args, progress, transport))
    finally:
        progress.close()
    if args.json:
        out.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        out.write(refresh_summary(report) + "\n")
    if unreachable:
        err.write(_unreachable_hint(unreachable))
    return _refresh_exit_code(report.ok_count, report.failed_count, args.max_failed_pct, err)


def _refresh_exit_code(ok: int, failed: int, max_failed_pct: float, err: TextIO) -> int:
    """Exit policy of `prices refresh` (README, "Command line").

    0 when every table was refreshed, or when some failed but no more than `--max-failed-pct` of
    them (a scheduled warmer should not fail its Job over one transient error: the failed tables
    keep their cached price and are retried on the next run). 1 when nothing was refreshed or more
    than that share failed. The default 0 % keeps "any failure exits 1" for interactive use.
    """
    if ok == 0:
        err.write(
            f"error: 0 of {failed} price tables refreshed, {failed} failed; nothing cached was changed\n"
            if failed
            else "error: no price table could be refreshed (see above; nothing cached was changed)\n"
        )
        return EXIT_ERROR
    if not failed:
        return EXIT_OK
    total = ok + failed
    share = f"{failed}/{total} price tables failed ({100 * failed / total:.1f} %)"
    if 100 * failed > max_failed_pct * total:
        err.write(
            f"error: {share}, more than --max-failed-pct {max_failed_pct:g}; their cached prices were kept\n"
        )
        return EXIT_ERROR
    err.write(f"warning: {share}, within --max-failed-pct {max_failed_pct:g}; retried on the next run\n")
    return EXIT_OK


def _percentage(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


async def _estimate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from carbon_optimizer.app import runtime
    from carbon_optimizer.domain.models import PriceType
    from carbon_optimizer.errors import DataUnavailable, InvalidInput
    from carbon_optimizer.settings import load_settings

    async with runtime(load_settings()) as state:
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
    from carbon_optimizer.api.schemas import EstimateRequest

    region = args.region or DEFAULT_REGIONS[args.provider]
    try:  # the API's own limits (0 < hours ≤ 8760, name lengths), said in this command's terms
        EstimateRequest.model_validate(
            {
                "provider": args.provider,
                "region": region,
                "instance_type": args.instance_type,
                "hours": args.hours,
            }
        )
    except ValidationError as exc:
        for item in exc.errors():
            flag = {"hours": "--hours", "region": "--region"}.get(str(item["loc"][0]), "instance type")
            err.write(f"error: {flag}: {item['msg']}\n")
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
    refresh.add_argument(
        "--max-failed-pct",
        type=_percentage,
        default=0.0,
        help="exit 0 while at most this share of tables failed (default 0: any failure exits 1)",
    )
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each option's default (unless it has none or its help says it); keep epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


PLAN_EPILOG = """\
modes (--mode):
  carbon                least emissions (needs no prices)
  cost                  least cost
  balanced              weighs emissions/min against cost/min by --carbon-weight
  carbon_within_budget  least emissions among options costing at most --max-cost-increase-pct more
  monetized             least cost + emissions priced at --carbon-price USD per tonne

times (--start, --deadline, --baseline ...@TIME): RFC 3339 with an offset (2026-12-01T22:00Z),
  'now', or +DURATION from now (+30m, +2h, +PT2H). durations: minutes (90), 3h, 1h30m, 2d, or
  ISO 8601 (PT3H, P1DT2H).
--request FILE: the file is the body; every option typed as well overrides the file's field.

exit codes:
  0  success
  1  anything else: server unreachable, refused the API key (401/403), overloaded (429), failed (5xx)
  2  bad input: an option, a field the API rejects, or nothing feasible

examples:
  carbon-optimizer plan -l zone:DE -l zone:FR --duration 2h --deadline +12h --mode carbon
  carbon-optimizer plan --providers aws,gcp --vcpus 8 --memory 32 --format csv > options.csv
  START=$(carbon-optimizer plan -l zone:DE --mode carbon --duration PT3H --format start)
  carbon-optimizer plan -l aws:us-east-1 -l gcp:europe-west1 --baseline aws:us-east-1@now
  carbon-optimizer plan --request body.json --top 10 --server http://host:8000
"""


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload/location/objective options of `plan` (shared with `run` and `wait`).

    Every option records that it was typed (see `given_options`), so `--request FILE` can let the
    typed ones override the file while the defaults leave it alone.
    """
    parser.add_argument("--duration", action=_Store, default="60", help=f"run length: {_DURATION_HELP}")
    parser.add_argument("--vcpus", action=_Store, type=int, default=2, help="vCPUs the job needs")
    parser.add_argument("--memory", action=_Store, type=float, default=4.0, help="memory the job needs, GiB")
    parser.add_argument("--gpu", action=_Store, help="e.g. A100-80GB, 2xH100, or a count")
    parser.add_argument(
        "--power-watts", action=_Store, type=float, help="average IT power draw (overrides the energy model)"
    )
    parser.add_argument("--instance-type", action=_Append, help="pin a type: provider=type (repeatable)")
    parser.add_argument("--spot", action=_Flag, help="use spot prices")
    parser.add_argument(
        "--location",
        "-l",
        action=_Append,
        help="aws:us-east-1, gcp:europe-west1, zone:DE@0.35 or DE (repeatable)",
    )
    parser.add_argument(
        "--providers", action=_Store, help="every catalogued region of these providers, e.g. aws,gcp"
    )
    parser.add_argument(
        "--start",
        "--earliest",
        dest="start",
        action=_Store,
        help="earliest start: RFC 3339, 'now' or +30m (default now)",
    )
    parser.add_argument(
        "--deadline", action=_Store, help="latest END of the run: RFC 3339 or +2h (default start + 24 h)"
    )
    parser.add_argument(
        "--mode",
        action=_Store,
        default="balanced",
        choices=["carbon", "cost", "balanced", "carbon_within_budget", "monetized"],
        help="how options are ranked (one line per mode: plan --help)",
    )
    parser.add_argument("--carbon-weight", action=_Store, type=float, help="balanced: weight of carbon, 0..1")
    parser.add_argument(
        "--max-cost-increase-pct",
        action=_Store,
        type=float,
        help="carbon_within_budget: allowed extra cost, %%",
    )
    parser.add_argument("--carbon-price", action=_Store, type=float, help="monetized: USD per tonne CO2e")
    parser.add_argument(
        "--step",
        action=_Store,
        type=int,
        default=60,
        choices=[5, 15, 30, 60],
        help="start-time step, minutes",
    )
    parser.add_argument("--top", action=_Store, type=int, default=5, help="how many options")
    parser.add_argument(
        "--per-location",
        action=_Store,
        type=_per_location,
        default="1",
        metavar="N|all",
        help="start times shown per location (all: every location x start pair)",
    )
    parser.add_argument(
        "--baseline",
        action=_Store,
        help="measure savings against LOCATION[@TIME], e.g. aws:us-east-1@now (default: the API's rule)",
    )
    parser.add_argument(
        "--request", help="read the request body from this JSON file; typed options override its fields"
    )
    parser.add_argument("--server", help="ask a running server instead of computing in-process")
    parser.add_argument("--api-key", help="API key for --server (or set CARBON_OPTIMIZER_CLIENT_API_KEY)")
    parser.add_argument("--json", action=_Flag, help="print the JSON answer (plan: --format json)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and for extra subcommands)."""
    from carbon_optimizer import __version__

    parser = argparse.ArgumentParser(
        prog="carbon-optimizer", description="Carbon- and price-aware workload placement."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default=None, help="bind address (default from settings: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default from settings: 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (production: gunicorn)"
    )
    serve.add_argument("--log-level", default=None)
    serve.set_defaults(func=cmd_serve)

    plan = sub.add_parser(
        "plan",
        help="rank placements for one workload (same as POST /v1/optimize)",
        description="Rank (location, start time) placements for one workload, in-process through\n"
        "the same runtime as the server, or against --server.",
        formatter_class=HelpFormatter,
        epilog=PLAN_EPILOG,
    )
    add_plan_arguments(plan)
    plan.add_argument(
        "--format",
        action=_Store,
        default="table",
        choices=["table", "json", "start", "csv"],
        help="table; json (the API's answer); start (only the chosen start time); csv (one row per option)",
    )
    plan.add_argument("--version", action="version", version=f"carbon-optimizer {__version__}")
    plan.set_defaults(func=cmd_plan)
    add_price_commands(sub)
    # Imported here: run.py imports this module.
    from carbon_optimizer.commands import cache, compare_deployment, db, report, run

    run.register(sub)
    compare_deployment.register(sub)
    cache.register(sub)
    db.register(sub)  # savings ledger (issue 15)
    report.register(sub)
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
    if getattr(args, "api_key", None) is None and args.command in ("plan", "run", "wait"):
        import os

        args.api_key = os.environ.get("CARBON_OPTIMIZER_CLIENT_API_KEY")
    from carbon_optimizer.settings import ConfigurationError

    try:
        code: int = args.func(args, out, err)
    except ConfigurationError as exc:  # one line naming the variable, not a traceback
        err.write(f"carbon-optimizer: {exc}\n")
        return EXIT_BAD_INPUT
    return code
