"""`run` / `wait`: the decision, the bounded wait, re-planning, fail-open, signals, exit codes.

Unit tests drive `gate()` with a fake clock whose sleeper advances time (nothing really waits) and
a planner that runs the real service in-process over a programmable fake carbon source. The exit
code, exec and signal promises are checked on real subprocesses.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest

from carbon_optimizer.api.convert import to_query
from carbon_optimizer.api.present import plan_json
from carbon_optimizer.api.schemas import OptimizeRequest
from carbon_optimizer.app import AppOverrides, runtime
from carbon_optimizer.cli import main
from carbon_optimizer.commands.run import (
    EXIT_UNAVAILABLE,
    MAX_SLEEP_CHUNK_S,
    PlanUnavailable,
    exec_command,
    gate,
    in_process_planner,
)
from carbon_optimizer.errors import InvalidInput
from carbon_optimizer.settings import Settings
from tests.callers.conftest import LiveServer, clean_env
from tests.deployment.harness import ROOT, free_port
from tests.fakes import FIXED_NOW, FakeCarbon, hour_of

BODY: dict[str, Any] = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [{"zone": "DE"}, {"zone": "FR"}],
    "objective": {"mode": "carbon"},
}


class FakeTime:
    """A clock and a sleeper sharing one 'now': sleeping advances it and is recorded."""

    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[FakeTime], None] | None = None

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.on_sleep is not None:
            self.on_sleep(self)


def dip_at(hours_from_now: float, *, zone: str = "DE") -> dict[str, Callable[[int], float]]:
    """Profiles where `zone` is cleanest `hours_from_now` after FIXED_NOW; the other zone is dirtier."""
    target = hour_of(FIXED_NOW) + int(hours_from_now)
    profiles: dict[str, Callable[[int], float]] = {"DE": lambda h: 450.0, "FR": lambda h: 450.0}
    profiles[zone] = lambda h: 50.0 if h == target else 400.0
    return profiles


class ServicePlanner:
    """The real service (in-process runtime) over FakeCarbon; `profiles` may change between calls."""

    def __init__(self, profiles: dict[str, Callable[[int], float]], fake_time: FakeTime) -> None:
        self.profiles = profiles
        self.time = fake_time
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.bodies.append(body)

        async def plan() -> dict[str, Any]:
            overrides = AppOverrides(carbon=FakeCarbon(dict(self.profiles)), clock=self.time.clock)
            async with runtime(Settings(_env_file=None), overrides) as state:
                result = await state.service.optimize(to_query(OptimizeRequest.model_validate(body), "test"))
                return plan_json(result)  # the route's rendering of the service's Plan

        return 200, asyncio.run(plan())


class Runner:
    def __init__(self, fake_time: FakeTime, code: int = 7) -> None:
        self.time = fake_time
        self.code = code
        self.calls: list[tuple[list[str], datetime]] = []

    def __call__(self, command: Sequence[str], out: TextIO, err: TextIO) -> int:
        self.calls.append((list(command), self.time.now))
        return self.code


def run_gate(
    planner: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
    fake_time: FakeTime,
    runner: Runner | None,
    *,
    command: Sequence[str] | None = ("job",),
    max_delay: timedelta = timedelta(hours=6),
    replan_before: timedelta = timedelta(minutes=10),
    dry_run: bool = False,
    fail_closed: bool = False,
    as_json: bool = False,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = gate(
        BODY,
        command,
        max_delay=max_delay,
        replan_before=replan_before,
        dry_run=dry_run,
        fail_closed=fail_closed,
        as_json=as_json,
        planner=planner,
        out=out,
        err=err,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        runner=runner or Runner(fake_time),
    )
    return code, out.getvalue(), err.getvalue()


def test_waits_for_the_greenest_start_then_runs_and_passes_the_exit_code() -> None:
    fake = FakeTime()
    runner = Runner(fake, code=7)
    planner = ServicePlanner(dip_at(3), fake)
    code, out, err = run_gate(planner, fake, runner)
    assert code == 7
    assert len(runner.calls) == 1
    started_at = runner.calls[0][1]
    assert started_at == FIXED_NOW + timedelta(hours=3)
    assert all(s <= MAX_SLEEP_CHUNK_S for s in fake.sleeps)
    line = err.splitlines()[0]
    assert "start 2026-06-03T13:00:00Z (in 3h00m" in line
    assert "zone DE" in line
    assert "expected saving" in line
    assert "carbon data fake:test" in line
    # The window sent to the service bounds the start by --max-delay.
    window = planner.bodies[0]["window"]
    assert window == {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-03T17:00:00Z"}


class SlowPlanner(ServicePlanner):
    """Planning takes `seconds` before the service reads its clock (a loaded machine); 422 as the API."""

    seconds = 2.0

    def __call__(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.time.now += timedelta(seconds=self.seconds)
        try:
            return super().__call__(body)
        except InvalidInput as exc:
            return 422, {"title": "Invalid input", "status": 422, "detail": str(exc), "errors": []}


def test_no_delay_still_starts_when_a_minute_passes_while_planning() -> None:
    """`--max-delay 0` at hh:mm:59: the service reads the next minute, the window is asked again."""
    fake = FakeTime(FIXED_NOW + timedelta(seconds=59))
    planner, runner = SlowPlanner(dip_at(3), fake), Runner(fake, code=0)
    code, _, err = run_gate(planner, fake, runner, max_delay=timedelta(0))
    assert code == 0, err
    assert [call[0] for call in runner.calls] == [["job"]]
    first, second = (body["window"]["earliest_start"] for body in planner.bodies)
    assert (first, second) == ("2026-06-03T10:00:00Z", "2026-06-03T10:01:00Z")
    assert "start now" in err


def test_a_rejected_window_is_not_asked_again_within_the_same_minute() -> None:
    fake = FakeTime(FIXED_NOW)
    planner = SlowPlanner(dip_at(3), fake)
    planner.seconds = 0.0
    code, _, err = run_gate(planner, fake, None, max_delay=timedelta(minutes=-60))
    assert code == 2, err
    assert len(planner.bodies) == 1


def test_max_delay_bounds_the_start_even_when_later_is_greener() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    code, _, err = run_gate(ServicePlanner(dip_at(10), fake), fake, runner, max_delay=timedelta(hours=2))
    assert code == 7
    assert runner.calls[0][1] <= FIXED_NOW + timedelta(hours=2)
    assert "max delay 2h00m" in err or "start now" in err


def test_dry_run_plans_and_says_why_without_waiting_or_running() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    code, out, err = run_gate(ServicePlanner(dip_at(3), fake), fake, runner, dry_run=True, as_json=True)
    assert code == 0
    assert fake.sleeps == []
    assert runner.calls == []
    decision = json.loads(out)
    assert decision["start"] == "2026-06-03T13:00:00Z"
    assert decision["location"] == "zone:DE"
    assert decision["wait_seconds"] == 3 * 3600
    assert decision["saving_pct"] > 0
    assert decision["fail_open"] is False


def test_wait_without_a_command_exits_zero_at_the_start() -> None:
    fake = FakeTime()
    code, _, _ = run_gate(ServicePlanner(dip_at(2), fake), fake, None, command=None)
    assert code == 0
    assert fake.now == FIXED_NOW + timedelta(hours=2)


def test_replans_once_and_follows_a_moved_forecast() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    planner = ServicePlanner(dip_at(3), fake)

    def move_forecast(t: FakeTime) -> None:
        if t.now >= FIXED_NOW + timedelta(hours=2):
            planner.profiles = dip_at(5)

    fake.on_sleep = move_forecast
    code, _, err = run_gate(planner, fake, runner)
    assert code == 7
    assert len(planner.bodies) == 2
    # The re-plan happened --replan-before ahead of the first start (12:50), over the rest of the
    # same window and on the same start grid.
    assert planner.bodies[1]["window"]["earliest_start"] == "2026-06-03T13:00:00Z"
    assert planner.bodies[1]["window"]["deadline"] == planner.bodies[0]["window"]["deadline"]
    assert "forecast moved" in err
    assert runner.calls[0][1] == FIXED_NOW + timedelta(hours=5)


def test_replan_that_agrees_keeps_the_start_and_prints_nothing_more() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    planner = ServicePlanner(dip_at(3), fake)
    code, _, err = run_gate(planner, fake, runner)
    assert len(planner.bodies) == 2
    assert len(err.splitlines()) == 1
    assert runner.calls[0][1] == FIXED_NOW + timedelta(hours=3)


def test_short_waits_do_not_replan() -> None:
    fake = FakeTime()
    planner = ServicePlanner(dip_at(0), fake)
    run_gate(planner, fake, Runner(fake))
    assert len(planner.bodies) == 1


def test_replan_failure_keeps_the_first_choice() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    real = ServicePlanner(dip_at(3), fake)

    def flaky(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if real.bodies:
            raise PlanUnavailable("timed out")
        return real(body)

    code, _, err = run_gate(flaky, fake, runner)
    assert code == 7
    assert "re-plan failed" in err
    assert runner.calls[0][1] == FIXED_NOW + timedelta(hours=3)


def unreachable(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    raise PlanUnavailable("cannot reach http://127.0.0.1:9: ConnectError")


def test_fails_open_when_the_service_is_unreachable() -> None:
    fake = FakeTime()
    runner = Runner(fake, code=0)
    code, _, err = run_gate(unreachable, fake, runner)
    assert code == 0
    assert runner.calls == [(["job"], FIXED_NOW)]
    assert fake.sleeps == []
    assert "running now (fail open)" in err
    assert "ConnectError" in err


@pytest.mark.parametrize("status", [429, 500, 503])
def test_fails_open_on_overload_and_server_errors(status: int) -> None:
    fake = FakeTime()
    runner = Runner(fake, code=0)
    code, _, err = run_gate(lambda body: (status, {"detail": "busy"}), fake, runner)
    assert runner.calls
    assert f"HTTP {status}" in err
    assert "fail open" in err


def test_in_process_planning_that_is_too_slow_is_unavailable() -> None:
    with pytest.raises(PlanUnavailable, match="longer than"):
        in_process_planner(1e-6)(BODY)


def test_a_non_executable_command_is_126(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    err = io.StringIO()
    assert exec_command([str(script)], io.StringIO(), err) == 126
    assert "cannot execute" in err.getvalue()


def test_fail_closed_exits_69_without_running() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    code, _, err = run_gate(unreachable, fake, runner, fail_closed=True)
    assert code == EXIT_UNAVAILABLE == 69
    assert runner.calls == []
    assert "--fail-closed" in err


def test_bad_request_answer_is_exit_2() -> None:
    fake = FakeTime()
    runner = Runner(fake)
    problem = {
        "detail": "unknown zone 'XX'",
        "errors": [{"loc": ["body", "locations", 0, "zone"], "msg": "unknown"}],
    }
    code, _, err = run_gate(lambda body: (422, problem), fake, runner)
    assert code == 2
    assert runner.calls == []
    assert "unknown zone 'XX'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-l", "zone:DE"],  # no command
        ["run", "-l", "zone:DE", "--max-delay", "soon", "--", "true"],
        ["wait", "-l", "zone:DE", "--plan-timeout", "0"],
        ["wait", "-l", "zone:DE", "--earliest", "tomorrow"],
    ],
)
def test_bad_arguments_are_exit_2(argv: list[str]) -> None:
    err = io.StringIO()
    assert main(argv, io.StringIO(), err) == 2
    assert err.getvalue().startswith("error:")


# ----- real processes: exec, exit codes, signals, --server -----


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbon_optimizer", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_exec_passes_the_commands_exit_status_and_output_through() -> None:
    done = cli(
        "run",
        "-l",
        "zone:DE",
        "--max-delay",
        "0",
        "--",
        sys.executable,
        "-c",
        "print('hello'); raise SystemExit(3)",
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "hello\n"
    assert "start now at zone DE" in done.stderr


def test_missing_command_is_127(live_server: LiveServer) -> None:
    # Planned by the live server: this test is about exec, not about in-process start-up.
    server = ("--server", live_server.url, "--api-key", live_server.api_key)
    done = cli(
        "run", *server, "-l", "zone:DE", "--max-delay", "0", "--", "no-such-command-for-carbon-optimizer"
    )
    assert done.returncode == 127
    assert "command not found" in done.stderr


def test_unreachable_server_fails_open_and_fail_closed_is_69() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    opened = cli("run", "--server", dead, "-l", "zone:DE", "--", sys.executable, "-c", "raise SystemExit(5)")
    assert opened.returncode == 5
    assert "fail open" in opened.stderr
    closed = cli("wait", "--server", dead, "-l", "zone:DE", "--fail-closed")
    assert closed.returncode == 69
    assert "not running (--fail-closed)" in closed.stderr


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_while_waiting_exits_promptly_with_128_plus_signum(
    sig: signal.Signals, expected: int, live_server: LiveServer
) -> None:
    earliest = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carbon_optimizer",
            "run",
            "--server",
            live_server.url,
            "--api-key",
            live_server.api_key,
            "-l",
            "zone:DE",
            "--earliest",
            earliest,
            "--max-delay",
            "1h",
            "--",
            sys.executable,
            "-c",
            "print('must not run')",
        ],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # printed just before the wait begins
        assert "(in " in line, line
        sent = time.monotonic()
        process.send_signal(sig)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        stdout, _ = process.communicate(timeout=10)
    assert code == expected
    assert elapsed < 5
    assert "must not run" not in stdout


def test_server_mode_plans_against_a_running_server(live_server: LiveServer) -> None:
    done = cli(
        "wait",
        "--server",
        live_server.url,
        "--api-key",
        live_server.api_key,
        "-l",
        "zone:DE",
        "-l",
        "zone:FR",
        "--max-delay",
        "4h",
        "--dry-run",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert decision["location"] in {"zone:DE", "zone:FR"}
    assert 0 <= decision["wait_seconds"] <= 4 * 3600
    assert decision["carbon_source"].startswith(("fallback:", "forecast:"))


def test_server_mode_without_the_key_is_bad_input_not_fail_open(live_server: LiveServer) -> None:
    done = cli("wait", "--server", live_server.url, "-l", "zone:DE", "--dry-run")
    assert done.returncode == 2
    assert "fail open" not in done.stderr
