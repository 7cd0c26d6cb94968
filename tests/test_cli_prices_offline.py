"""`prices refresh` without a network: the host is named, a proxy is suggested, and nothing claims
success (issue 13, item 7). The network boundary is an httpx.MockTransport raising ConnectError,
handed to the command through its `transport` seam."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from carbon_optimizer.cli import build_parser, cmd_prices_refresh

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Embedded mode, the price file cache in a temporary directory, no keys, no proxy, no retries."""
    for name in (
        "CARBON_OPTIMIZER_REDIS__URL",
        "CARBON_OPTIMIZER_PRICING__LIVE",
        "CARBON_OPTIMIZER_PRICING__LAMBDA_API_KEY",
        "CARBON_OPTIMIZER_PRICING__GCP_API_KEY",
        *PROXY_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CARBON_OPTIMIZER_PRICING__FILE_CACHE_DIR", str(tmp_path / "prices"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "prices"


class Offline:
    """A transport for a machine without a route out: every request fails to connect."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)


def refresh(*argv: str) -> tuple[int, str, str, Offline]:
    offline = Offline()
    args = build_parser().parse_args(["prices", "refresh", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = cmd_prices_refresh(args, out, err, transport=httpx.MockTransport(offline))
    return code, out.getvalue(), err.getvalue(), offline


def test_offline_refresh_names_the_host_and_suggests_a_proxy(isolated: Path) -> None:
    code, out, err, offline = refresh("--provider", "azure", "--region", "eastus")
    assert code == 1
    assert set(offline.hosts) == {"prices.azure.com"}  # the command really tried the network
    assert "could not reach prices.azure.com (ConnectError)" in err
    assert "HTTPS_PROXY=" in err
    assert out.strip().startswith("azure: 0 of 2 refreshed, 2 failed (e.g. eastus ")
    assert "0 of 2 price tables refreshed, 2 failed" in err
    assert "done" not in err  # no "2/2 done" for two failures
    assert "2/2" not in out + err
    assert not isolated.exists()  # nothing written


def test_a_configured_proxy_is_pointed_at_not_suggested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.internal:3128")
    code, _, err, _ = refresh("--provider", "azure", "--region", "eastus")
    assert code == 1
    assert "HTTPS_PROXY is set" in err
    assert "secret" not in err  # the proxy URL (maybe with credentials) is never printed


def test_failed_region_discovery_is_said_in_words_not_star_dash() -> None:
    code, out, err, offline = refresh("--provider", "azure")  # no --region: the regions are listed first
    assert code == 1
    assert offline.hosts
    assert out.strip().startswith("azure: could not list its regions: ")
    assert "* -" not in out
    assert "*" not in out
    assert "could not reach prices.azure.com" in err


def test_json_report_keeps_the_per_table_errors() -> None:
    code, out, err, _ = refresh("--provider", "azure", "--region", "eastus", "--json")
    assert code == 1
    assert '"failed": 2' in out
    assert '"ok": 0' in out
    assert "could not reach prices.azure.com" in err
