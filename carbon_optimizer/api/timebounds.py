"""The range of instants the API accepts, so calendar-end dates are a 422, never an OverflowError.

`datetime` stops at years 1 and 9999: `9999-12-31T23:00Z` plus a window, or
`0001-01-01T00:00+14:00` converted to UTC, overflows deep in the engine (a 500, and uvicorn
reset the keep-alive connection after it). Every datetime the API reads is therefore an
`ApiDatetime`: offset-aware and within [2000-01-01, 2100-01-01) UTC. That range is far wider
than any data behind the service (the bundled series are 2023, live forecasts reach 72 h ahead,
history a few years back) plus the longest window (31 days), and far from both calendar ends,
so arithmetic on an accepted instant cannot overflow. The 422 names the field, like any other
validation error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:  # e.g. 0001-01-01T00:00+14:00
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}") from exc
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


ApiDatetime = Annotated[AwareDatetime, AfterValidator(_in_range)]
