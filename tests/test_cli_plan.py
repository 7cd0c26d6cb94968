"""`carbon-optimizer plan` for pipelines: times, durations, --baseline, --request merging, formats,
errors in command-line terms, exit codes and help (issue 13, items 5 and 10)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carbon_optimizer import __version__
from carbon_optimizer.cli import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    build_parser,
    build_request,
    describe_savings,
    emit,
    main,
    parse_minutes,
    render_table,
)
from tests.support.cli_server import running_server

NOW = datetime(2026, 12, 1, 21, 14, 55, tzinfo=UTC)


def fixed_start() -> str:
    """A start two whole hours ahead, so two runs a few seconds apart plan the same window."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    return hour.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def body_of(*argv: str) -> dict[str, object]:
    return build_request(build_parser().parse_args(["plan", *argv]), now=NOW)


# ----- durations and times -----


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("PT3H", 180),
        ("P1DT2H", 1560),
        ("PT1H30M", 90),
        ("pt45m", 45),
        ("P2D", 2880),
        ("PT90S", 2),
        ("3h", 180),
    ],
)
def test_iso_8601_durations_are_read(text: str, minutes: int) -> None:
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["P1M", "PT", "P", "P1H", "3 hours"])
def test_unreadable_durations_name_the_flag_and_exit_2(text: str) -> None:
    code, out, err = run("plan", "-l", "DE", "--duration", text)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.startswith("error: --duration: cannot read duration")
    assert "PT3H" in err  # the message shows the accepted spellings
    assert err.count("\n") == 1


def test_relative_start_and_deadline_count_from_now_on_the_minute() -> None:
    body = body_of("-l", "DE", "--start", "+30m", "--deadline", "+PT2H")
    assert body["window"] == {"earliest_start": "2026-12-01T21:44:00Z", "deadline": "2026-12-01T23:14:00Z"}
    assert body_of("-l", "DE", "--earliest", "now")["window"] == {"earliest_start": "2026-12-01T21:14:00Z"}
    absolute = body_of("-l", "DE", "--deadline", "2026-12-02T08:00+01:00")
    assert absolute["window"] == {"deadline": "2026-12-02T07:00:00Z"}


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--start", "tomorrow", "cannot read time"),
        ("--deadline", "2026-12-01T10:00", "has no UTC offset"),
        ("--start", "+soon", "cannot read duration"),
    ],
)
def test_bad_times_name_their_flag(flag: str, value: str, says: str) -> None:
    code, out, err = run("plan", "-l", "DE", flag, value)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.startswith(f"error: {flag}: ")
    assert says in err


def test_a_relative_window_is_planned_inside_it() -> None:
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    code, out, err = run(
        "plan",
        "-l",
        "zone:DE",
        "--mode",
        "carbon",
        "--duration",
        "PT1H",
        "--start",
        "+1h",
        "--deadline",
        "+4h",
        "--json",
    )
    assert code == 0, err
    answer = json.loads(out)
    starts = [datetime.fromisoformat(o["start"]) for o in answer["options"]]
    assert min(starts) >= before + timedelta(hours=1)
    assert max(starts) <= before + timedelta(hours=3, minutes=1)


# ----- --version, --help -----


@pytest.mark.parametrize("argv", [["--version"], ["plan", "--version"]])
def test_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"carbon-optimizer {__version__}"


def test_help_shows_defaults_modes_exit_codes_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 60)" in text
    assert "(default: balanced)" in text
    assert "(default: table)" in text
    assert "(default: None)" not in text
    for mode in ("carbon ", "cost ", "balanced ", "carbon_within_budget ", "monetized "):
        assert f"\n  {mode}" in text  # one line per mode
    assert "exit codes:" in text
    assert "\n  2  bad input" in text
    assert "\n  1  " in text
    assert "examples:" in text
    assert "--format start" in text


# ----- --baseline -----


