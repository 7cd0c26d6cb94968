"""`carbon-optimizer prices refresh` and `carbon-optimizer estimate` (network mocked with respx)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import respx

from carbon_optimizer.cli import ProgressBar, main

FIXTURES = Path(__file__).parent / "providers" / "prices" / "fixtures"
AZURE = "https://prices.azure.com/api/retail/prices"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Embedded mode with the price file cache in a temporary directory, and no keys."""
    for name in (
        "CARBON_OPTIMIZER_REDIS__URL",
        "CARBON_OPTIMIZER_PRICING__LIVE",
        "CARBON_OPTIMIZER_PRICING__LAMBDA_API_KEY",
        "CARBON_OPTIMIZER_PRICING__GCP_API_KEY",
        "CARBON_OPTIMIZER_ELECTRICITYMAPS__API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CARBON_OPTIMIZER_PRICING__FILE_CACHE_DIR", str(tmp_path / "prices"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path / "prices"


def test_estimate_t3_large_for_8_hours_from_the_bundled_table() -> None:
    code, out, err = run("estimate", "aws", "t3.large", "--hours", "8")
    assert code == 0, err
    assert "aws/us-east-1 t3.large" in out
    assert "0.6656 USD" in out
    assert "bundled:2026-07-20" in out

    code, out, _ = run("estimate", "aws", "t3.large", "--hours", "8", "--json")
    answer = json.loads(out)
    assert code == 0
    assert (answer["cost_usd"], answer["price_usd_per_hour"]) == (0.6656, 0.0832)
    assert (answer["price_source"], answer["as_of"], answer["currency"]) == (
        "bundled:2026-07-20",
        "2026-07-20",
        "USD",
    )
    assert answer["energy_kwh"] > 0
    assert answer["emissions_g"] > 0


def test_estimate_unknown_type_is_bad_input() -> None:
    code, _, err = run("estimate", "aws", "t9.nonexistent", "--hours", "1")
    assert code == 2
    assert "t9.nonexistent" in err
    assert run("estimate", "aws", "t3.large", "--hours", "0")[0] == 2
    assert run("estimate", "oracle", "x", "--hours", "1")[0] == 2


def test_prices_refresh_writes_the_file_cache_with_progress(isolated: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(url__regex=r".*\$skip=1000.*").mock(
            return_value=httpx.Response(200, json=json.loads((FIXTURES / "azure_page2.json").read_text()))
        )
        router.get(AZURE).mock(
            return_value=httpx.Response(200, json=json.loads((FIXTURES / "azure_page1.json").read_text()))
        )
        code, out, err = run("prices", "refresh", "--provider", "azure", "--region", "eastus")

    assert code == 0, err
    assert out.startswith("azure: 2 of 2 refreshed (")
    assert "failed" not in out
    assert "azure: refreshing 2 price tables" in err
    assert len(list(isolated.iterdir())) == 2  # on-demand and spot tables of eastus


def test_prices_refresh_failure_changes_nothing_and_exits_1(isolated: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(AZURE).mock(return_value=httpx.Response(503))
        code, out, err = run(
            "prices", "refresh", "--provider", "azure", "--provider", "lambda", "--region", "eastus", "--json"
        )
    report = json.loads(out)
    assert code == 1
    assert report["ok"] == 0
    assert report["skipped"] == {"lambda": "no API key (CARBON_OPTIMIZER_PRICING__LAMBDA_API_KEY)"}
    assert {i["error"] for i in report["items"]} == {"azure retail_prices: HTTP 503"}
    assert "0 of 2 price tables refreshed, 2 failed" in err
    assert not isolated.exists()


def test_progress_bar_redraws_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(stream, width=10)
    bar("azure", 0, 4)
    bar("gcp", 1, 2)
    bar("azure", 4, 4)
    bar.close()
    lines = stream.getvalue().split("\r")
    assert lines[-1] == "azure [##########] 4/4  gcp [#####.....] 1/2\n"


def test_estimate_hours_are_capped_like_the_api() -> None:
    from carbon_optimizer.api.schemas import EstimateRequest

    cap = next(m.le for m in EstimateRequest.model_fields["hours"].metadata if hasattr(m, "le"))
    assert cap == 8760
    code, out, err = run("estimate", "aws", "t3.large", "--hours", "9000")
    assert (code, out) == (2, "")
    assert err == f"error: --hours: Input should be less than or equal to {cap}\n"
    code, out, _ = run("estimate", "aws", "t3.large", "--hours", str(cap), "--json")
    assert code == 0
    assert json.loads(out)["hours"] == cap
