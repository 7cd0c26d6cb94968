"""The docs page in a real headless browser: Debian's chromium, driven by Playwright's Python API.

Why a browser: the page is JavaScript (Swagger UI) — only a browser shows whether it renders with
no internet and whether "Try it out" → Execute really returns 200 for the default example. The
browser is the system's `/usr/bin/chromium` (never a Playwright browser download), with the
background-networking features off so it makes no calls of its own on a closed network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import API_KEYS, GunicornProcess, start_gunicorn

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(180)]
sync_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Route  # noqa: E402  (after the importorskip guard)

CHROMIUM = os.environ.get("CARBON_OPTIMIZER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornProcess]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no chromium at {CHROMIUM} (CI installs Debian's chromium)")
    tmp: Path = tmp_path_factory.mktemp("browser")
    process = start_gunicorn(tmp, None, docs_enabled="true", rate_limit="100000/minute")
    try:
        yield process
    finally:
        process.terminate()


def test_docs_render_offline_and_try_it_out_returns_200(server: GunicornProcess) -> None:
    external: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            # Any request leaving this origin is refused and recorded: the page must not need one.
            def guard(route: Route) -> None:
                if route.request.url.startswith(server.base_url):
                    route.continue_()
                else:
                    external.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(server.base_url + "/docs")
            operation = page.locator("#operations-optimize-optimize")
            operation.wait_for(timeout=30_000)
            assert "/v1/optimize" in operation.inner_text()
            # The server has API keys: authorise once through the page's own dialog, as a user would.
            page.locator("button.authorize").first.click()
            bearer = page.locator(".auth-container").filter(has_text="bearerAuth")
            bearer.locator("input").first.fill(API_KEYS[0])
            bearer.locator("button.authorize").click()
            page.locator("button.btn-done").first.click()
            operation.locator(".opblock-summary").click()
            # tryItOutEnabled: the editor is open; Execute posts the default example.
            with page.expect_response(lambda r: r.url.endswith("/v1/optimize")) as answer:
                operation.locator("button.execute").click()
            assert answer.value.status == 200
            body = answer.value.json()
            assert body["options"]
            assert body["best"]["emissions_g"] > 0
            live_status = operation.locator(".live-responses-table tbody .response-col_status").first
            live_status.wait_for(timeout=10_000)
            assert "200" in live_status.inner_text()
            if shot := os.environ.get("CARBON_OPTIMIZER_TEST_SCREENSHOT"):
                page.screenshot(path=shot, full_page=False)
        finally:
            browser.close()
    assert external == []
