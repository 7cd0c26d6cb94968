"""What one placement adds to each report sum: the single definition reports and rollups share.

Every figure of a savings report is a plain sum of these over its placements (never an average
of per-placement ratios), so groups add up to the totals and a day's sums can be stored once
(the rollups, migration 0003) and added up later. Each contribution is a number, never NULL.
Forecast figures cover placements with the data; realised ones only reconciled placements, and
the forecast error compares the two over exactly the reconciled set. Rules: docs/ledger.md.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import and_, case, func, literal
from sqlalchemy.sql.elements import ColumnElement

from carbon_optimizer.ledger.models import RECONCILED, ROLLUP_SUMS, placements

p = placements.c
_has_baseline = p.baseline_emissions_g.is_not(None)
_realised = p.realised_emissions_g.is_not(None)
_realised_pair = and_(_realised, p.realised_baseline_emissions_g.is_not(None))
_priced_pair = and_(p.cost_usd.is_not(None), p.baseline_cost_usd.is_not(None))


def _if(condition: ColumnElement[bool], value: Any) -> ColumnElement[Any]:
    return case((condition, value), else_=0)


CONTRIBUTIONS: Final[list[tuple[str, ColumnElement[Any]]]] = [
    ("placements", literal(1)),
    ("with_baseline", _if(_has_baseline, 1)),
    ("reconciled", _if(p.status == RECONCILED, 1)),
    ("reconciled_with_bundled_data", _if(and_(_realised, p.realised_source.like("fallback:%")), 1)),
    ("energy_kwh", p.energy_kwh),
    ("forecast_emissions_g", _if(_has_baseline, p.emissions_g)),
    ("forecast_baseline_emissions_g", _if(_has_baseline, p.baseline_emissions_g)),
    ("forecast_emissions_all_g", p.emissions_g),
    ("realised_energy_kwh", _if(_realised, func.coalesce(p.realised_energy_kwh, 0))),
    ("realised_emissions_g", _if(_realised_pair, p.realised_emissions_g)),
    ("realised_baseline_emissions_g", _if(_realised_pair, p.realised_baseline_emissions_g)),
    ("realised_emissions_all_g", func.coalesce(p.realised_emissions_g, 0)),
    ("forecast_emissions_reconciled_g", _if(_realised, p.emissions_g)),
    ("forecast_abs_error_g", _if(_realised, func.abs(p.realised_emissions_g - p.emissions_g))),
    ("cost_usd", _if(_priced_pair, p.cost_usd)),
    ("baseline_cost_usd", _if(_priced_pair, p.baseline_cost_usd)),
    ("priced_placements", _if(_priced_pair, 1)),
]
NAMES: Final = tuple(name for name, _ in CONTRIBUTIONS)
if NAMES != ROLLUP_SUMS:  # the rollup tables' columns (models) and these must be one list
    raise RuntimeError("sums.CONTRIBUTIONS and models.ROLLUP_SUMS list different sums")
