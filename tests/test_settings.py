"""Configuration from the environment: empty means unset, every setting is used, bad ones fail clearly.

Why: Compose's `${VAR:-}` and Kubernetes env entries produce empty strings, so an empty variable
must behave exactly like an absent one for every setting (an empty Redis URL used to crash
start-up inside the rate limiter). A setting nobody reads is a lie in `.env.example`. And an invalid
value must stop start-up with one line naming the variable, not a pydantic or limits traceback.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from carbon_optimizer.cli import main
from carbon_optimizer.settings import ConfigurationError, Settings, env_name, load_settings
from tests.api.conftest import make_client

ROOT = Path(__file__).resolve().parents[1]


def leaf_settings() -> list[tuple[str, ...]]:
    """Every settings field as a path, nested sections expanded: ("redis", "url"), ("rate_limit",)."""
    paths: list[tuple[str, ...]] = []
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            paths += [(name, sub) for sub in section.model_fields]
        else:
            paths.append((name,))
    return paths


def value_at(settings: Settings, path: tuple[str, ...]) -> object:
    value: object = settings
    for part in path:
        value = getattr(value, part)
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CARBON_OPTIMIZER_* variables and no .env in the working directory."""
    import os

    for key in list(os.environ):
        if key.startswith("CARBON_OPTIMIZER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_env_names_follow_the_prefix_and_delimiter() -> None:
    assert env_name(("redis", "url")) == "CARBON_OPTIMIZER_REDIS__URL"
    assert env_name(("api_keys", 0)) == "CARBON_OPTIMIZER_API_KEYS"


@pytest.mark.parametrize("path", leaf_settings(), ids=lambda p: env_name(p))
def test_empty_variable_means_unset_for_every_setting(
    path: tuple[str, ...], clean_env: pytest.MonkeyPatch
) -> None:
    default = value_at(Settings(), path)
    clean_env.setenv(env_name(path), "")
    assert value_at(load_settings(), path) == default


def test_empty_values_in_a_dotenv_file_mean_unset_too(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{env_name(p)}=\n" for p in leaf_settings()))
    assert load_settings() == Settings(_env_file=None)


async def test_empty_redis_url_and_keys_start_the_embedded_service(clean_env: pytest.MonkeyPatch) -> None:
    # The day-one crash: `CARBON_OPTIMIZER_REDIS__URL=` made the rate limiter ask for a valkey client.
    for name in ("REDIS__URL", "API_KEYS", "ELECTRICITYMAPS__API_KEY"):
        clean_env.setenv(f"CARBON_OPTIMIZER_{name}", "")
    settings = load_settings()
    assert settings.redis.url is None
    assert settings.api_keys == []
    assert settings.electricitymaps.api_key is None
    async with make_client(settings) as client:
        response = await client.get("/v1/zones")  # no key needed: auth is off, not "empty key"
        health = (await client.get("/health")).json()
    assert response.status_code == 200
    assert health["components"]["cache"]["backend"] == "memory"


def test_every_setting_is_read_by_the_code() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for path in [*(ROOT / "carbon_optimizer").rglob("*.py"), ROOT / "gunicorn.conf.py"]
        if path.name != "settings.py"
    )
    unread = [env_name(p) for p in leaf_settings() if not re.search(rf"\.{p[-1]}\b", sources)]
    assert not unread, f"settings offered but read nowhere: {unread}"


BAD_SETTINGS = [
    ("CARBON_OPTIMIZER_REDIS__URL", "localhost:6379"),
    ("CARBON_OPTIMIZER_REDIS__URL", "redis://:hunter2-secret@"),
    ("CARBON_OPTIMIZER_ELECTRICITYMAPS__BASE_URL", "api.electricitymaps.com/v3"),
    ("CARBON_OPTIMIZER_PRICING__GCP_BASE_URL", "ftp://cloudbilling.googleapis.com"),
    ("CARBON_OPTIMIZER_RATE_LIMIT", "600 per fortnight"),
    ("CARBON_OPTIMIZER_RATE_LIMIT", "lots"),
    ("CARBON_OPTIMIZER_CACHE__FORECAST_TTL_S", "-5"),
    ("CARBON_OPTIMIZER_PRICING__SPOT_TTL_S", "-1"),
    ("CARBON_OPTIMIZER_RESULT_CACHE_TTL_S", "-0.5"),
    ("CARBON_OPTIMIZER_SERVER__PORT", "eighty"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_invalid_setting_is_one_line_naming_the_variable(
    name: str, value: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert name in message
    assert value not in message  # the value may be a secret (a Redis URL with its password)
    assert "hunter2" not in message


@pytest.mark.parametrize("command", [["serve"], ["estimate", "aws", "t3.large", "--hours", "1"]])
def test_cli_fails_start_up_with_one_line(command: list[str], clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CARBON_OPTIMIZER_RATE_LIMIT", "600 per fortnight")
    out, err = io.StringIO(), io.StringIO()
    assert main(command, out, err) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    assert "CARBON_OPTIMIZER_RATE_LIMIT" in lines[0]
    assert out.getvalue() == ""


def test_app_factory_raises_the_configuration_error(clean_env: pytest.MonkeyPatch) -> None:
    from carbon_optimizer.app import create_app

    clean_env.setenv("CARBON_OPTIMIZER_CACHE__FORECAST_TTL_S", "-5")
    with pytest.raises(ConfigurationError, match="CARBON_OPTIMIZER_CACHE__FORECAST_TTL_S"):
        create_app()


@pytest.mark.deployment
@pytest.mark.parametrize(
    ("name", "value"),
    [("CARBON_OPTIMIZER_REDIS__URL", "localhost:6379"), ("CARBON_OPTIMIZER_CACHE__LATEST_TTL_S", "-1")],
)
def test_gunicorn_fails_start_up_with_one_line(name: str, value: str, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBON_OPTIMIZER_")}
    env.update({name: value, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0]
    assert "Traceback" not in done.stderr
