"""`carbon-optimizer run [plan options] -- CMD ARGS…` and `wait`: gate a job on the greenest start.

Both plan exactly like `plan` (same options, same request builder, in-process or `--server`) over the
window [now, now + --max-delay] for the start, wait until the chosen start, then `run` replaces
itself with the command (`exec`: signals reach the command directly and its exit status is the
process's), while `wait` just returns 0. One line on stderr says what was chosen and why: start,
location, expected saving against starting now, and where the carbon data came from.

Design choices, and why:
- **Fail open.** A CI job or a batch job must not stop because a scheduling hint is unavailable:
  when the service cannot be reached, answers 429/5xx, or takes longer than `--plan-timeout`, the
  command runs now and the line says so. `--fail-closed` turns that into exit 69 instead.
- **Re-plan once.** Forecasts are revised (Electricity Maps updates hourly); a start chosen hours
  ago may no longer be the best. When the wait is longer than `--replan-before`, the plan is asked
  again that long before the start, over the remaining part of the *same* window (so the total
  delay stays within `--max-delay`). If the best start or location moved, the new one is adopted
  and a second line says so; if the re-plan fails, the first choice stands. Exactly once, so a
  flapping forecast cannot postpone a job repeatedly.
- **Signals while waiting.** SIGTERM and SIGINT end the wait at once with 128 + signal number
  (143, 130), without running the command: Kubernetes and CI runners send SIGTERM on cancel and
  expect a prompt exit. The wait sleeps in chunks of at most a minute against the clock, so a
  suspended laptop or a stepped clock cannot oversleep by more than that.
- **Testable without waiting.** The clock, the sleeper, the planner and the command runner are
  parameters of `gate()`; the CLI passes the real ones.

Exit codes (also in docs/run.md): the command's own status when it ran; 0 for `wait` and for
`--dry-run`; 2 bad input (arguments, validation, nothing feasible); 69 the service could not answer
and `--fail-closed` was given; 126 the command cannot be executed; 127 the command was not found;
130 / 143 interrupted by SIGINT / SIGTERM while waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, TextIO

from carbon_optimizer.cli import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    HelpFormatter,
    PlanContext,
    _BadInputError,
    _plan_in_process,
    _print_problem,
    add_plan_arguments,
    build_request,
    given_options,
    parse_minutes,
)

EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE: no plan and --fail-closed
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127
MAX_SLEEP_CHUNK_S = 60.0

Clock = Callable[[], datetime]
Sleeper = Callable[[float], None]
Planner = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
Runner = Callable[[Sequence[str], TextIO, TextIO], int]


class PlanUnavailable(Exception):
    """The service could not produce a plan in time (unreachable, overloaded, failing, slow)."""


class _Signalled(BaseException):
    """Raised from a signal handler to end the wait (BaseException: no `except Exception` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class Decision:
    """What `run`/`wait` chose, as printed and as `--json` (and the GitHub Action's outputs)."""

    start: str
    wait_seconds: int
    location: str  # as `--location` spells it: aws:eu-north-1, zone:DE
    zone: str | None
    saving_g: float | None
    saving_pct: float | None
    baseline: str | None
    carbon_source: str | None
    warnings: int
    fail_open: bool = False
    reason: str = ""
    replanned: bool = False


def _utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _fmt_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spell(location: dict[str, Any]) -> str:
    if location.get("provider"):
        return f"{location['provider']}:{location['region']}"
    return f"zone:{location.get('zone')}"


def _where(location: dict[str, Any]) -> str:
    if location.get("provider"):
        return f"{location['provider']}/{location['region']} ({location.get('zone')})"
    return f"zone {location.get('zone')}"


def _span(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def decide(result: dict[str, Any], now: datetime) -> Decision:
    """Turn an /v1/optimize answer into the decision to wait for its best option."""
    best = result["best"]
    start = _utc(best["start"])
    savings = result.get("savings") or {}
    baseline = result.get("baseline")
    return Decision(
        start=_fmt_time(start),
        wait_seconds=max(0, int((start - now).total_seconds())),
        location=_spell(best["location"]),
        zone=best["location"].get("zone"),
        saving_g=savings.get("emissions_g"),
        saving_pct=savings.get("emissions_pct"),
        baseline=_where(baseline["location"]) if baseline else None,
        carbon_source=best.get("carbon_source"),
        warnings=len(result.get("warnings") or []),
    )


def describe(decision: Decision, result: dict[str, Any] | None, max_delay: timedelta) -> str:
    """The one line that says what was chosen and why."""
    if decision.fail_open:
        return f"carbon-optimizer: {decision.reason}; running now (fail open)"
    best = (result or {}).get("best", {})
    if decision.wait_seconds < 60:
        when = "start now"
    else:
        delay = _span(max_delay.total_seconds())
        when = f"start {decision.start} (in {_span(decision.wait_seconds)}, max delay {delay})"
    where = _where(best.get("location", {})) if best else decision.location
    if decision.saving_g is None:
        saving = "no baseline to compare with"
    else:
        pct = f"{decision.saving_pct:.1f} %, " if decision.saving_pct is not None else ""
        saving = f"expected saving {pct}{decision.saving_g:.1f} gCO2e vs now at {decision.baseline}"
    source = decision.carbon_source or "unknown"
    quality = (
        f"carbon data {source} (bundled fallback, not a live forecast)"
        if "fallback:" in source
        else f"carbon data {source}"
    )
    if decision.warnings:
        quality += f", {decision.warnings} warning(s)"
    return f"carbon-optimizer: {when} at {where}: {saving}; {quality}"


# ----- planners -----


def in_process_planner(timeout_s: float) -> Planner:
    """Plan through the same runtime the server uses (cli's in-process path), bounded by `timeout_s`."""

    def plan(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return asyncio.run(asyncio.wait_for(_plan_in_process(body), timeout_s))
        except TimeoutError as exc:
            raise PlanUnavailable(f"planning took longer than {timeout_s:g} s") from exc
        except Exception as exc:  # a broken local setup (e.g. bad Redis URL) must not block the job
            raise PlanUnavailable(f"in-process planning failed: {type(exc).__name__}") from exc

    return plan


def remote_planner(server: str, api_key: str | None, timeout_s: float) -> Planner:
    """Plan against a running server through the typed client (one retry on 429/503)."""
    from carbon_optimizer.client import ApiError, CarbonOptimizerClient, RetryPolicy, TransportError

    def plan(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        retry = RetryPolicy(attempts=2, backoff_s=0.5, max_backoff_s=min(5.0, timeout_s))
        with CarbonOptimizerClient(server, api_key=api_key, timeout=timeout_s, retry=retry) as client:
            try:
                response = client.request("POST", "/v1/optimize", json=body)
            except TransportError as exc:
                raise PlanUnavailable(str(exc)) from exc
            except ApiError as exc:
                if exc.status >= 500 or exc.status == 429:
                    raise PlanUnavailable(f"{server} answered HTTP {exc.status}") from exc
                problem = exc.problem.model_dump(exclude_none=True) if exc.problem else {}
                return exc.status, problem
            payload: dict[str, Any] = response.json()
            return response.status_code, payload

    return plan


# ----- waiting and running -----


@contextmanager
def _interruptible() -> Iterator[None]:
    """While waiting, SIGTERM/SIGINT raise `_Signalled` (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exec_command(command: Sequence[str], out: TextIO, err: TextIO) -> int:
    """Replace this process with the command; return 126/127 only when that is impossible."""
    out.flush()
    err.flush()
    try:
        os.execvp(command[0], list(command))  # noqa: S606 - the caller's own command, argv as given
    except FileNotFoundError:
        err.write(f"carbon-optimizer: command not found: {command[0]}\n")
        return EXIT_NOT_FOUND
    except OSError as exc:
        err.write(f"carbon-optimizer: cannot execute {command[0]}: {exc.strerror}\n")
        return EXIT_CANNOT_EXEC
    raise AssertionError("unreachable")  # pragma: no cover - execvp does not return


def _window(body: dict[str, Any], now: datetime, max_delay: timedelta) -> tuple[datetime, datetime]:
    """Earliest start and deadline: the start may be at most `max_delay` after the earliest start."""
    window = body.get("window") or {}
    now = _minute(now)  # the service plans on whole minutes
    earliest = max(_utc(window["earliest_start"]), now) if window.get("earliest_start") else now
    duration = timedelta(minutes=int(body["workload"]["duration_minutes"]))
    deadline = earliest + max_delay + duration
    if window.get("deadline"):
        deadline = min(deadline, _utc(window["deadline"]))
    return earliest, deadline


def _windowed(body: dict[str, Any], now: datetime, max_delay: timedelta) -> dict[str, Any]:
    """`body` with the window `_window` gives it at `now`."""
    earliest, deadline = _window(body, now, max_delay)
    return {**body, "window": {"earliest_start": _fmt_time(earliest), "deadline": _fmt_time(deadline)}}


def _minute(moment: datetime) -> datetime:
    """`moment` in UTC, floored to its minute (the service's planning grid)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def gate(
    body: dict[str, Any],
    command: Sequence[str] | None,
    *,
    max_delay: timedelta,
    replan_before: timedelta,
    dry_run: bool,
    fail_closed: bool,
    as_json: bool,
    planner: Planner,
    out: TextIO,
    err: TextIO,
    clock: Clock,
    sleep: Sleeper,
    runner: Runner = exec_command,
    context: PlanContext | None = None,
) -> int:
    """Plan, say why, wait for the start (re-planning once), then run the command (if any).

    `context` lets a rejected request be reported in command-line terms (`-l/--location …`).
    """
    asked, now = body, clock()
    body = _windowed(asked, now, max_delay)

    def go(decision: Decision) -> int:
        if command is None:
            return EXIT_OK
        return runner(command, out, err)

    def emit(decision: Decision, result: dict[str, Any] | None) -> None:
        err.write(describe(decision, result, max_delay) + "\n")
        if as_json:
            out.write(json.dumps(asdict(decision)) + "\n")
        out.flush()
        err.flush()

    def unavailable(reason: str) -> int:
        if fail_closed:
            err.write(f"carbon-optimizer: {reason}; not running (--fail-closed)\n")
            return EXIT_UNAVAILABLE
        fallback = Decision(
            start=_fmt_time(now),
            wait_seconds=0,
            location="",
            zone=None,
            saving_g=None,
            saving_pct=None,
            baseline=None,
            carbon_source=None,
            warnings=0,
            fail_open=True,
            reason=reason,
        )
        emit(fallback, None)
        return EXIT_OK if dry_run else go(fallback)

    try:
        status, result = planner(body)
        if status == 422 and _minute(later := clock()) > _minute(now):
            # The service plans from its own clock, on whole minutes: a minute that passed while
            # asking can close a window with no slack left (`--max-delay 0`: "the window has
            # passed"). Asked again from the new minute, the window is what the caller meant.
            now = later
            body = _windowed(asked, now, max_delay)
            status, result = planner(body)
    except PlanUnavailable as exc:
        return unavailable(f"no plan: {exc}")
    if status == 429 or status >= 500:
        return unavailable(f"no plan: the service answered HTTP {status}")
    if status != 200:
        _print_problem(result, err, context)
        return EXIT_BAD_INPUT
    decision = decide(result, now)
    if dry_run:
        emit(decision, result)
        return EXIT_OK

    start = _utc(result["best"]["start"])
    replan_pending = start - clock() > replan_before
    try:
        with _interruptible():
            emit(decision, result)  # after the handlers are in: whoever reads this line may signal
            while True:
                remaining = (start - clock()).total_seconds()
                if remaining <= 0:
                    break
                if replan_pending and remaining <= replan_before.total_seconds():
                    replan_pending = False
                    moved = _replan(body, decision, planner, clock, err)
                    if moved is not None:
                        decision, result = moved
                        start = _utc(result["best"]["start"])
                        emit(decision, result)
                    continue
                target = remaining - replan_before.total_seconds() if replan_pending else remaining
                sleep(min(max(target, 0.0), MAX_SLEEP_CHUNK_S))
    except _Signalled as exc:
        name = signal.Signals(exc.signum).name
        err.write(f"carbon-optimizer: {name} while waiting for {_fmt_time(start)}; not running the command\n")
        return 128 + exc.signum
    return go(decision)


def _replan(
    body: dict[str, Any], previous: Decision, planner: Planner, clock: Clock, err: TextIO
) -> tuple[Decision, dict[str, Any]] | None:
    """Ask once more over the rest of the window; the new answer if the best option moved."""
    now = clock()
    # Stay on the first plan's start grid (earliest + k·step): a grid shifted to "now" would offer
    # starts a few minutes off the chosen one and call that a moved forecast.
    earliest = _utc(body["window"]["earliest_start"])
    step = timedelta(minutes=int(body.get("time_step_minutes", 60)))
    steps_passed = max(0, -((earliest - now) // step))  # ceil((now - earliest) / step)
    aligned = earliest + step * steps_passed
    again = {**body, "window": {**body["window"], "earliest_start": _fmt_time(aligned)}}
    try:
        status, result = planner(again)
    except PlanUnavailable as exc:
        err.write(f"carbon-optimizer: re-plan failed ({exc}); keeping {previous.start}\n")
        return None
    if status != 200:
        err.write(f"carbon-optimizer: re-plan answered HTTP {status}; keeping {previous.start}\n")
        return None
    fresh = decide(result, now)
    if (fresh.start, fresh.location) == (previous.start, previous.location):
        return None
    err.write(
        f"carbon-optimizer: forecast moved; re-planned from {previous.start} at {previous.location} "
        f"to {fresh.start} at {fresh.location}\n"
    )
    return Decision(**{**asdict(fresh), "replanned": True}), result


# ----- CLI wiring -----


def _gate_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command: list[str] | None = None
    if args.command == "run":
        command = list(args.cmd)
        if command and command[0] == "--":
            command = command[1:]
        if not command and not args.dry_run:
            err.write("error: run needs a command after '--', e.g. run -l zone:DE -- make test\n")
            return EXIT_BAD_INPUT
    try:
        body = build_request(args)
        max_delay = timedelta(minutes=parse_minutes(args.max_delay))
        replan_before = timedelta(minutes=parse_minutes(args.replan_before))
    except (_BadInputError, OSError, json.JSONDecodeError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.plan_timeout <= 0:
        err.write("error: --plan-timeout must be greater than 0\n")
        return EXIT_BAD_INPUT
    planner = (
        remote_planner(args.server, args.api_key, args.plan_timeout)
        if args.server
        else in_process_planner(args.plan_timeout)
    )
    try:
        return gate(
            body,
            command,
            max_delay=max_delay,
            replan_before=replan_before,
            dry_run=args.dry_run,
            fail_closed=args.fail_closed,
            as_json=args.json,
            planner=planner,
            out=out,
            err=err,
            clock=lambda: datetime.now(UTC),
            sleep=time.sleep,
            context=PlanContext(body, args.request, given_options(args)),
        )
    except ValueError as exc:  # an unreadable --earliest/--deadline
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT


def _add_gate_options(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    parser.add_argument(
        "--max-delay",
        default="6h",
        help="latest start after now (or --earliest): minutes or 3h, 1h30m (default 6h)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="plan and print the choice; do not wait or run"
    )
    parser.add_argument(
        "--fail-closed",
        action="store_true",
        help="exit 69 instead of running now when the service cannot answer",
    )
    parser.add_argument(
        "--plan-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for a plan before failing open (default 10)",
    )
    parser.add_argument(
        "--replan-before",
        default="10m",
        help="re-plan once this long before the chosen start (default 10m; 0 disables)",
    )
    # A gate shifts a job in time; cost only enters when the caller passes prices or a mode.
    parser.set_defaults(func=_gate_command, mode="carbon")


def register(subparsers: Any) -> None:
    """Add `run` and `wait` to the top-level subparsers."""
    run = subparsers.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="wait for the greenest start, then run a command (exit code passed through)",
        description="Plan like `plan`, wait until the chosen start, then exec CMD. Example: "
        "carbon-optimizer run -l zone:DE -l zone:FR --duration 2h --max-delay 8h -- make train",
    )
    _add_gate_options(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS…")
    wait = subparsers.add_parser(
        "wait",
        formatter_class=HelpFormatter,
        help="wait for the greenest start, then exit 0 (for CI steps and init containers)",
    )
    _add_gate_options(wait)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - thin alias
    """`python -m carbon_optimizer.commands.run …` is `carbon-optimizer …`."""
    from carbon_optimizer.cli import main as cli_main

    return cli_main(argv, sys.stdout, sys.stderr)
