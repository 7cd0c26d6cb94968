"""Configuration: one pydantic-settings class, env prefix `CARBON_OPTIMIZER_`, sections joined by `__`.

There is deliberately no module-level instance: the app factory and the CLI call `Settings()` so
that tests can build apps with explicit settings and importing never reads the environment.
Secrets are `SecretStr` so they never show up in reprs, logs or error bodies.

An empty variable means "unset" (`env_ignore_empty`), for every setting and nested section alike:
Compose's `${VAR:-}` and Kubernetes env entries produce empty strings, and an empty Redis URL or
API key must fall back to the default rather than crash start-up or configure an empty key.
Entry points call `load_settings()`, which turns a validation failure into one `ConfigurationError`
line naming the environment variable (never a library traceback, never the offending value, which
may be a secret).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ElectricityMapsSettings(BaseModel):
    """Electricity Maps API access (live carbon intensity). No key → bundled data only."""

    api_key: SecretStr | None = None
    base_url: str = "https://api.electricitymaps.com/v3"
    connect_timeout_s: float = Field(default=1.0, gt=0)
    read_timeout_s: float = Field(default=2.0, gt=0)
    # Whole budget for one logical fetch, retries included; must stay well under a client's patience.
    request_deadline_s: float = Field(default=3.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_base_s: float = Field(default=0.1, ge=0)
    forecast_horizon_hours: Literal[6, 24, 48, 72] = 72
    emission_factor_type: Literal["lifecycle", "direct"] = "lifecycle"
    # Zones refreshed in the background before their cache entries expire (comma-separated in env).
    prefetch_zones: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("prefetch_zones", mode="before")
    @classmethod
    def _split_zones(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("forecast_horizon_hours", mode="before")
    @classmethod
    def _horizon_from_env(cls, value: object) -> object:
        # Env values arrive as strings and Literal[int] does not coerce "72" to 72.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class WattTimeSettings(BaseModel):
    """WattTime v3 access (marginal `co2_moer`; `co2_aoer` where the plan allows). No login → unused."""

    username: str | None = None
    password: SecretStr | None = None
    base_url: str = "https://api.watttime.org/v3"  # data paths
    auth_base_url: str = "https://api.watttime.org"  # `/login` lives at the root, not under /v3
    connect_timeout_s: float = Field(default=1.0, gt=0)
    read_timeout_s: float = Field(default=2.0, gt=0)
    # Whole budget for one logical fetch (login and retries included).
    request_deadline_s: float = Field(default=4.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_base_s: float = Field(default=0.1, ge=0)
    forecast_horizon_hours: int = Field(default=72, ge=0, le=72)
    # Tokens live 30 min; renew early so a token never expires between check and use.
    token_ttl_s: float = Field(default=1800.0, gt=0)
    token_refresh_margin_s: float = Field(default=300.0, ge=0)
    # WattTime asks clients to re-resolve lat/lon → region at least monthly; a day is plenty.
    region_cache_ttl_s: float = Field(default=24 * 3600.0, gt=0)


class GBIntensitySettings(BaseModel):
    """GB Carbon Intensity API (NESO; no key, CC BY 4.0). Opt in: the default never calls out."""

    enabled: bool = False
    base_url: str = "https://api.carbonintensity.org.uk"
    connect_timeout_s: float = Field(default=1.0, gt=0)
    read_timeout_s: float = Field(default=2.0, gt=0)
    request_deadline_s: float = Field(default=3.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_base_s: float = Field(default=0.1, ge=0)
    user_agent: str = "carbon-optimizer"  # NESO asks for a descriptive User-Agent


class RedisSettings(BaseModel):
    """Shared Redis (cache, single-flight locks, rate-limit counters). No URL → in-process only."""

    url: SecretStr | None = None  # may embed a password: never logged
    socket_timeout_s: float = Field(default=0.25, gt=0)
    connect_timeout_s: float = Field(default=0.25, gt=0)
    key_prefix: str = "co:v1"
    # After a Redis failure, skip Redis for this long before probing again (keeps latency flat).
    retry_after_failure_s: float = Field(default=5.0, ge=0)
    # Connections per worker process. A request for 150–200 zones reads that many keys at once:
    # callers over the bound wait for a free connection (within the operation timeout) instead of
    # failing, which would read as misses and mark the store down for everyone.
    max_connections: int = Field(default=64, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the URL: it may carry a password.
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in _REDIS_SCHEMES:
            raise ValueError(f"must be a URL with scheme {', '.join(sorted(_REDIS_SCHEMES))}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name a host, e.g. redis://host:6379/0")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("unix:// URL must name a socket path")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value


class CacheSettings(BaseModel):
    """TTLs and resilience knobs of the carbon-data cache."""

    forecast_ttl_s: int = Field(default=900, gt=0)
    latest_ttl_s: int = Field(default=300, gt=0)
    history_ttl_s: int = Field(default=6 * 3600, gt=0)
    negative_ttl_s: int = Field(default=600, gt=0)
    # Definite "no" answers (401/403/404) are kept this long at first, doubling per repeat up to
    # negative_ttl_s: a short upstream blip must cost seconds, not the cap.
    negative_base_s: float = Field(default=5.0, gt=0)
    stale_max_age_s: int = Field(default=24 * 3600, ge=0)
    local_ttl_s: float = Field(default=30.0, ge=0)
    local_max_entries: int = Field(default=4096, gt=0)
    lock_ttl_s: float = Field(default=10.0, gt=0)
    lock_wait_s: float = Field(default=5.0, gt=0)
    breaker_failure_threshold: int = Field(default=5, gt=0)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    background_refresh: bool = False


class PricingSettings(BaseModel):
    """Live price API credentials and refresh policy. A provider without credentials is skipped."""

    live: bool = False  # opt in: the embedded default never calls price APIs
    azure_enabled: bool = True  # Azure retail needs no credentials; still only used when `live`
    azure_base_url: str = "https://prices.azure.com/api/retail/prices"
    lambda_api_key: SecretStr | None = None
    lambda_base_url: str = "https://cloud.lambda.ai/api/v1"
    gcp_api_key: SecretStr | None = None
    gcp_base_url: str = "https://cloudbilling.googleapis.com/v1"
    aws_enabled: bool = False  # needs boto3 (extra `aws`) and AWS credentials in the usual places
    on_demand_ttl_s: int = Field(default=24 * 3600, gt=0)
    spot_ttl_s: int = Field(default=3600, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    file_cache_dir: str | None = None  # embedded-mode cache for `prices refresh`; default: user cache dir
    # How long a request waits for a lazy live refresh before answering from older data.
    live_wait_s: float = Field(default=3.0, ge=0)
    # After a failed live call, skip that provider's API for this long (outages add no latency).
    failure_cooldown_s: float = Field(default=300.0, ge=0)
    # Cached live prices are kept (as stale fallback) this long past their TTL.
    cache_retention_s: int = Field(default=30 * 24 * 3600, gt=0)

    @field_validator("azure_base_url", "lambda_base_url", "gcp_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)


class ServerSettings(BaseModel):
    """Process-level knobs used by `carbon-optimizer serve` and gunicorn.conf.py."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    workers: int = Field(default=2, gt=0)
    threads: int = Field(default=1, gt=0)
    timeout_s: int = Field(default=30, gt=0)
    graceful_timeout_s: int = Field(default=20, gt=0)
    keepalive_s: int = Field(default=5, gt=0)
    # Recycle workers now and then to bound memory growth. A worker serves thousands of requests a
    # second here, so 10k would recycle it every few seconds under load (each recycle drops its
    # keep-alive connections and costs a ~1 s start-up): 200k is roughly once a minute at full load.
    max_requests: int = Field(default=200_000, ge=0)
    max_requests_jitter: int = Field(default=20_000, ge=0)
    log_level: str = "info"
    json_logs: bool = True


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host, e.g. https://api.example.com/v1")
    return value


