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
