"""The domain package stays pure: stdlib (minus I/O and concurrency modules) + numpy + itself.

Walks every module under carbon_optimizer/domain with `ast` (nothing is imported or executed), so
a forbidden import fails here even if it sits in an unexecuted branch or under TYPE_CHECKING.
Also rejects reading the clock (`datetime.now()`, `time.time()`, ...): time is an argument.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import carbon_optimizer.domain

DOMAIN_DIR = Path(carbon_optimizer.domain.__file__).parent
PACKAGE = "carbon_optimizer.domain"

ALLOWED_THIRD_PARTY = frozenset({"numpy"})
ALLOWED_PROJECT = ("carbon_optimizer.domain", "carbon_optimizer.errors")
# Standard-library modules that do I/O, read the environment, or run event loops and processes.
# (threading is allowed: a lock around a pure in-memory memo does no I/O.)
FORBIDDEN_STDLIB = frozenset(
    {
        "asyncio",
        "concurrent",
        "http",
        "multiprocessing",
        "os",
        "select",
        "selectors",
        "shutil",
        "socket",
        "ssl",
        "subprocess",
        "urllib",
    }
)
CLOCK_CALLS = frozenset({"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter"})
CLOCK_OWNERS = frozenset({"datetime", "date", "time"})


def domain_modules() -> list[Path]:
    return sorted(DOMAIN_DIR.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(DOMAIN_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def imported_modules(tree: ast.AST, current: str, is_package: bool) -> list[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                package = current if is_package else current.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            if node.module is None:
                names.extend(f"{base}.{alias.name}" for alias in node.names)
            else:
                names.append(base)
    return names


def violations(source: str, current: str, is_package: bool = False) -> list[str]:
    """Forbidden imports and clock reads in one module's source."""
    tree = ast.parse(source)
    found: list[str] = []
    for name in imported_modules(tree, current, is_package):
        top = name.split(".")[0]
        if name.startswith(ALLOWED_PROJECT) or top in ALLOWED_THIRD_PARTY:
            continue
        if top in sys.stdlib_module_names and top not in FORBIDDEN_STDLIB:
            continue
        found.append(f"import {name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
            and isinstance(node.func.value, ast.Name | ast.Attribute)
        ):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else node.func.value.attr
            if owner in CLOCK_OWNERS:
                found.append(f"clock read {owner}.{node.func.attr}() at line {node.lineno}")
    return found


def test_there_are_domain_modules_to_check() -> None:
    names = {module_name(p) for p in domain_modules()}
    assert {"carbon_optimizer.domain.series", "carbon_optimizer.domain.scoring"} <= names


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: p.name)
def test_domain_module_is_pure(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert violations(source, module_name(path), path.name == "__init__.py") == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import fastapi", "import fastapi"),
        ("from starlette.requests import Request", "import starlette.requests"),
        ("import httpx", "import httpx"),
        ("from redis import asyncio as aioredis", "import redis"),
        ("import pydantic_settings", "import pydantic_settings"),
        ("import asyncio", "import asyncio"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import httpx", "import httpx"),
        ("from ..providers import base", "import carbon_optimizer.providers"),
        ("from .. import settings", "import carbon_optimizer.settings"),
        ("from datetime import datetime\nx = datetime.now()", "clock read datetime.now() at line 2"),
        ("import time\nx = time.time()", "clock read time.time() at line 2"),
        ("import datetime\nx = datetime.date.today()", "clock read date.today() at line 2"),
    ],
)
def test_checker_catches_violations(source: str, expected: str) -> None:
    assert violations(source, "carbon_optimizer.domain.example") == [expected]


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nimport numpy.typing as npt",
        "from datetime import UTC, datetime, timedelta\nimport math\nfrom dataclasses import dataclass",
        "from carbon_optimizer.domain.models import Objective",
        "from carbon_optimizer.errors import NothingFeasible",
        "from . import models\nfrom .series import IntensityGrid\nfrom .. import errors",
        "x = datetime(2026, 1, 1).replace(hour=1)",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert violations(source, "carbon_optimizer.domain.example") == []


