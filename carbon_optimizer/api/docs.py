"""Interactive API docs served from the package, so `/docs` works on a machine with no internet.

FastAPI's default `/docs` page loads Swagger UI from a CDN: offline (air-gapped clusters, CI runners
behind a proxy, a laptop on a train) it is a blank page. This follows FastAPI's documented recipe
for self-hosted docs assets (`get_swagger_ui_html` with local `swagger_js_url`/`swagger_css_url`)
and takes the assets from `fastapi-offline`, a small kept package (≈0.8 MB of static files) that
bundles a current Swagger UI 5 — which renders OpenAPI 3.1, unlike the older bundles on PyPI.
Only its static folder is used; its app wrapper is not.

The asset paths are exact (not a prefix) so the API-key middleware and the security-headers CSP
can treat docs paths as a closed set, as they do for `/openapi.json`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.routing import APIRoute
from starlette.responses import FileResponse, HTMLResponse, Response

DOCS_URL: Final = "/docs"
OPENAPI_URL: Final = "/openapi.json"
OAUTH2_REDIRECT_URL: Final = "/docs/oauth2-redirect"
_ASSET_PREFIX: Final = "/docs/assets/"
_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_PATHS: Final = tuple(_ASSET_PREFIX + name for name in _ASSETS)
# Swagger UI options: "Try it out" open by default (the examples answer 200 as they stand), the
# request duration shown, models collapsed so the operations are what a reader sees first.
SWAGGER_UI_PARAMETERS: Final = {
    "tryItOutEnabled": True,
    "displayRequestDuration": True,
    "defaultModelsExpandDepth": 0,
    "docExpansion": "list",
    "persistAuthorization": True,
}


def docs_paths() -> tuple[str, ...]:
    """Every path the docs pages use (for auth exemption and their CSP)."""
    return (OPENAPI_URL, DOCS_URL, OAUTH2_REDIRECT_URL, *ASSET_PATHS)


def _asset_dir() -> str:
    return str(files("fastapi_offline").joinpath("static"))


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, its OAuth2 redirect and its three assets, all served from the package."""
    asset_dir = _asset_dir()
    title = f"{app.title} — API docs"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=title,
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{_ASSET_PREFIX}swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSET_PREFIX}swagger-ui.css",
            swagger_favicon_url=f"{root}{_ASSET_PREFIX}favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route(DOCS_URL, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_URL, oauth2_redirect, methods=["GET"], include_in_schema=False)
    for name, media_type in _ASSETS.items():
        app.add_api_route(
            _ASSET_PREFIX + name, _asset_endpoint(f"{asset_dir}/{name}", media_type), include_in_schema=False
        )


def _asset_endpoint(path: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    """A parameterless endpoint for one fixed file (a closure: nothing in the request picks the file)."""

    async def asset() -> Response:
        # Immutable per release: the browser may keep them for a day.
        return FileResponse(path, media_type=media_type, headers={"cache-control": "public, max-age=86400"})

    return asset


def operation_id(route: APIRoute) -> str:
    """Stable, readable operationIds for generated clients: the endpoint's own name.

    FastAPI's default (`name_path_method`, e.g. `optimize_v1_optimize_post`) changes whenever a path
    does. An explicit `operation_id=` on a route still wins.
    """
    return route.name


_DATA_PREFIXES: Final = ("/v1/", "/optimize")


def document_edge_responses(schema: dict[str, Any]) -> None:
    """Document the answers the edge gives before a route runs, which FastAPI cannot see.

    413 (body over the size cap) and 415 (not JSON) for every operation with a body; 503 (no data
    source can answer) for the data routes. 401 and 429 are added by the auth and rate-limit
    installers, only when they are on. Runs before `use_problem_media_type`, which gives every
    4xx/5xx the problem+json content.
    """
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if method in ("post", "put", "patch") and "requestBody" in operation:
                responses.setdefault("413", {"description": "Body larger than the configured cap"})
                responses.setdefault("415", {"description": "Content-Type is not application/json"})
            if path.startswith(_DATA_PREFIXES):
                responses.setdefault("503", {"description": "No data source can answer (rare: bundled data)"})
