"""The `carbon-optimizer` command: plan in-process and against a real `serve`, exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest

from carbon_optimizer.cli import main, parse_minutes
from tests.support.cli_server import running_server
from tests.support.redis import free_port


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("text", "minutes"), [("180", 180), ("3h", 180), ("1h30m", 90), ("2d", 2880), ("45m", 45)]
)
def test_parse_minutes(text: str, minutes: int) -> None:
    assert parse_minutes(text) == minutes


def test_plan_prints_a_table() -> None:
    code, out, err = run(
        "plan",
        "--duration",
        "3h",
        "--vcpus",
        "8",
        "--memory",
        "32",
        "-l",
        "aws:us-east-1",
        "-l",
        "zone:FR@0.3",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "location", "instance"]
    assert "energy model:" in out
    # One row per location by default (each location's best start).
    assert len([line for line in lines if line[:2].strip().isdigit()]) == 2


def test_plan_json_matches_the_api_shape() -> None:
    code, out, err = run(
        "plan",
        "--vcpus",
        "2",
        "--memory",
        "4",
        "-l",
        "gcp:europe-west1",
        "--mode",
        "carbon",
        "--json",
        "--top",
        "3",
    )
    assert code == 0, err
    data = json.loads(out)
    # One location, flat annual data: its best start only (--top caps, max_per_location 1 decides).
    assert len(data["options"]) == 1
    assert data["best"]["location"]["region"] == "europe-west1"
    assert data["best"]["carbon_source"] == "fallback:annual-2025"


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--vcpus", "0", "-l", "DE"],
        ["plan", "-l", "NOPE-ZONE"],
        ["plan", "--duration", "forever", "-l", "DE"],
        ["plan", "-l", "aws:mars-1"],
        ["plan", "--step", "7", "-l", "DE"],
        ["plan", "--mode", "cost", "-l", "DE"],
        ["nonsense"],
    ],
)
def test_bad_input_exits_2(argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server() as url:
        yield url


def test_serve_answers_and_plan_can_use_it(server: str) -> None:
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}
    code, out, err = run(
        "plan", "--server", server, "-l", "zone:DE", "-l", "zone:FR", "--mode", "carbon", "--json"
    )
    assert code == 0, err
    remote = json.loads(out)
    code, out, err = run("plan", "-l", "zone:DE", "-l", "zone:FR", "--mode", "carbon", "--json")
    local = json.loads(out)
    assert remote["best"]["location"] == local["best"]["location"]
    code, out, err = run("plan", "--server", server, "-l", "zone:NOPE")
    assert code == 2
    assert "NOPE" in err


def test_unreachable_server_exits_1() -> None:
    code, out, err = run("plan", "--server", f"http://127.0.0.1:{free_port()}", "-l", "DE")
    assert code == 1
