"""The one status vocabulary of /health, shared by every component reporter and the route.

Why an enum: each reporter used to pick its own words ("healthy", "ok", "embedded"), and the route
accepted only some of them, so a healthy live deployment (key set, no Redis: the carbon cache said
"healthy") was reported as degraded. A reporter now returns a `ComponentStatus`; `overall` is the
only rule that turns component statuses into the top-level one. `StrEnum` values serialise as
their plain strings, so the JSON stays `"status": "ok"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class ComponentStatus(StrEnum):
    """Status of one component (and of the service as a whole: OK or DEGRADED)."""

    OK = "ok"  # working as configured
    EMBEDDED = "embedded"  # in-process stand-in by design (no Redis, bundled data): nothing is wrong
    DISABLED = "disabled"  # switched off by configuration
    DEGRADED = "degraded"  # answering, but from a fallback (Redis down, circuit open, ...)
    UNKNOWN = "unknown"  # the reporter failed or said something outside this vocabulary

    @classmethod
    def parse(cls, value: object) -> ComponentStatus:
        """A reporter's status, or UNKNOWN for anything outside the vocabulary (a bug to see)."""
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        return cls.UNKNOWN


HEALTHY = frozenset({ComponentStatus.OK, ComponentStatus.EMBEDDED, ComponentStatus.DISABLED})


def overall(statuses: Iterable[ComponentStatus]) -> ComponentStatus:
    """OK when every component is OK, EMBEDDED or DISABLED; else DEGRADED."""
    return ComponentStatus.OK if all(s in HEALTHY for s in statuses) else ComponentStatus.DEGRADED
