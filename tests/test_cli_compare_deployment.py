"""`carbon-optimizer compare-deployment`: parsing, the table, --json, --plot (and its missing extra)."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path
from typing import Any

import pytest

from carbon_optimizer.cli import main
from carbon_optimizer.commands.compare_deployment import BadInputError, parse_count, parse_duration_ms

ARGS = [
    "compare-deployment",
    "--invocations",
    "3M",
    "--duration",
    "120ms",
    "--memory",
    "1536",
    "-r",
    "aws:us-east-1",
]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("text", "value"), [("3M", 3e6), ("250k", 2.5e5), ("1.5B", 1.5e9), ("42", 42)])
def test_parse_count(text: str, value: float) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize(("text", "ms"), [("120ms", 120), ("1.5s", 1500), ("20m", 1_200_000), ("250", 250)])
def test_parse_duration(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_values_are_rejected() -> None:
    with pytest.raises(BadInputError):
        parse_count("lots")
    code, _, err = run("compare-deployment", "--invocations", "3M", "-r", "aws")
    assert code == 2
    assert "provider:region" in err


def test_prints_a_table_with_every_option_and_the_break_even() -> None:
    code, out, _ = run(*ARGS)
    assert code == 0
    assert "AWS Lambda (x86_64)" in out
    assert "AWS Lambda (arm64)" in out
    assert "VM 1×" in out
    assert "2.73" in out  # the pricing page's mobile-backend total
    assert "break-even:" in out


def test_json_is_the_api_answer() -> None:
    code, out, _ = run(*ARGS, "--json")
    assert code == 0
    body = json.loads(out)
    assert {o["option"] for o in body["options"]} == {"aws_lambda_x86", "aws_lambda_arm", "vm"}
    assert body["curve"]["points"]


def test_input_error_names_the_field() -> None:
    code, _, err = run(*ARGS, "--memory", "20000", "--option", "aws_lambda_x86")
    assert code == 2
    assert "memory_mb" in err
    assert "10,240" in err


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "compare.png"
    code, _, err = run(*ARGS, "--plot", str(target))
    assert code == 0, err
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two axes, curves, labels: not an empty canvas


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = run(*ARGS, "--plot", str(tmp_path / "x.png"))
    assert code == 1
    assert "pip install 'carbon-optimizer[plot]'" in err
    assert "AWS Lambda" in out  # the table is still printed
    assert not (tmp_path / "x.png").exists()