def test_baseline_takes_a_location_and_an_optional_start() -> None:
    assert body_of("-l", "DE", "--baseline", "aws:us-east-1")["baseline"] == {
        "location": {"provider": "aws", "region": "us-east-1"}
    }
    assert body_of("-l", "DE", "--baseline", "zone:PL@+2h")["baseline"] == {
        "location": {"zone": "PL"},
        "start": "2026-12-01T23:14:00Z",
    }
    assert body_of("-l", "DE", "--baseline", "zone:PL@0.3@now")["baseline"] == {
        "location": {"zone": "PL", "price_usd_per_hour": 0.3},
        "start": "2026-12-01T21:14:00Z",
    }


def test_baseline_is_used_by_the_answer() -> None:
    code, out, err = run("plan", "-l", "zone:FR", "--mode", "carbon", "--baseline", "zone:PL@now", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["baseline"]["location"]["zone"] == "PL"
    assert answer["savings"]["emissions_g"] > 0  # France's grid beats Poland's


# ----- --request merging -----


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "body.json"
    path.write_text(
        json.dumps(
            {
                "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
                "providers": ["gcp"],
                "objective": {"mode": "carbon"},
                "max_results": 2,
            }
        )
    )
    return path


def test_typed_options_override_the_request_file(request_file: Path) -> None:
    code, out, err = run("plan", "--request", str(request_file), "--json")
    assert code == 0, err
    assert len(json.loads(out)["options"]) == 2  # the file's max_results; --top's default does not apply

    code, out, err = run("plan", "--request", str(request_file), "--top", "4", "--json")
    assert code == 0, err
    assert len(json.loads(out)["options"]) == 4  # was silently ignored before

    merged = build_request(
        build_parser().parse_args(["plan", "--request", str(request_file), "-l", "zone:DE", "--vcpus", "8"]),
        now=NOW,
    )
    assert merged["locations"] == [{"zone": "DE"}]
    assert "providers" not in merged
    assert merged["workload"] == {"duration_minutes": 60, "vcpus": 8, "memory_gib": 4}
    assert merged["objective"] == {"mode": "carbon"}
    assert merged["max_results"] == 2


def test_an_invalid_field_of_the_request_file_is_named_in_the_file(
    tmp_path: Path, request_file: Path
) -> None:
    body = json.loads(request_file.read_text())
    body["workload"]["vcpus"] = 0
    request_file.write_text(json.dumps(body))
    code, out, err = run("plan", "--request", str(request_file))
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err == f"error: {request_file}: workload.vcpus: Input should be greater than or equal to 1\n"
    # ... and by its option once the option overrides it
    code, _, err = run("plan", "--request", str(request_file), "--vcpus", "0")
    assert err == "error: --vcpus: Input should be greater than or equal to 1\n"


def test_request_file_problems_are_bad_input(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "broken.json").write_text("{")
    for name, says in [
        ("missing.json", "cannot read"),
        ("list.json", "JSON object"),
        ("broken.json", "not JSON"),
    ]:
        code, out, err = run("plan", "--request", str(tmp_path / name))
        assert (code, out) == (EXIT_BAD_INPUT, "")
        assert err.startswith("error: --request: ")
        assert says in err


# ----- errors in command-line terms -----


@pytest.mark.parametrize(
    ("location", "suggestion"),
    [
        ("eu-west-1", "did you mean aws:eu-west-1?"),
        ("aws:europe-west1", "did you mean gcp:europe-west1?"),
        ("gcp:DE", "did you mean zone:DE?"),
        ("zone:US-CAL-CISOO", "did you mean zone:US-CAL-CISO"),
        ("aws:us-east-9", "did you mean aws:us-east-"),
    ],
)
def test_unknown_locations_get_a_suggestion_once(location: str, suggestion: str) -> None:
    code, out, err = run("plan", "--mode", "carbon", "-l", "zone:FR", "-l", location)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.count("\n") == 1, err  # said once, not as detail and again as an errors[] line
    assert err.startswith("error: -l/--location ")
    assert suggestion in err
    assert "body" not in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["-l", "DE", "--vcpus", "0"], "--vcpus"),
        (["-l", "DE", "--top", "0"], "--top"),
        (["-l", "DE", "--mode", "monetized"], "--mode"),
        (["--providers", "aws,ibm"], "--providers"),
        (["-l", "DE", "--carbon-weight", "2"], "--carbon-weight"),
        (["-l", "DE", "--duration", "20000"], "--duration"),
    ],
)
def test_validation_errors_name_the_option(argv: list[str], flag: str) -> None:
    code, out, err = run("plan", *argv)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.startswith(f"error: {flag}: "), err
    assert "body." not in err
    assert "Value error" not in err


