"""The dev lock is complete, consistent with pyproject.toml, and is what this environment runs.

Why: open-ended dev ranges let a fresh machine resolve whatever was released that day (pytest 9.2
broke schemathesis 4.32 that way). `requirements/dev.lock.txt` pins one tested set; these tests fail if a
requirement of pyproject.toml is missing from the lock, pinned outside its specifier, or if the
running environment drifted from the lock (so the suite's verdict is about the locked set).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "dev.lock.txt"
SELF = "carbon-optimizer"


def _lock_pins() -> dict[str, tuple[Version, str]]:
    """name → (pinned version, marker text or '') for every `name==version` line of the lock."""
    pins: dict[str, tuple[Version, str]] = {}
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1, f"lock line is not an exact pin: {raw!r}"
        assert specs[0].operator == "==", f"lock line is not an exact pin: {raw!r}"
        pins[canonicalize_name(req.name)] = (Version(specs[0].version), str(req.marker or ""))
    return pins


def _project_requirements() -> list[Requirement]:
    """Runtime dependencies plus the dev extra, with the extras it pulls in (aws, server) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    out = [Requirement(r) for r in project["dependencies"]]
    pending, seen = ["dev"], set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in extras[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == SELF:
                pending.extend(req.extras)
            else:
                out.append(req)
    return out


def _applies(marker_text: str) -> bool:
    if not marker_text:
        return True
    return Marker(marker_text).evaluate()


def test_lock_pins_every_requirement_within_its_specifier() -> None:
    pins = _lock_pins()
    problems = []
    for req in _project_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not pinned in {LOCK.name}")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req}: the lock pins {pins[name][0]}, outside the specifier")
    assert not problems, "\n".join(problems)


def test_lock_is_only_exact_pins_and_names_its_refresh_command() -> None:
    text = LOCK.read_text(encoding="utf-8")
    assert "uv pip compile pyproject.toml --extra dev" in text  # how to refresh it (README says so too)
    assert len(_lock_pins()) >= len(_project_requirements())
    loose = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith(("#", " ")) and not re.match(r"^[A-Za-z0-9_.\-\[\]]+==", line)
    ]
    assert not loose, loose


def test_installed_versions_match_the_lock() -> None:
    drift = []
    for name, (version, marker) in sorted(_lock_pins().items()):
        if not _applies(marker):
            continue  # locked for another Python or platform only
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name}=={version} is locked but not installed")
            continue
        if installed != version:
            drift.append(f"{name}: installed {installed}, locked {version}")
    assert not drift, f"reinstall with `pip install -r requirements/{LOCK.name} -e .`:\n" + "\n".join(drift)
