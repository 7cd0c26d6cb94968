"""`carbon-optimizer compare-deployment`: serverless vs VM for a recurring workload, as a table.

Runs the same code path as POST /v1/compare/deployment in-process (the app's runtime, so the
same price chain and bundled data), or asks a running server with `--server`. `--json` prints the
API answer; `--plot FILE.png` draws cost and emissions against monthly volume with the break-even
marked (needs the optional extra `plot`: `pip install 'carbon-optimizer[plot]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any, TextIO

import httpx
from pydantic import ValidationError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*$", re.IGNORECASE)
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)


class BadInputError(ValueError):
    """A command-line value we cannot turn into a request."""


def parse_count(text: str) -> float:
    """`3M` → 3e6, `250k` → 2.5e5, `1.5B` → 1.5e9, `42` → 42."""
    match = _COUNT.match(text)
    if match is None:
        raise BadInputError(f"not a count: {text!r} (e.g. 3M, 250k, 42)")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def parse_duration_ms(text: str) -> float:
    """`120ms` → 120, `1.5s` → 1500, `20m` → 1,200,000; a bare number is milliseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise BadInputError(f"not a duration: {text!r} (e.g. 120ms, 1.5s, 20m)")
    unit = (match.group(2) or "ms").lower()
    factor = {"ms": 1.0, "s": 1e3, "sec": 1e3, "m": 6e4, "min": 6e4, "h": 3.6e6}[unit]
    return float(match.group(1)) * factor