def test_api_field_names_in_messages_become_options() -> None:
    code, _, err = run("plan", "-l", "DE", "--mode", "monetized")
    assert code == EXIT_BAD_INPUT
    assert err == "error: --mode: mode 'monetized' requires --carbon-price\n"
    code, _, err = run(
        "plan", "-l", "DE", "--mode", "carbon", "--start", "+1h", "--deadline", "+90m", "--duration", "1h"
    )
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: --deadline: ")
    assert "earliest_start" not in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "-l/--location (repeatable) or --providers"),
        (["-l", "DE", "--providers", "aws"], "not both"),
        (["-l", "DE", "--json", "--format", "csv"], "--json is --format json"),
    ],
)
def test_contradictory_or_missing_options_are_refused(argv: list[str], says: str) -> None:
    code, out, err = run("plan", *argv)
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert says in err


# ----- output formats -----


def test_format_start_prints_only_the_chosen_start() -> None:
    argv = (
        "plan",
        "-l",
        "zone:DE",
        "-l",
        "zone:FR",
        "--mode",
        "carbon",
        "--duration",
        "PT2H",
        "--start",
        fixed_start(),
    )
    code, out, err = run(*argv, "--format", "start")
    assert code == 0, err
    assert out.count("\n") == 1
    started = datetime.fromisoformat(out.strip())
    code, answer, _ = run(*argv, "--format", "json")
    assert datetime.fromisoformat(json.loads(answer)["best"]["start"]) == started


def test_format_start_keeps_warnings_on_stderr() -> None:
    # A duplicate location is dropped with a warning: stdout keeps only the time, stderr the warning.
    code, out, err = run("plan", "-l", "zone:DE", "-l", "zone:DE", "--mode", "carbon", "--format", "start")
    assert code == 0, err
    assert out.count("\n") == 1
    assert datetime.fromisoformat(out.strip()).tzinfo is not None
    assert "warning: duplicate location" in err


def test_format_csv_has_one_row_per_option() -> None:
    argv = ("plan", "--providers", "gcp", "--mode", "carbon", "--top", "4", "--start", fixed_start())
    code, out, err = run(*argv, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    code, answer, _ = run(*argv, "--json")
    options = json.loads(answer)["options"]
    assert len(rows) == len(options) == 4
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["region"] for r in rows] == [o["location"]["region"] for o in options]
    assert [float(r["emissions_g"]) for r in rows] == [o["emissions_g"] for o in options]
    assert [r["cost_usd"] for r in rows] == [
        "" if o["cost_usd"] is None else str(o["cost_usd"]) for o in options
    ]
    assert all(r["provider"] == "gcp" and r["start"].endswith("Z") for r in rows)


def test_json_is_an_alias_of_format_json() -> None:
    argv = ("plan", "-l", "zone:DE", "--mode", "carbon", "--start", fixed_start())
    alias = json.loads(run(*argv, "--json")[1])
    full = json.loads(run(*argv, "--format", "json")[1])
    assert alias["options"] == full["options"]


# ----- savings in words (item 5) -----


def test_savings_are_said_in_words_not_signs() -> None:
    assert describe_savings(
        {"emissions_g": 143.2, "emissions_pct": 37.2, "cost_usd": 0.1474, "cost_pct": 14.1}
    ) == ("saves 143.2 gCO2e (37 %), saves 0.15 USD (14 %)")
    assert describe_savings(
        {"emissions_g": -12.0, "emissions_pct": -5.0, "cost_usd": -0.15, "cost_pct": -3.2}
    ) == ("emits 12.0 gCO2e more (5.0 %), costs 0.15 USD more (3.2 %)")
    assert describe_savings({"emissions_g": 0.0, "emissions_pct": 0.0, "cost_usd": None}) == "same emissions"


