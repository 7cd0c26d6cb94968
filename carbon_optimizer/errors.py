"""Domain exception tree.

No HTTP in here: `api/errors.py` holds the single table that maps these to status codes and
problem details. Providers translate their wire/transport errors into these at their boundary
(`raise ProviderUnavailable(...) from exc`) so nothing above them sees httpx or redis exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence

from carbon_optimizer.redact import redact


class CarbonOptimizerError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidInput(CarbonOptimizerError):
    """The request is well-formed JSON but asks for something impossible or unknown.

    `loc` names the offending field the way pydantic does (e.g. ("body", "locations", 2, "zone")),
    so the API can return it in the problem's `errors` list.
    """

    def __init__(self, message: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc: tuple[str | int, ...] = tuple(loc)


class UnknownZone(InvalidInput):
    """An Electricity Maps zone key we have no data and no mapping for."""


class UnknownRegion(InvalidInput):
    """A (provider, region) pair that is not in the region catalog."""


class NothingFeasible(CarbonOptimizerError):
    """No (location, start) candidate satisfies the workload; carries per-location reasons."""

    def __init__(self, message: str, infeasible: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        # (location key, reason) pairs, e.g. ("aws/eu-west-3", "no instance type with 1 GPU A100-80GB")
        self.infeasible: tuple[tuple[str, str], ...] = tuple(infeasible)


class ProviderError(CarbonOptimizerError):
    """A data source failed. Subclasses say how, so callers can decide to fall back or retry."""

    def __init__(self, message: str, *, source: str = "", retryable: bool = False) -> None:
        # Upstream words (error bodies may echo our token) are masked here, where every upstream
        # message is born, so neither the cache, /health nor a log line ever holds a secret.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.source = source
        self.retryable = retryable


class ProviderUnavailable(ProviderError):
    """Upstream unreachable, timed out, 5xx, or circuit open: fall back to other data."""


class ProviderAuthError(ProviderError):
    """The upstream rejected our credentials (invalid token, WAF denial)."""


class ProviderNotEntitled(ProviderError):
    """Valid credentials, but the plan does not cover this zone or endpoint."""


class ProviderRateLimited(ProviderError):
    """Upstream said 429; `retry_after_s` is its hint when it gave one."""

    def __init__(self, message: str, *, source: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, source=source, retryable=True)
        self.retry_after_s = retry_after_s


class NoDataForZone(ProviderError):
    """Upstream has no (recent) data for this zone: a definite answer, cacheable as negative."""


class MalformedUpstreamResponse(ProviderError):
    """Upstream answered 2xx with a body we cannot parse."""


class DataUnavailable(CarbonOptimizerError):
    """No source at all (live, cache or bundled) can answer: the only case for a 503."""

    def __init__(self, message: str, *, retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