def parse_region(text: str) -> dict[str, str]:
    """`aws:us-east-1` → {"provider": "aws", "region": "us-east-1"}."""
    provider, sep, region = text.partition(":")
    if not sep or not provider or not region:
        raise BadInputError(f"a region is provider:region, e.g. aws:us-east-1 (got {text!r})")
    return {"provider": provider.strip().lower(), "region": region.strip()}


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/compare/deployment body the arguments describe."""
    if args.request:
        with open(args.request, encoding="utf-8") as fh:
            loaded: dict[str, Any] = json.load(fh)
        return loaded
    if not args.region:
        raise BadInputError("give at least one region: -r aws:us-east-1")
    body: dict[str, Any] = {
        "duration_ms": parse_duration_ms(args.duration),
        "memory_mb": args.memory,
        "cpu_architecture": args.arch,
        "locations": [parse_region(r) for r in args.region],
        "request_kb": args.request_kb,
        "response_kb": args.response_kb,
        "egress_gb_per_month": args.egress_gb,
        "trigger": args.trigger,
        "free_tier": not args.no_free_tier,
        "per_instance_concurrency": args.concurrency,
        "vm_target_utilization": args.vm_utilization,
        "vm_min_instances": args.vm_min_instances,
    }
    if args.profile:
        with open(args.profile, encoding="utf-8") as fh:
            body["hourly_profile"] = json.load(fh)
    elif args.invocations is not None:
        body["invocations_per_month"] = parse_count(args.invocations)
    else:
        raise BadInputError("give --invocations (e.g. 3M) or --profile FILE.json")
    if args.peak_concurrency is not None:
        body["peak_concurrency"] = args.peak_concurrency
    if args.option:
        body["options"] = args.option
    if args.cloud_run_vcpu is not None:
        body["cloud_run_vcpu"] = args.cloud_run_vcpu
    return body


async def _in_process(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    from carbon_optimizer.api.routes.compare import to_query
    from carbon_optimizer.api.schemas_compare import CompareDeploymentRequest
    from carbon_optimizer.app import runtime
    from carbon_optimizer.compare_deployment import DeploymentComparer
    from carbon_optimizer.errors import InvalidInput
    from carbon_optimizer.settings import Settings

    try:
        request = CompareDeploymentRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return 422, {"detail": "Request validation failed", "errors": errors}
    async with runtime(Settings()) as state:
        comparer = DeploymentComparer(
            catalog=state.catalog,
            prices=state.service.prices,
            fallback_prices=state.service.fallback_prices,
            serverless=state.serverless_prices,
            clock=state.service.clock,
        )
        try:
            return 200, await comparer.compare(to_query(request, "cli"))
        except InvalidInput as exc:
            return 422, {"detail": exc.message, "errors": [{"loc": list(exc.loc), "msg": exc.message}]}


def _remote(body: dict[str, Any], server: str, api_key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(
        server.rstrip("/") + "/v1/compare/deployment", json=body, headers=headers, timeout=30.0
    )
    try:
        payload: dict[str, Any] = response.json()
    except ValueError:
        payload = {"detail": f"HTTP {response.status_code} with a non-JSON body"}
    return response.status_code, payload


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def render_table(result: dict[str, Any], out: TextIO) -> None:
    """Human-readable table: one line per (region, option), then best picks and break-even."""
    w = result["workload"]
    out.write(
        f"{w['invocations_per_month']:,.0f} invocations/month × {w['duration_ms']:g} ms "
        f"at {w['memory_mb']:g} MB; "
        f"peak concurrency {w['peak_concurrency']:.3g} ({w['peak_basis']})\n\n"
    )
    header = f"{'region':<22} {'option':<34} {'compute':>10} {'requests':>9} {'free':>9} {'egress':>8} "
    header += f"{'total $':>10} {'kWh':>8} {'kgCO2e':>8}\n"
    out.write(header)
    out.write("-" * (len(header) - 1) + "\n")
    for o in result["options"]:
        where = f"{o['provider']}:{o['region']}"
        label = o["label"] + (f" {o['vm']['count']}×{o['vm']['instance_type']}" if o.get("vm") else "")
        if not o["feasible"]:
            out.write(f"{where:<22} {label:<34} infeasible: {o['infeasible_reason']}\n")
            continue
        c = o["cost_usd_per_month"]
        out.write(
            f"{where:<22} {label[:34]:<34} {_money(c['compute']):>10} {_money(c['requests']):>9} "
            f"{_money(c['free_tier']):>9} {_money(c['egress']):>8} {_money(c['total']):>10} "
            f"{o['energy_kwh_per_month']:>8.3f} {o['emissions_kg_per_month']:>8.3f}\n"
        )
    best = result["best"]
    out.write("\n")
    for key, title in (("cheapest", "cheapest"), ("lowest_emissions", "lowest emissions")):
        pick = best.get(key)
        if pick:
            out.write(
                f"{title}: {pick['label']} in {pick['provider']}:{pick['region']} — "
                f"${_money(pick['total_usd_per_month'])}/month, "
                f"{pick['emissions_kg_per_month']:.3f} kgCO2e/month\n"
            )
    be = result.get("break_even")
    if be:
        out.write(
            f"break-even: {be['invocations_per_month']:,.0f} invocations/month between "
            f"{be['serverless']['label']} ({be['serverless']['region']}) and the VM in {be['vm']['region']}; "
            f"{be['cheaper_below']} is cheaper below it\n"
        )
    elif best.get("serverless") and best.get("vm"):
        out.write("break-even: none between 1 and 1e12 invocations/month\n")
    for warning in result.get("warnings", []):
        out.write(f"warning: {warning}\n")


def plot(result: dict[str, Any], path: str) -> None:
    """Cost and emissions against monthly volume (log x), break-even marked; raises ImportError."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result.get("curve")
    if not curve:
        raise ValueError("no curve to plot: the answer needs a feasible serverless and a feasible VM option")
    points = curve["points"]
    x = [p["invocations_per_month"] for p in points]
    s_label = f"{curve['serverless']['label']} ({curve['serverless']['region']})"
    v_label = f"VM ({curve['vm']['region']})"
    fig, (ax_cost, ax_co2) = plt.subplots(2, 1, sharex=True, figsize=(8, 7))
    ax_cost.plot(x, [p["serverless_usd"] for p in points], label=s_label, color="tab:orange")
    ax_cost.step(x, [p["vm_usd"] for p in points], where="post", label=v_label, color="tab:blue")
    ax_co2.plot(x, [p["serverless_kg"] for p in points], label=s_label, color="tab:orange")
    ax_co2.step(x, [p["vm_kg"] for p in points], where="post", label=v_label, color="tab:blue")
    be = result.get("break_even")
    for ax in (ax_cost, ax_co2):
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.01)  # free-tier months cost exactly 0
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        if be:
            ax.axvline(
                be["invocations_per_month"], color="tab:red", linestyle="--", label="break-even (cost)"
            )
        ax.legend(loc="upper left", fontsize=8)
    if be:
        ax_cost.plot([be["invocations_per_month"]], [be["vm_usd"]], "o", color="tab:red")
        ax_cost.annotate(
            f"{be['invocations_per_month']:,.3g}/month, ${be['vm_usd']:,.2f}",
            (be["invocations_per_month"], be["vm_usd"]),
            textcoords="offset points",
            xytext=(8, -14),
            fontsize=8,
            color="tab:red",
        )
    ax_cost.set_ylabel("USD / month")
    ax_co2.set_ylabel("kg CO2e / month")
    ax_co2.set_xlabel("invocations / month")
    title = "Serverless vs VM: monthly cost and emissions"
    if be:
        title += f" — break-even {be['invocations_per_month']:,.3g}/month"
    ax_cost.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_compare_deployment(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`carbon-optimizer compare-deployment`."""
    try:
        body = build_body(args)
    except (BadInputError, OSError, json.JSONDecodeError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    try:
        status, result = (
            _remote(body, args.server, args.api_key) if args.server else asyncio.run(_in_process(body))
        )
    except httpx.HTTPError as exc:
        err.write(f"error: cannot reach {args.server}: {type(exc).__name__}\n")
        return EXIT_ERROR
    if status != 200:
        err.write(f"error ({status}): {result.get('detail', 'request failed')}\n")
        for e in result.get("errors") or []:
            err.write(f"  {'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}\n")
        return EXIT_BAD_INPUT if 400 <= status < 500 else EXIT_ERROR
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        render_table(result, out)
    if args.plot:
        try:
            plot(result, args.plot)
        except ImportError:
            err.write(
                "error: --plot needs matplotlib, which is not installed: "
                "pip install 'carbon-optimizer[plot]'\n"
            )
            return EXIT_ERROR
        except ValueError as exc:
            err.write(f"error: {exc}\n")
            return EXIT_ERROR
        err.write(f"plot written to {args.plot}\n")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add `compare-deployment` to the CLI's subparsers."""
    p = sub.add_parser(
        "compare-deployment",
        help="serverless (Lambda, Azure Functions, Cloud Run) vs VM: monthly cost, carbon, break-even",
    )
    p.add_argument("--invocations", "-n", help="invocations per month: 3M, 250k, 42")
    p.add_argument("--profile", help="JSON file: invocations per hour of a typical day (24) or week (168)")
    p.add_argument(
        "--duration", "-d", default="100ms", help="per invocation: 120ms, 1.5s, 20m (default 100ms)"
    )
    p.add_argument("--memory", "-m", type=float, default=1024, help="MB per invocation (default 1024)")
    p.add_argument("--arch", default="any", choices=["x86_64", "arm64", "any"], help="what the code runs on")
    p.add_argument("--peak-concurrency", type=float, help="peak in-flight invocations (VM sizing)")
    p.add_argument("--request-kb", type=float, default=0.0)
    p.add_argument("--response-kb", type=float, default=0.0, help="per invocation, to the internet")
    p.add_argument("--egress-gb", type=float, default=0.0, help="other internet egress per month")
    p.add_argument("--trigger", default="http", choices=["http", "event"])
    p.add_argument("--region", "-r", action="append", help="provider:region, repeatable (aws:us-east-1)")
    p.add_argument(
        "--option",
        action="append",
        choices=[
            "aws_lambda_x86",
            "aws_lambda_arm",
            "azure_functions_consumption",
            "azure_functions_flex",
            "gcp_cloud_run",
            "vm",
        ],
        help="compare only these options (repeatable; a named option's limits are enforced as errors)",
    )
    p.add_argument("--no-free-tier", action="store_true", help="the account's free tier is used elsewhere")
    p.add_argument("--concurrency", type=int, default=1, help="requests per Cloud Run / Flex instance")
    p.add_argument("--cloud-run-vcpu", type=float)
    p.add_argument("--vm-utilization", type=float, default=0.6, help="VM target utilisation (default 0.6)")
    p.add_argument("--vm-min-instances", type=int, default=1)
    p.add_argument("--request", help="read the whole request body from this JSON file instead")
    p.add_argument("--server", help="ask a running server instead of computing in-process")
    p.add_argument("--api-key", help="API key for --server")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument(
        "--plot", metavar="FILE.png", help="draw cost and emissions vs volume (needs extra 'plot')"
    )
    p.set_defaults(func=cmd_compare_deployment)


__all__ = ["cmd_compare_deployment", "parse_count", "parse_duration_ms", "plot", "register", "render_table"]