def test_the_table_says_a_greener_option_costs_more() -> None:
    # Sweden's grid is far cleaner than Virginia's, and an 8-vCPU machine costs more there.
    argv = (
        "plan",
        "-l",
        "aws:us-east-1",
        "-l",
        "aws:eu-north-1",
        "--vcpus",
        "8",
        "--memory",
        "32",
        "--start",
        fixed_start(),
    )
    code, out, err = run(*argv, "--duration", "3h", "--mode", "carbon", "--json")
    assert code == 0, err
    savings = json.loads(out)["savings"]
    assert savings["cost_usd"] < 0 < savings["emissions_g"]
    baseline_cost = json.loads(out)["baseline"]["cost_usd"]
    assert savings["cost_pct"] == pytest.approx(100 * savings["cost_usd"] / baseline_cost, abs=0.01)

    code, out, err = run(*argv, "--duration", "3h", "--mode", "carbon")
    line = next(x for x in out.splitlines() if x.startswith("vs baseline"))
    assert f"saves {savings['emissions_g']:.1f} gCO2e" in line
    assert f"costs {abs(savings['cost_usd']):.2f} USD more ({abs(savings['cost_pct']):.0f} %)" in line
    assert "+" not in line
    assert "difference" not in line


def test_render_table_without_cost() -> None:
    out = io.StringIO()
    code, answer, _ = run("plan", "-l", "zone:FR", "--mode", "carbon", "--baseline", "zone:PL", "--json")
    render_table(json.loads(answer), out)
    assert "saves " in out.getvalue()
    assert "USD" not in out.getvalue().split("vs baseline")[1].split("\n")[0]


# ----- exit codes against a server -----


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    with running_server({"CARBON_OPTIMIZER_API_KEYS": "test-key-for-plan"}) as url:
        yield url


def test_auth_refusal_from_server_exits_1(keyed_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARBON_OPTIMIZER_CLIENT_API_KEY", raising=False)
    argv = ("plan", "--server", keyed_server, "-l", "zone:DE", "--mode", "carbon")
    for extra in ([], ["--api-key", "wrong-key"]):
        code, out, err = run(*argv, *extra)
        assert (code, out) == (EXIT_ERROR, ""), err
        assert "HTTP 40" in err
        assert "--api-key" in err
        assert err.count("\n") == 1
    code, out, err = run(*argv, "--api-key", "test-key-for-plan", "--format", "start")
    assert code == 0, err
    assert datetime.fromisoformat(out.strip()).tzinfo is not None
    # bad input is still 2 through the server, named by its option
    code, _, err = run(*argv, "--api-key", "test-key-for-plan", "--vcpus", "0")
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: --vcpus: ")


@pytest.mark.parametrize(("status", "code"), [(401, 1), (403, 1), (429, 1), (503, 1), (422, 2), (404, 2)])
def test_exit_code_by_status(status: int, code: int) -> None:
    err = io.StringIO()
    assert (
        emit(status, {"detail": "x"}, as_json=False, render=render_table, out=io.StringIO(), err=err) == code
    )


# ----- shared with run/wait -----


def test_wait_shares_relative_times_and_request_merging(request_file: Path) -> None:
    code, out, err = run(
        "wait",
        "--dry-run",
        "--json",
        "-l",
        "zone:DE",
        "--duration",
        "PT1H",
        "--start",
        "+2h",
        "--max-delay",
        "PT3H",
    )
    assert code == 0, err
    decision = json.loads(out)
    start = datetime.fromisoformat(decision["start"])
    now = datetime.now(UTC)
    assert now + timedelta(hours=1, minutes=58) <= start <= now + timedelta(hours=5, minutes=1)

    code, out, err = run("wait", "--dry-run", "--json", "--request", str(request_file), "-l", "zone:FR")
    assert code == 0, err
    assert json.loads(out)["location"] == "zone:FR"

    code, _, err = run("run", "-l", "eu-west-1", "--", "true")
    assert code == EXIT_BAD_INPUT
    assert err == "error: -l/--location eu-west-1: unknown zone 'eu-west-1'; did you mean aws:eu-west-1?\n"


def test_run_and_wait_help_show_the_shared_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: carbon)" in text  # wait's own default mode
    assert "(default: 60)" in text
    assert "(default: None)" not in text
