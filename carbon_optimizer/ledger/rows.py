"""The optimize path's placement row: the answer's columns, shared, plus the request's own few.

Why not a dict per row: a result-cache hit repeats the answer, so 29 of a row's 37 columns are
the same for every request it answers. A dict per row copied them all (~2 µs in the running
server, where every step of the request path costs several times its tight-loop figure), and the
writer then converted all 37 values again per row (~4 µs per row on the event loop). Here the
shared columns live once in an `AnswerPart` (with their converted form per writer, made once),
and an `OptimizeRow` adds the eight values of its own request. It is a read-only `Mapping` with
the same keys, in the same order, as the dict it replaces (tests compare the two), so every
generic consumer (SQLAlchemy's path, tests, the recorder) reads it like any row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

# The columns of an optimize row, in table order (the answer part's keys, `Ledger._answer_values`;
# a test checks the order against `models.placements`).
OPTIMIZE_COLUMNS: Final = (
    "id",
    "client_id",
    "created_at",
    "request_id",
    "origin",
    "idempotency_key",
    "fingerprint",
    "workload",
    "signal",
    "location",
    "zone",
    "provider",
    "region",
    "instance_type",
    "start_at",
    "end_at",
    "energy_kwh",
    "intensity_g_per_kwh",
    "emissions_g",
    "cost_usd",
    "carbon_source",
    "price_source",
    "baseline_name",
    "baseline_location",
    "baseline_zone",
    "baseline_start_at",
    "baseline_end_at",
    "baseline_energy_kwh",
    "baseline_intensity_g_per_kwh",
    "baseline_emissions_g",
    "baseline_cost_usd",
    "baseline_carbon_source",
    "quality",
    "status",
    "due_at",
    "attempts",
)
# The request's own columns; every other one comes from the answer. `origin` (index 4) lies
# between them and is the answer part's.
OWN: Final = ("id", "client_id", "created_at", "request_id", "idempotency_key", "fingerprint", "workload")
_OWN: Final = frozenset(OWN)
SHARED_FROM: Final = 8  # the columns from index 8 on are all the answer part's
# Builds an answer part's values from (best, baseline, warnings, objective, explicit baseline).
BuildPart = Callable[[Any, Any, Any, Any, bool], dict[str, Any]]


class AnswerPart:
    """The columns one answer gives its rows (`values`: every column, own ones None).

    Built lazily (`later`): the request path only says how (`build`), and the writer builds it
    with the rest of its batch. Why: built on the request, between the engine's work and the
    response, the same dict cost the running server ~4× its tight-loop time (19 µs a unique
    answer, cold caches); built in the batch it runs warm. It holds nothing new past the
    request: what `build` reads (the answer's `best`, `baseline`, ... objects) the result cache
    and the ledger's answer-part memo hold anyway. `Recorder` builds it before the batch's
    INSERT (`ensure`), so a build that fails marks that row broken instead of failing the batch.

    Every object a queued row holds is one more allocation the garbage collector counts while
    the row waits for its commit (up to 0.2 s under load): a first lazy form (a `partial`, its
    argument tuple and a dict per part) made young collections 1.5× as frequent with every body
    unique (14 against 9 per 1 000 recorded requests, each 0.6–2 ms at c=16). So the inputs sit
    in this object's own slots and the stored form is kept for one writer (`tail`).
    """

    __slots__ = (
        "_baseline",
        "_best",
        "_build",
        "_explicit",
        "_objective",
        "_owner",
        "_tail",
        "_values",
        "_warnings",
        "workload",
    )

    def __init__(self, values: dict[str, Any]) -> None:
        # The workload JSON of the body behind this answer, once a row of it needed it: a
        # result-cache hit's part is kept per stored answer, and a stored answer comes from one
        # body (the cache's key), so every later hit's row takes it from here instead of
        # looking the workload up again (`Ledger._optimize_source`).
        self.workload: str | None = None
        self._values: dict[str, Any] | None = _checked(values)
        self._build: BuildPart | None = None
        self._best = self._baseline = self._warnings = self._objective = None
        self._explicit = False
        self._owner: object = None
        self._tail: tuple[Any, ...] = ()

    @classmethod
    def later(
        cls, build: BuildPart, best: Any, baseline: Any, warnings: Any, objective: Any, explicit: bool
    ) -> AnswerPart:
        """A part whose values `build(best, baseline, warnings, objective, explicit)` give on first use."""
        part = cls.__new__(cls)
        part._values, part._build, part._owner, part._tail = None, build, None, ()
        part.workload = None
        part._best, part._baseline, part._warnings = best, baseline, warnings
        part._objective, part._explicit = objective, explicit
        return part

    @property
    def values(self) -> dict[str, Any]:
        """Every column's value (built on first use)."""
        values = self._values
        if values is None:
            values = self.ensure()
        return values

    def ensure(self) -> dict[str, Any]:
        """Build the values now if they are not yet (raises what building raises)."""
        if self._values is None:
            build = self._build
            assert build is not None  # one of the two is always set
            self._values = _checked(
                build(self._best, self._baseline, self._warnings, self._objective, self._explicit)
            )
            self._build = self._best = self._baseline = self._warnings = self._objective = None
        return self._values

    def tail(self, owner: object, convert: Callable[[dict[str, Any]], tuple[Any, ...]]) -> tuple[Any, ...]:
        """The stored form of the columns from `SHARED_FROM` on (`convert(values)`) for `owner`.

        Kept for the last owner asking (a writer's column converters: there is one per process).
        """
        if self._owner is not owner:
            self._tail, self._owner = convert(self.values), owner
        return self._tail


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    if tuple(values) != OPTIMIZE_COLUMNS:
        raise ValueError("an answer part has exactly the optimize row's columns, in table order")
    return values


class OptimizeRow(Mapping[str, Any]):
    """One optimize placement row: its answer's `AnswerPart` plus its own request's values."""

    __slots__ = (
        "client_id",
        "created_at",
        "fingerprint",
        "id",
        "idempotency_key",
        "part",
        "request_id",
        "workload",
    )

    def __init__(
        self,
        part: AnswerPart,
        placement_id: str,
        client_id: str,
        created_at: Any,
        request_id: str | None,
        idempotency_key: str | None,
        fingerprint: str | None = None,
        workload: str | None = None,
    ) -> None:
        self.part = part
        self.id = placement_id
        self.client_id = client_id
        self.created_at = created_at
        self.request_id = request_id
        self.idempotency_key = idempotency_key
        self.fingerprint = fingerprint
        self.workload = workload

    def __getitem__(self, key: str) -> Any:
        if key in _OWN:
            return getattr(self, key)
        return self.part.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        """As `dict.get` (written out: the recorder reads the fingerprint of every row)."""
        if key in _OWN:
            return getattr(self, key)
        return self.part.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(OPTIMIZE_COLUMNS)

    def __len__(self) -> int:
        return len(OPTIMIZE_COLUMNS)

    def __repr__(self) -> str:
        return f"OptimizeRow({dict(self)!r})"