# ----- the architecture of the whole package (same ast walk, nothing imported or executed) -----

PACKAGE_DIR = DOMAIN_DIR.parent
# The only modules that may import a Redis client or the rate-limit library.
# (settings parses rate-limit strings with limits' own parser at start-up; it opens no client.)
REDIS_MODULES = frozenset(
    {"carbon_optimizer.providers.store", "carbon_optimizer.api.ratelimit", "carbon_optimizer.settings"}
)
# The only modules that may catch httpx errors: the upstream seam, and the callers of this service
# (the CLI's `--server` mode, the typed client, `compare-deployment --server`).
HTTPX_CATCHERS = frozenset(
    {
        "carbon_optimizer.providers.upstream",
        "carbon_optimizer.cli",
        "carbon_optimizer.client",
        "carbon_optimizer.commands.compare_deployment",
        "carbon_optimizer.commands.report",  # `report --server`: a CLI client of the API, like cli.py
    }
)
# What of a half (providers/carbon, providers/prices) the rest of the package may import.
HALVES = ("carbon_optimizer.providers.carbon", "carbon_optimizer.providers.prices")
HALF_SURFACE = frozenset({"", "base", "stack", "offline", "bundled"})


def package_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def package_module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _parsed(path: Path) -> tuple[str, ast.AST, list[str]]:
    name = package_module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return name, tree, imported_modules(tree, name, path.name == "__init__.py")


def redis_importers() -> set[str]:
    found = set()
    for path in package_modules():
        name, _, imports = _parsed(path)
        if any(i.split(".")[0] in ("redis", "limits") for i in imports):
            found.add(name)
    return found


def _mentions_httpx(node: ast.expr | None) -> bool:
    return node is not None and any(isinstance(n, ast.Name) and n.id == "httpx" for n in ast.walk(node))


def httpx_catchers(tree: ast.AST) -> list[int]:
    """Lines of `except` clauses naming an httpx exception."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler) and _mentions_httpx(node.type)
    ]


def half_internals_imported_from_outside() -> list[str]:
    found = []
    for path in package_modules():
        name, _, imports = _parsed(path)
        if name.startswith("carbon_optimizer.providers"):
            continue
        for imported in imports:
            for half in HALVES:
                if imported == half or imported.startswith(half + "."):
                    rest = imported[len(half) :].lstrip(".")
                    if rest.split(".")[0] not in HALF_SURFACE:
                        found.append(f"{name} imports {imported}")
    return found


def test_only_the_store_and_the_rate_limiter_import_redis_or_limits() -> None:
    assert redis_importers() <= REDIS_MODULES
    assert "carbon_optimizer.providers.store" in redis_importers()


def test_only_the_upstream_seam_and_the_cli_catch_httpx_errors() -> None:
    catchers = {name for name, tree, _ in (_parsed(p) for p in package_modules()) if httpx_catchers(tree)}
    assert catchers <= HTTPX_CATCHERS
    assert "carbon_optimizer.providers.upstream" in catchers


def test_nothing_outside_providers_imports_a_halfs_internals() -> None:
    assert half_internals_imported_from_outside() == []


def test_the_package_has_no_import_cycle_through_the_data_wing() -> None:
    graph: dict[str, set[str]] = {}
    names = {package_module_name(p) for p in package_modules()}
    for path in package_modules():
        name, _, imports = _parsed(path)
        edges = set()
        for imported in imports:
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    wing = {n for n in graph if n.startswith("carbon_optimizer.providers")}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    # A package importing its own submodules (an `__init__` re-export) is not a cycle.
    cyclic = sorted(n for n in wing if any(reaches(m, n) for m in graph[n] if not m.startswith(n + ".")))
    assert cyclic == []


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("try:\n    pass\nexcept httpx.HTTPError:\n    pass", [3]),
        ("try:\n    pass\nexcept (ValueError, httpx.TimeoutException):\n    pass", [3]),
        ("try:\n    pass\nexcept ValueError:\n    pass", []),
    ],
)
def test_the_httpx_checker_sees_except_clauses(source: str, caught: list[int]) -> None:
    assert httpx_catchers(ast.parse(source)) == caught
