"""Structured JSON logging and the access log.

Why this module exists: a platform team greps and aggregates logs by field (request id, status,
client), so every line is one JSON object on stdout — the only log sink a container needs. The
access log is written by the app's edge layer (api/edge.py) rather than by gunicorn/uvicorn because
only the app knows the request id and the caller's client id (a short hash, never the API key itself).

Secrets never reach a log line: `configure_logging` registers every secret value found in the
settings with the formatter, which masks them in the final text whatever the code above logged
(a defence in depth; nothing should log them in the first place).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, SecretStr
from starlette.types import Scope

from carbon_optimizer.settings import Settings

ACCESS_LOGGER_NAME: Final = "carbon_optimizer.access"
# Key under scope["state"] where the auth/rate-limit layer records the caller's non-secret id.
CLIENT_ID_STATE_KEY: Final = "client_id"
_MASK: Final = "***"
# Attributes every LogRecord has; anything else passed via `extra=` becomes a JSON field.
_RESERVED: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, pid, plus any `extra=` fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single JSON line with secrets masked."""
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        text = json.dumps(payload, default=str, ensure_ascii=False)
        return self.mask(text)

    def mask(self, text: str) -> str:
        """Replace every registered secret value in `text`."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return text


class _PlainMaskingFormatter(logging.Formatter):
    """Human-readable lines for local development, still with secrets masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        self._json = JsonFormatter(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._json.mask(super().format(record))


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value in the settings (API keys, tokens, the Redis URL and its password)."""
    found: list[str] = []

    def walk(obj: object) -> None:
        if isinstance(obj, SecretStr):
            found.append(obj.get_secret_value())
        elif isinstance(obj, list | tuple):
            for item in obj:
                walk(item)
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))

    walk(settings)
    if settings.redis.url is not None:
        # A password embedded in the URL may be logged on its own by a client library.
        from urllib.parse import urlsplit

        password = urlsplit(settings.redis.url.get_secret_value()).password
        if password:
            found.append(password)
    # Very short values would mask innocent text (e.g. "1"); real secrets are long.
    return [s for s in found if len(s) >= 4]


def configure_logging(settings: Settings) -> None:
    """Route the root, uvicorn and gunicorn loggers to one stdout handler (JSON unless disabled)."""
    secrets = settings_secrets(settings)
    formatter: logging.Formatter = (
        JsonFormatter(secrets) if settings.server.json_logs else _PlainMaskingFormatter(secrets)
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    level = settings.server.log_level.upper()

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

    # Library loggers that install their own handlers: send them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        lib = logging.getLogger(name)
        lib.handlers = [handler]
        lib.propagate = False
        lib.setLevel(level)
    # The access log is ours (AccessLog, written by the edge); uvicorn's would duplicate it without ids.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers = []
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
    access = logging.getLogger(ACCESS_LOGGER_NAME)
    access.setLevel(logging.INFO)
    # slowapi attaches a no-op handler and logs storage failures; keep them, through ours.
    logging.getLogger("slowapi").setLevel(logging.WARNING)


def _state_value(scope: Scope, key: str) -> str | None:
    state = scope.get("state")
    # `dict` first: the edge always puts one there, and the ABC check alone costs ~6x more.
    if isinstance(state, (dict, MutableMapping)):
        value = state.get(key)
        return value if isinstance(value, str) else None
    return None


def client_id_from_scope(scope: Scope) -> str | None:
    """The non-secret client id recorded by the auth/rate-limit layer, if any."""
    return _state_value(scope, CLIENT_ID_STATE_KEY)


class AccessLog:
    """The access log: one JSON line per HTTP request after its response finished (written by the edge).

    The edge (api/edge.py) is the outermost layer of the app, so the latency covers every check
    and the request id is the one the response carries. Probes are logged only when they fail.
    """

    def __init__(self, *, skip_paths: Iterable[str] = ()) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER_NAME)
        # Probes hit every few seconds per pod; logging them drowns real traffic.
        self.skip_paths = frozenset(skip_paths)

    def wanted(self, path: str, status: int) -> bool:
        """True when this request gets a line (not a probe, or a probe that failed)."""
        return path not in self.skip_paths or status >= 400

    def write(
        self,
        scope: Scope,
        *,
        method: str,
        status: int,
        request_id: str,
        latency_s: float,
        response_bytes: int,
    ) -> None:
        """Log one finished request (the query string never: it may carry anything)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        path: str = scope.get("path", "")
        client = scope.get("client")
        self.logger.info(
            "%s %s %d",
            method,
            path,
            status,
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "latency_ms": round(latency_s * 1000.0, 3),
                "client_id": client_id_from_scope(scope),
                "peer": client[0] if client else None,
                "response_bytes": response_bytes,
                "http_version": scope.get("http_version"),
            },
        )