class EdgeSettings(BaseModel):
    """The request edge (issue 11): slow clients, size bounds, rate-limit degradation, metrics port.

    `CARBON_OPTIMIZER_EDGE__*`. See docs/edge.md for why each default is what it is.
    """

    # Every rate-limiter Redis round trip (and any wait behind another one) ends after this long;
    # the request is then counted locally instead of queueing behind a stalled Redis.
    rate_limit_redis_timeout_s: float = Field(default=0.1, gt=0, le=5)
    # A Redis of its own for the counters (its own `noeviction` policy, so cache pressure can
    # never evict a budget); unset: the counters share `redis.url` with the cache.
    rate_limit_redis_url: SecretStr | None = None
    # Redis unreachable: "scale" counts limit / (workers x replicas) per worker; "fail_closed"
    # refuses limited routes with 503 until Redis answers again.
    rate_limit_redis_down: Literal["scale", "fail_closed"] = "scale"
    # Replicas sharing one limit (for the "scale" share); set it to the Deployment's replica count.
    replicas: int = Field(default=1, ge=1, le=1000)
    # How many X-Forwarded-For hops (from the right) trusted proxies may have written.
    trusted_proxy_hops: int = Field(default=1, ge=1, le=10)
    # Slow clients: request line + headers must arrive within header_timeout_s of the first byte
    # (or of the connection); the body within body_timeout_s of the headers.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=10.0, gt=0)
    max_url_bytes: int = Field(default=8 * 1024, ge=256)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # Open connections + running requests per worker before new requests get a 503.
    max_connections: int = Field(default=1000, ge=1)
    # Serve /metrics only on this port (and nothing else there); None: on the main port, as in dev.
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    # Worker recycling/shutdown: idle keep-alive connections stay open this long so a request
    # already on the wire is answered (with `Connection: close`) rather than reset.
    drain_grace_s: float = Field(default=2.0, ge=0, le=30)
    # Upper bound of the result cache in bytes (keys + answers), per worker.
    result_cache_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)


