"""Exit policy of `carbon-optimizer prices refresh`: a few failed tables need not fail a scheduled Job.

The cache-warming CronJob runs `prices refresh --max-failed-pct 25`: before the option existed, one
transient failed table made the whole Job fail (and retry everything). Network mocked with respx.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from tests.test_cli_prices import AZURE, FIXTURES, isolated, run

__all__ = ["isolated"]  # the autouse fixture: embedded mode, file cache in tmp_path

PAGE1 = json.loads((FIXTURES / "azure_page1.json").read_text())
PAGE2 = json.loads((FIXTURES / "azure_page2.json").read_text())


def refresh_with_westus_down(*extra: str) -> tuple[int, str, str]:
    """eastus answers (2 tables written), westus answers 503 (2 tables failed): 50 % failed."""
    with respx.mock(assert_all_called=False) as router:
        router.get(url__regex=r".*westus.*").mock(return_value=httpx.Response(503))
        router.get(url__regex=r".*\$skip=1000.*").mock(return_value=httpx.Response(200, json=PAGE2))
        router.get(AZURE).mock(return_value=httpx.Response(200, json=PAGE1))
        return run(
            "prices", "refresh", "--provider", "azure", "--region", "eastus", "--region", "westus", *extra
        )


def test_default_policy_any_failure_exits_1(isolated: Path) -> None:
    code, out, err = refresh_with_westus_down()
    assert code == 1
    assert "2/4 price tables failed (50.0 %)" in err
    assert len(list(isolated.iterdir())) == 2  # eastus was still written


def test_failures_within_the_threshold_exit_0(isolated: Path) -> None:
    code, _, err = refresh_with_westus_down("--max-failed-pct", "50")
    assert code == 0, err
    assert "warning: 2/4 price tables failed" in err


def test_failures_above_the_threshold_exit_1(isolated: Path) -> None:
    code, _, err = refresh_with_westus_down("--max-failed-pct", "49.9")
    assert code == 1
    assert "more than --max-failed-pct 49.9" in err


def test_nothing_refreshed_exits_1_whatever_the_threshold(isolated: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(AZURE).mock(return_value=httpx.Response(503))
        code, _, err = run(
            "prices", "refresh", "--provider", "azure", "--region", "eastus", "--max-failed-pct", "100"
        )
    assert code == 1
    assert "0 of 2 price tables refreshed, 2 failed; nothing cached was changed" in err


@pytest.mark.parametrize("bad", ["-1", "101", "lots"])
def test_threshold_must_be_a_percentage(bad: str) -> None:
    assert run("prices", "refresh", "--max-failed-pct", bad)[0] == 2


def test_the_cronjob_uses_a_threshold_that_tolerates_one_table() -> None:
    import importlib

    yaml = importlib.import_module("yaml")
    root = Path(__file__).resolve().parents[1]
    job = yaml.safe_load((root / "k8s" / "base" / "cronjob.yaml").read_text())
    command = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["carbon-optimizer", "prices", "refresh"]
    assert "--max-failed-pct" in command
    assert 0 < float(command[command.index("--max-failed-pct") + 1]) < 100
