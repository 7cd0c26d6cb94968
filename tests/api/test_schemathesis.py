"""Property-based API testing with schemathesis against the live `/openapi.json` of a real server.

Why live: the schema and the responses the tests check are the ones gunicorn + Uvicorn workers
actually serve (middleware, problem+json errors, headers), not an in-process shortcut.
Bounded: a fixed number of examples per operation and no per-example deadline, so the run takes
seconds on the 2-core CI machine. Checks: no 5xx, status codes, content types, headers and bodies
conform to the schema (schemathesis' default checks for `call_and_validate`), including that
authenticated operations refuse a request without a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tests.deployment.harness import API_KEYS, GunicornProcess, start_gunicorn

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(300)]

MAX_EXAMPLES = 30
# Schema-valid requests may still be 422 by contract: unknown provider/region/zone, a window
# shorter than the job, nothing feasible — semantics JSON Schema cannot express. Every other
# status for valid data (400, 405, 413, 415, …) still fails `positive_data_acceptance`.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornProcess]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    # Docs on (the schema is what we test); limit high so generated traffic is never throttled.
    server = start_gunicorn(tmp, None, rate_limit="100000/minute", docs_enabled="true")
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def api_schema(live_server: GunicornProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        live_server.base_url + "/openapi.json", config=SchemathesisConfig.from_str(CONFIG)
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any]) -> None:
    # Every check, including content-type and status-code conformance: errors are documented as
    # application/problem+json, and an undecodable body is a 422 like any invalid input.
    case.call_and_validate(headers={"Authorization": f"Bearer {API_KEYS[0]}"}, timeout=30)