class DatabaseSettings(BaseModel):
    """The savings ledger's database. No URL → SQLite in `data_dir` (the embedded default).

    PostgreSQL (driver extra `postgres`) when several replicas share one ledger:
    `CARBON_OPTIMIZER_DATABASE__URL=postgresql+asyncpg://user@host/db`.
    """

    enabled: bool = True
    url: SecretStr | None = None  # may embed a password: never logged
    # Where the embedded SQLite file lives; default: $XDG_DATA_HOME/carbon-optimizer (~/.local/share/…).
    data_dir: str | None = None
    # Apply pending migrations when a worker starts (serialised by a lock); turn off when a deploy
    # step runs `carbon-optimizer db upgrade` instead.
    migrate_on_start: bool = True
    pool_size: int = Field(default=5, ge=1, le=100)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    # How long /v1/optimize waits for its placement to be committed before answering
    # `queued: true` instead of `recorded: true`. 0 (default) = never wait: the answer says
    # queued and the row is committed in the background a few ms later. Waiting confirms the
    # commit but, under load, costs optimize throughput (docs/ledger.md, bench/bench_ledger.py).
    write_timeout_s: float = Field(default=0.0, ge=0, le=10)
    # Group commit: when no request waits for a commit, the writer lets placements gather this
    # long so that one transaction carries many (0 = write as soon as one is queued). A request
    # that waits (write_timeout_s > 0, POST /v1/placements) makes it write at once.
    commit_interval_s: float = Field(default=0.05, ge=0, le=5)
    # POST /v1/placements exists only to record: it waits this long for the commit (else 202).
    caller_write_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # Placements held in memory while the database is down or slow (oldest kept, newest refused).
    queue_max: int = Field(default=10_000, ge=1, le=1_000_000)
    retry_interval_s: float = Field(default=2.0, gt=0)


