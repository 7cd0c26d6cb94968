"""The repository stands alone: its documents exist, cover the API, and nothing cites outside them.

Before, the README called an external contract file "binding" and docstrings cited notes that are
not in the repository. Now docs/ holds the project's own reference, and these tests keep it so:
no file cites the old outside documents, every cited docs/ file and section exists, the API
reference names every request and response field, and the README lists every top-level module.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from carbon_optimizer.api import schemas

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".ini", ".sh", ".json", ""}
# Documents that live outside the repository (spelled in pieces so this file does not match itself).
OUTSIDE = [
    "api-" + "contract",
    "research-" + "notes",
    "../" + "shared",
    "shared" + "/data",
    "shared " + "docs",
]


def repo_text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or SKIP_DIRS & set(path.relative_to(ROOT).parts):
            continue
        if path.name.endswith(".egg-info") or any(p.endswith(".egg-info") for p in path.parts):
            continue
        if path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
            files.append(path)
    return files


def test_nothing_cites_documents_outside_the_repository() -> None:
    hits = []
    for path in repo_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for needle in OUTSIDE:
            if needle in text:
                hits.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not hits, hits


def test_cited_docs_and_sections_exist() -> None:
    missing = []
    headings = {
        doc.name: {m.group(1) for m in re.finditer(r"^#+ (\d+(?:\.\d+)*)\.? ", doc.read_text(), re.M)}
        for doc in (ROOT / "docs").glob("*.md")
    }
    for path in repo_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"docs/([a-z0-9_-]+\.md)(?:,? §(\d+(?:\.\d+)*))?", text):
            name, section = match.group(1), match.group(2)
            if name not in headings:
                missing.append(f"{path.relative_to(ROOT)} cites docs/{name}")
            elif section and section not in headings[name]:
                missing.append(f"{path.relative_to(ROOT)} cites docs/{name} §{section}")
    assert not missing, missing


@pytest.mark.parametrize("name", ["api.md", "architecture.md", "data-sources.md"])
def test_the_three_documents_exist_and_are_linked_from_the_readme(name: str) -> None:
    assert (ROOT / "docs" / name).stat().st_size > 2000
    assert f"docs/{name}" in (ROOT / "README.md").read_text()


def _fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen or set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in _models_in(field.annotation):
            names |= _fields(arg, seen)
    return names


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


@pytest.mark.parametrize(
    "model",
    [schemas.OptimizeRequest, schemas.EstimateRequest, schemas.OptimizeResponse],
    ids=lambda m: m.__name__,
)
def test_api_reference_names_every_field(model: type[BaseModel]) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    undocumented = sorted(
        name for name in _fields(model) if f"`{name}`" not in text and f'"{name}"' not in text
    )
    assert not undocumented, f"docs/api.md does not mention {undocumented}"


def test_api_reference_covers_modes_and_tie_rule() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for mode in ("carbon", "cost", "balanced", "carbon_within_budget", "monetized"):
        assert f"`{mode}`" in text
    assert "earlier start, then by the order of `locations`" in text
    for status in ("401", "413", "415", "422", "429", "503"):
        assert f"| {status} |" in text


def test_readme_design_lists_every_top_level_module() -> None:
    readme = (ROOT / "README.md").read_text()
    design = readme[readme.index("\n## Design\n") :]
    design = design[: design.index("```", design.index("```") + 3)]
    package = ROOT / "carbon_optimizer"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"{p.name}/" for p in package.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    missing = sorted(m for m in modules if m not in design)
    assert not missing, f"README design section lacks {missing}"
