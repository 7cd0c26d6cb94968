"""API-key authentication, security headers, CORS and the docs switch, called by the edge (api/edge.py).

Why it looks like this:
- Keys come from `CARBON_OPTIMIZER_API_KEYS` and are kept only as SHA-256 digests in memory; a
  presented key is hashed and compared with `hmac.compare_digest` against *every* stored digest
  (no early exit), so neither the comparison nor the number of keys leaks through timing.
- Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`. A missing or wrong key is a
  401 problem+json with `WWW-Authenticate: Bearer` (RFC 6750); the body never echoes the key.
- Exempt from auth: `/healthz`, `/readyz` (kubelet probes carry no credentials) and `/metrics`
  (scraped by Prometheus inside the cluster; the NetworkPolicy restricts who can reach it), plus
  `/docs`, `/redoc` and `/openapi.json` while docs are enabled — they describe the API and hold
  no data; production turns them off with `CARBON_OPTIMIZER_DOCS_ENABLED=false`.
- Logs and rate limits need to tell callers apart without the key: `client_id` is a short,
  domain-separated SHA-256 prefix of the key, stable across workers, replicas and restarts.
- No middleware of its own: `EdgeMiddleware` (api/edge.py) runs these checks inside its one
  pure-ASGI layer (issue 12: one `send` wrapper for the whole edge, see docs/edge.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

from fastapi import FastAPI
from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Scope, Send

from carbon_optimizer.api.docs import docs_paths
from carbon_optimizer.logging_config import CLIENT_ID_STATE_KEY
from carbon_optimizer.settings import Settings

logger = logging.getLogger(__name__)

AUTH_FAILURES = Counter(
    "carbon_optimizer_auth_failures_total",
    "Requests rejected with 401, by reason (missing, invalid)",
    ["reason"],
)

PROBE_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_CLIENT_ID_DOMAIN: Final = b"carbon-optimizer/client-id/v1:"
_RESOLVED_KEY: Final = "_auth_resolved"
# Minimum length we consider a reasonable key; shorter ones work but are warned about at start.
_WEAK_KEY_CHARS: Final = 20


def client_id_for(key: str) -> str:
    """Stable, non-secret id for an API key: 12 hex chars of a domain-separated SHA-256."""
    return hashlib.sha256(_CLIENT_ID_DOMAIN + key.encode("utf-8")).hexdigest()[:12]


def _presented_key(scope: Scope) -> str | None:
    """The key the caller sent (Bearer token or X-API-Key), or None."""
    bearer: str | None = None
    api_key: str | None = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key":
            text = value.decode("latin-1").strip()
            if text:
                api_key = text
    return bearer if bearer is not None else api_key


class ApiKeyStore:
    """The configured keys as SHA-256 digests, with constant-time lookup."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._entries: list[tuple[bytes, str]] = []
        for key in keys:
            if not key:
                continue
            digest = hashlib.sha256(key.encode("utf-8")).digest()
            self._entries.append((digest, client_id_for(key)))
            if len(key) < _WEAK_KEY_CHARS:
                logger.warning(
                    "API key %s is shorter than %d characters; use e.g. secrets.token_urlsafe(32)",
                    client_id_for(key),
                    _WEAK_KEY_CHARS,
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyStore:
        """Build from `settings.api_keys` (the only place the plaintext keys are read)."""
        return cls(k.get_secret_value() for k in settings.api_keys)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured (otherwise the API is open)."""
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, presented: str) -> str | None:
        """Client id of the matching key, or None. Compares against every key, always."""
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        match: str | None = None
        for stored, client_id in self._entries:
            # Non-short-circuiting: every digest is compared whatever matched before.
            if hmac.compare_digest(stored, digest):
                match = client_id
        return match

    def resolve(self, scope: Scope) -> tuple[str | None, bool]:
        """(client id or None, whether a key was presented), memoised in the request scope.

        The rate limiter (outer) and the auth check (inner) both need this; hashing once is enough.
        """
        # Memoised on the scope itself (one dict per request on every server), not in `state`,
        # which some servers and test harnesses share between requests.
        cached = scope.get(_RESOLVED_KEY)
        if isinstance(cached, tuple):
            return cached[0], cached[1]
        presented = _presented_key(scope)
        client_id = self.lookup(presented) if presented is not None and self._entries else None
        scope[_RESOLVED_KEY] = (client_id, presented is not None)
        _state(scope)[CLIENT_ID_STATE_KEY] = client_id  # for the access log and handlers
        return client_id, presented is not None


def _state(scope: Scope) -> MutableMapping[str, object]:
    state = scope.get("state")
    if not isinstance(state, (dict, MutableMapping)):  # dict first: the cheap check
        state = {}
        scope["state"] = state
    return state


def problem_body(status: int, title: str, detail: str) -> bytes:
    """RFC 9457 problem details as bytes (kept local so this layer has no app dependencies)."""
    return json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()


async def send_problem(
    send: Send, status: int, title: str, detail: str, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete problem+json response on a raw ASGI channel."""
    body = problem_body(status, title, detail)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyGate:
    """The API-key check the edge runs: 401 problem+json without a valid key, except exempt paths.

    CORS preflights never get here when origins are configured: the CORS layer (inside the edge,
    outside this check) answers them, because a preflight carries no credentials.
    """

    def __init__(self, store: ApiKeyStore, *, exempt_paths: Iterable[str] = PROBE_PATHS) -> None:
        self.store = store
        self.exempt_paths = frozenset(exempt_paths)
        self._enabled = store.enabled  # the store's keys are fixed once it is built

    def applies(self, path: str) -> bool:
        """True when requests to `path` need a key (keys are configured and the path is not exempt)."""
        return self._enabled and path not in self.exempt_paths

    async def refused(self, scope: Scope, send: Send) -> bool:
        """Send the 401 and return True when the request has no valid key; else False (admitted)."""
        client_id, presented = self.store.resolve(scope)
        if client_id is not None:
            return False
        AUTH_FAILURES.labels(reason="invalid" if presented else "missing").inc()
        if presented:
            challenge = b'Bearer realm="carbon-optimizer", error="invalid_token"'
            detail = "The API key is not valid."
        else:
            challenge = b'Bearer realm="carbon-optimizer"'
            detail = "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
        headers = [(b"www-authenticate", challenge)]
        if scope["method"] in ("POST", "PUT", "PATCH"):
            # The body was never read (and never will be): close instead of keeping a slow,
            # unauthenticated client's half-sent body on the connection.
            headers.append((b"connection", b"close"))
        await send_problem(send, 401, "Unauthorized", detail, headers)
        return True


# Headers for JSON API responses. The docs pages load their scripts and styles from this origin
# (api/docs.py) plus one inline bootstrap script, so they get a CSP that allows exactly that instead
# of `default-src 'none'` — and no third-party host.
_API_CSP: Final = b"default-src 'none'; frame-ancestors 'none'"
_DOCS_CSP: Final = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Conservative security headers for every HTTP response that lacks them (added by the edge)."""

    def __init__(self, *, hsts: bool, docs_paths: Iterable[str] = ()) -> None:
        self.docs_paths = frozenset(p for p in docs_paths if p)
        base: list[tuple[str, str]] = [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
            ("permissions-policy", "()"),
        ]
        if hsts:
            # Only meaningful behind TLS (the Ingress terminates it); harmless otherwise.
            base.append(("strict-transport-security", "max-age=31536000; includeSubDomains"))
        self.base = base
        self.raw_base = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in base]

    def csp_for(self, path: str) -> bytes:
        """The Content-Security-Policy for a response to `path` (the docs pages need their own)."""
        return _DOCS_CSP if path in self.docs_paths else _API_CSP

    def add(self, raw: list[tuple[bytes, bytes]], present: set[bytes], csp: bytes) -> None:
        """Append to `raw` (raw header tuples) each header whose lower-cased name is not `present`."""
        raw.extend(item for item in self.raw_base if item[0] not in present)
        if b"content-security-policy" not in present:
            raw.append((b"content-security-policy", csp))


_PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}
_HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "options", "head", "trace"})


def problem_response_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI response object for a problem+json error (uses `ProblemOut` when the app has it)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ProblemOut" in components:
        ref = "#/components/schemas/ProblemOut"
    else:
        components.setdefault("Problem", _PROBLEM_SCHEMA)
        ref = "#/components/schemas/Problem"
    return {"description": description, "content": {"application/problem+json": {"schema": {"$ref": ref}}}}


def extend_openapi(app: FastAPI, edit: Callable[[dict[str, Any]], None]) -> None:
    """Post-process the generated OpenAPI document once (wraps `app.openapi`, keeps its caching)."""
    previous = app.openapi
    edited: list[int] = []  # ids of schema dicts already edited (FastAPI caches one per app)

    def openapi() -> dict[str, Any]:
        schema = previous()
        if id(schema) not in edited:
            edit(schema)
            edited.append(id(schema))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def operations(schema: dict[str, Any], exempt_paths: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Every operation object whose path is not exempt."""
    exempt = set(exempt_paths)
    for path, item in schema.get("paths", {}).items():
        if path in exempt:
            continue
        for method, operation in item.items():
            if method in _HTTP_METHODS and isinstance(operation, dict):
                yield operation


def _document_auth(schema: dict[str, Any], exempt_paths: Iterable[str]) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerAuth"] = {"type": "http", "scheme": "bearer", "description": "API key as a bearer token"}
    schemes["apiKeyHeader"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    exempt = set(exempt_paths)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            if path in exempt:
                operation["security"] = []  # probes and metrics: no key needed
                continue
            operation["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
            operation.setdefault("responses", {})["401"] = problem_response_doc(
                schema, "Missing or invalid API key (`WWW-Authenticate: Bearer`)"
            )


def _docs_paths(app: FastAPI) -> list[str]:
    return list(docs_paths()) if app.openapi_url else []


def _disable_docs(app: FastAPI) -> None:
    """Remove /docs, /redoc and /openapi.json routes that FastAPI added at construction."""
    builtin = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    paths = set(docs_paths()) | {p for p in builtin if p}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in paths]
    app.openapi_url = None
    app.docs_url = None
    app.redoc_url = None
    app.swagger_ui_oauth2_redirect_url = None


def configure_docs(app: FastAPI, settings: Settings) -> frozenset[str]:
    """Drop the docs routes when disabled; return the docs paths still served (exempt from auth).

    In production the docs are closed unless `CARBON_OPTIMIZER_DOCS_ENABLED=true` says otherwise
    explicitly: a forgotten setting must not publish the API's schema.
    """
    production_default = (
        settings.environment == "production" and "docs_enabled" not in settings.model_fields_set
    )
    if not settings.docs_enabled or production_default:
        _disable_docs(app)
    return frozenset(_docs_paths(app))


def cors_layer(settings: Settings, app: ASGIApp) -> ASGIApp | None:
    """The CORS layer for the configured allow-list around `app`, or None when the list is empty.

    The edge calls it between its outer part (ids, logs, metrics, headers) and its checks (rate
    limit, key): preflights (no credentials) are answered here, and 401/429 carry CORS headers.
    """
    if not settings.cors_origins:
        return None
    return ProblemCORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"],
        allow_credentials=False,  # keys travel in headers, never cookies
        max_age=600,
    )


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, except that a refused preflight is a 400 problem+json, not plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """Starlette's preflight answer, re-shaped as problem+json when it refuses."""
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        detail = bytes(response.body).decode("utf-8", "replace")
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        headers["cache-control"] = "no-store"
        return Response(
            problem_body(400, "Bad Request", f"CORS preflight refused: {detail}"),
            status_code=400,
            headers=headers,
            media_type="application/problem+json",
        )


def document_security(app: FastAPI, store: ApiKeyStore, exempt_paths: Iterable[str]) -> None:
    """Describe auth in the OpenAPI document and log what the key configuration means."""
    exempt = frozenset(exempt_paths)
    if store.enabled:
        extend_openapi(app, lambda schema: _document_auth(schema, exempt))
        logger.info("API-key auth enabled for %d key(s)", len(store))
    else:
        logger.warning("No API keys configured (CARBON_OPTIMIZER_API_KEYS): the API is open to anyone")