class LedgerSettings(BaseModel):
    """Savings ledger policy: who records by default, who sees everything, how reconciliation runs."""

    # Client ids (see `client_id` in the logs) whose optimize calls are recorded unless they send
    # `"record": false`; "*" = every client (comma-separated in env).
    record_clients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Client ids of API keys that may read every client's placements and reports.
    admin_client_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    reconcile_enabled: bool = True
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    # Wait this long after a window ends before reconciling (lets measured history settle).
    reconcile_delay_s: float = Field(default=3600.0, ge=0)
    reconcile_batch: int = Field(default=200, ge=1, le=10_000)
    reconcile_max_attempts: int = Field(default=8, ge=1, le=100)
    lease_ttl_s: float = Field(default=120.0, gt=0)

    @field_validator("record_clients", "admin_client_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        return _split_csv(value)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CarbonChainSettings(BaseModel):
    """Which live carbon sources answer which zones, in priority order (then the bundled data).

    `routes` maps a zone key to source names (`electricitymaps`, and any source added to
    `providers/carbon/stack.py`); `"*"` is every other zone. Empty: every configured source, in
    registration order, for every zone. Env: `CARBON_OPTIMIZER_CARBON_CHAIN__ROUTES='{"GB":
    ["gb_intensity", "electricitymaps"], "*": ["electricitymaps"]}'`.
    """

    routes: dict[str, list[str]] = Field(default_factory=dict)
    # Our forecaster (`forecast:profile-ar`, docs/forecasting.md) after the live sources: the hours
    # their forecasts do not reach. `forecast_offline`: also with no live source, before the bundled
    # replay (default chosen by bench/bench_offline_forecast.py).
    forecast: bool = True
    forecast_offline: bool = True
    # `forecast_live_history`: fit on the zone's measured history from a live source (Electricity
    # Maps with lifecycle factors: 9 weeks kept in the shared store, extended hourly) instead of
    # the bundled replay; only with such a source configured (providers/carbon/live_history.py).
    forecast_live_history: bool = True


class UpstreamBudgetSettings(BaseModel):
    """Bounds on the upstream calls one request and one client may cause (issue 11 item 6).

    A cold request over many zones, or one client sweeping past windows, must not burn the data
    sources' quota: attempts beyond a bound are answered from stale cache or bundled data with a
    warning. Per-client counts are shared through Redis when configured, per worker otherwise.
    Env: `CARBON_OPTIMIZER_UPSTREAM_BUDGET__MAX_CALLS_PER_REQUEST=40`, … (docs/edge.md).
    """

    enabled: bool = True
    max_calls_per_request: int = Field(default=40, ge=1, le=10_000)
    max_retries_per_request: int = Field(default=4, ge=0, le=1000)
    calls_per_client_per_minute: int = Field(default=120, ge=1, le=1_000_000)


class Settings(BaseSettings):
    """All configuration. Binding names: see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="CARBON_OPTIMIZER_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    environment: Literal["development", "production", "test"] = "development"
    electricitymaps: ElectricityMapsSettings = Field(default_factory=ElectricityMapsSettings)
    watttime: WattTimeSettings = Field(default_factory=WattTimeSettings)
    gb_intensity: GBIntensitySettings = Field(default_factory=GBIntensitySettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    carbon_chain: CarbonChainSettings = Field(default_factory=CarbonChainSettings)
    upstream_budget: UpstreamBudgetSettings = Field(default_factory=UpstreamBudgetSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)

    # Client API keys (comma-separated). Empty → no auth (warned at start-up).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Client ids (the 12-hex-char hashes of API keys in the logs, never keys) allowed to call
    # /v1/admin/* routes, e.g. clearing a zone's negative cache state.
    admin_client_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit: str = "600/minute"
    rate_limit_enabled: bool = True
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    docs_enabled: bool = True

    max_window_days: float = Field(default=7.0, gt=0, le=31)
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    # Identical optimisation requests within the same minute reuse the answer for this long (0 = off).
    result_cache_ttl_s: float = Field(default=15.0, ge=0, le=60)
    result_cache_entries: int = Field(default=256, ge=0, le=100_000)
    # PUE used for grid-zone (on-prem/colo) locations, where no cloud provider figure applies.
    onprem_pue: float = Field(default=1.56, ge=1.0, le=3.0)

    @field_validator("api_keys", "trusted_proxies", "cors_origins", "admin_client_ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _one_admin_list(self) -> Settings:
        # One list of admin client ids for every admin power (cache lever, ledger's see-all):
        # CARBON_OPTIMIZER_ADMIN_CLIENT_IDS and the ledger's own LEDGER__ADMIN_CLIENT_IDS are merged.
        merged = list(dict.fromkeys([*self.admin_client_ids, *self.ledger.admin_client_ids]))
        object.__setattr__(self, "admin_client_ids", merged)
        object.__setattr__(self.ledger, "admin_client_ids", merged)
        return self

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        # Checked here so a typo fails start-up, not the first request (limits' own parser).
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be limits syntax such as 600/minute or 10/second;1000/hour") from None
        return value


class ConfigurationError(ValueError):
    """An invalid setting; `str()` is one line naming the environment variable(s), without values."""


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a settings path: ("redis", "url") → CARBON_OPTIMIZER_REDIS__URL."""
    names = [str(part) for part in loc if isinstance(part, str)]
    return "CARBON_OPTIMIZER_" + "__".join(names).upper()


def load_settings() -> Settings:
    """`Settings()` from the environment and `.env`, or one `ConfigurationError` line saying what is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{env_name(tuple(error['loc']))}: {message}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
