"""Hypothesis properties of the engine against slow, obviously-correct Python references.

The references integrate the piecewise-constant series interval by interval (math.fsum) and score
every candidate with the contract's formulas written out literally. Window means must match the raw
data within the engine's documented quantisation (intensities rounded to 10**-6 g/kWh); ranking
properties use a reference fed the same quantised intensities, so that a near-zero minimum in
balanced mode cannot turn a 1e-6 g/kWh quantisation difference into a different ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import Objective, ObjectiveMode
from carbon_optimizer.domain.scoring import (
    CandidateGrid,
    ScoringInput,
    ScoringResult,
    _first_by_start,
    _progression_means,
    _top_k,
    _window_means_seconds,
    candidate_grid,
    objective_score,
    rank_candidates,
    window_means,
)
from carbon_optimizer.domain.series import IntensityGrid

T0 = datetime(2026, 11, 24, 6, tzinfo=UTC)
QUANTUM_TOLERANCE = 2e-6  # g/kWh: quantisation error (<= 0.5e-6) plus float noise
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


def reference_mean(row: list[float], step_s: int, start_s: float, duration_s: float) -> float:
    """Time-weighted mean of one piecewise-constant row over [start, start + duration)."""
    end_s = start_s + duration_s
    parts = []
    for j in range(int(start_s // step_s), min(len(row), math.ceil(end_s / step_s))):
        overlap = min(end_s, (j + 1) * step_s) - max(start_s, j * step_s)
        if overlap > 0:
            parts.append(overlap * row[j])
    return math.fsum(parts) / duration_s


def quantise(value: float) -> float:
    """The engine's documented input quantisation: rounding to a multiple of 10**-6 g/kWh."""
    return float(np.rint(value * 1e6)) / 1e6


def reference_score(
    objective: Objective, emissions: float, cost: float, min_emissions: float, min_cost: float
) -> float:
    """The contract's formulas, literally."""
    mode = objective.mode
    if mode in (ObjectiveMode.CARBON, ObjectiveMode.CARBON_WITHIN_BUDGET):
        return emissions
    if mode is ObjectiveMode.COST:
        return cost
    if mode is ObjectiveMode.BALANCED:
        w = objective.carbon_weight
        return w * emissions / max(min_emissions, 1e-9) + (1 - w) * cost / max(min_cost, 1e-9)
    assert objective.carbon_price_usd_per_tonne is not None
    return cost + emissions / 1e6 * objective.carbon_price_usd_per_tonne


# Intensities: mostly plain floats, sometimes a few repeated round values so that ties happen.
intensity = st.one_of(
    st.floats(min_value=0.0, max_value=1000.0),
    st.sampled_from([0.0, 50.0, 123.4, 300.0]),
)


@dataclass(frozen=True)
class Case:
    grid: IntensityGrid
    rows: list[list[float]]
    step_s: int
    candidates: CandidateGrid
    offset_s: int  # first start, seconds from grid.start


@st.composite
def cases(draw: st.DrawFn, max_locations: int = 4) -> Case:
    step_min = draw(st.sampled_from([5, 15, 30, 60]))
    points = draw(st.integers(min_value=1, max_value=24))
    locations = draw(st.integers(min_value=1, max_value=max_locations))
    rows = [draw(st.lists(intensity, min_size=points, max_size=points)) for _ in range(locations)]
    span_min = step_min * points
    duration_min = draw(st.integers(min_value=1, max_value=span_min))
    offset_s = draw(st.integers(min_value=0, max_value=(span_min - duration_min) * 60))
    # 7 minutes on hourly data cycles through 60 phases: the gather path; others use strided views.
    start_step_min = draw(st.sampled_from([5, 7, 15, 60]))
    earliest = T0 + timedelta(seconds=offset_s)
    deadline = T0 + timedelta(minutes=span_min)
    cands = candidate_grid(
        earliest, deadline, timedelta(minutes=duration_min), timedelta(minutes=start_step_min)
    )
    grid = IntensityGrid(T0, timedelta(minutes=step_min), np.array(rows, dtype=np.float64))
    return Case(grid, rows, step_min * 60, cands, offset_s)


objectives = st.one_of(
    st.just(Objective(mode=ObjectiveMode.CARBON)),
    st.just(Objective(mode=ObjectiveMode.COST)),
    st.floats(0.0, 1.0).map(lambda w: Objective(mode=ObjectiveMode.BALANCED, carbon_weight=w)),
    st.floats(0.0, 200.0).map(
        lambda pct: Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET, max_cost_increase_pct=pct)
    ),
    st.floats(0.0, 500.0).map(
        lambda p: Objective(mode=ObjectiveMode.MONETIZED, carbon_price_usd_per_tonne=p)
    ),
)


def reference_means(case: Case, quantised: bool = False) -> np.ndarray:
    cands = case.candidates
    duration_s = cands.duration.total_seconds()
    starts = [case.offset_s + k * cands.start_step.total_seconds() for k in range(cands.count)]
    rows = [[quantise(v) for v in row] for row in case.rows] if quantised else case.rows
    return np.array([[reference_mean(row, case.step_s, s, duration_s) for s in starts] for row in rows])


def run(case: Case, objective: Objective, energy: list[float], cost: list[float], k: int) -> ScoringResult:
    return rank_candidates(
        ScoringInput(case.grid, case.candidates, np.array(energy), np.array(cost), objective, k)
    )


@PROPERTY_SETTINGS
@given(case=cases())
def test_window_means_match_the_reference_integral(case: Case) -> None:
    cands = case.candidates
    starts_s = case.offset_s + np.arange(cands.count, dtype=np.float64) * cands.start_step.total_seconds()
    starts_min = starts_s / 60.0
    means = window_means(case.grid, starts_min, cands.duration.total_seconds() / 60.0)
    np.testing.assert_allclose(means, reference_means(case), rtol=1e-12, atol=QUANTUM_TOLERANCE)


@PROPERTY_SETTINGS
@given(
    case=cases(),
    objective=objectives,
    data=st.data(),
)
def test_ranking_is_never_beaten_by_another_candidate(
    case: Case, objective: Objective, data: st.DataObject
) -> None:
    locations = len(case.rows)
    energy = data.draw(st.lists(st.floats(0.01, 10.0), min_size=locations, max_size=locations))
    cost = data.draw(st.lists(st.floats(0.01, 10.0), min_size=locations, max_size=locations))
    k = data.draw(st.integers(1, 8))
    result = run(case, objective, energy, cost, k)

    ref_em = np.array(energy)[:, None] * reference_means(case, quantised=True)
    min_em, min_cost = float(ref_em.min()), min(cost)
    ref = np.array(
        [
            [reference_score(objective, e, cost[loc], min_em, min_cost) for e in ref_em[loc]]
            for loc in range(locations)
        ]
    )
    if objective.mode is ObjectiveMode.CARBON_WITHIN_BUDGET:
        limit = (1 + objective.max_cost_increase_pct / 100) * min_cost
        eligible = np.array([c <= limit for c in cost])
        ref[~eligible] = np.inf
        assert all(eligible[r.location_index] for r in result.ranked)
        assert result.candidates_eligible == int(eligible.sum()) * case.candidates.count
    tolerance = 1e-9 * max(1.0, float(np.abs(ref[np.isfinite(ref)]).max()))

    assert len(result.ranked) == min(k, int(np.isfinite(ref).sum()))
    assert result.candidates_evaluated == locations * case.candidates.count
    assert abs(result.min_emissions_g - min_em) <= 1e-9 * max(1.0, min_em)
    # The best option is at least as good as every candidate, and so is each ranked one against
    # every candidate that did not make the list.
    chosen = {(r.location_index, r.start_index) for r in result.ranked}
    worst_chosen = max(ref[r.location_index, r.start_index] for r in result.ranked)
    assert ref[result.ranked[0].location_index, result.ranked[0].start_index] <= ref.min() + tolerance
    others = [
        ref[loc, s]
        for loc in range(locations)
        for s in range(case.candidates.count)
        if (loc, s) not in chosen
    ]
    assert all(worst_chosen <= other + tolerance for other in others)
    # The engine's own scores are sorted by (score, start, location): the documented order.
    keys = [(r.score, r.start_index, r.location_index) for r in result.ranked]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@PROPERTY_SETTINGS
@given(case=cases(), objective=objectives, data=st.data())
def test_reported_figures_are_consistent(case: Case, objective: Objective, data: st.DataObject) -> None:
    locations = len(case.rows)
    energy = data.draw(st.lists(st.floats(0.0, 10.0), min_size=locations, max_size=locations))
    cost = data.draw(st.lists(st.floats(0.01, 10.0), min_size=locations, max_size=locations))
    result = run(case, objective, energy, cost, locations * case.candidates.count)
    ref = reference_means(case)
    cands = case.candidates
    for r in result.ranked:
        assert r.emissions_g == energy[r.location_index] * r.avg_intensity_g_per_kwh
        assert abs(r.avg_intensity_g_per_kwh - ref[r.location_index, r.start_index]) <= QUANTUM_TOLERANCE
        assert r.cost_usd == cost[r.location_index]
        assert r.start == cands.first_start + r.start_index * cands.start_step
        assert r.end == r.start + cands.duration
        again = objective_score(
            objective, r.emissions_g, r.cost_usd, result.min_emissions_g, result.min_cost_usd
        )
        assert again == r.score
    if objective.mode is not ObjectiveMode.CARBON_WITHIN_BUDGET:
        assert result.min_emissions_g == min(r.emissions_g for r in result.ranked)
    assert result.min_cost_usd == min(cost)


@PROPERTY_SETTINGS
@given(case=cases(max_locations=3), objective=objectives, data=st.data())
def test_permuting_locations_changes_only_the_location_tie_break(
    case: Case, objective: Objective, data: st.DataObject
) -> None:
    # Locations are drawn (with repeats) from a few distinct data rows; a location's identity is
    # its data row, its energy and its price. Equal identities are indistinguishable except by
    # their position in the request.
    distinct = len(case.rows)
    identity = data.draw(st.lists(st.integers(0, distinct - 1), min_size=1, max_size=6))
    energy_of = data.draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=distinct, max_size=distinct))
    cost_of = data.draw(st.lists(st.sampled_from([1.0, 1.5, 3.0]), min_size=distinct, max_size=distinct))
    order = data.draw(st.permutations(range(len(identity))))

    def ranked(ids: list[int]) -> list[tuple[float, int, int, int]]:
        grid = IntensityGrid(T0, case.grid.step, np.array([case.rows[i] for i in ids], dtype=np.float64))
        result = rank_candidates(
            ScoringInput(
                grid,
                case.candidates,
                np.array([energy_of[i] for i in ids]),
                np.array([cost_of[i] for i in ids]),
                objective,
                len(ids) * case.candidates.count,
            )
        )
        return [(r.score, r.start_index, ids[r.location_index], r.location_index) for r in result.ranked]

    before = ranked(identity)
    after = ranked([identity[i] for i in order])
    # Same (score, start, identity) candidates with bit-identical scores...
    assert sorted(x[:3] for x in before) == sorted(x[:3] for x in after)
    # ... in (score, start, location index) order: the location index is the only tie-break.
    for result in (before, after):
        keys = [(score, start, loc) for score, start, _, loc in result]
        assert keys == sorted(keys)
    # Copies of one identity keep their relative request order.
    for ident in set(identity):
        positions = [i for i, x in enumerate(identity) if x == ident]
        firsts = [loc for _, start, i, loc in before if i == ident and start == before[0][1]]
        assert firsts == sorted(firsts)
        assert len(firsts) in (0, len(positions))


@PROPERTY_SETTINGS
@given(
    rows=st.integers(1, 6),
    starts=st.integers(1, 40),
    levels=st.integers(1, 4),
    k=st.integers(1, 30),
    data=st.data(),
)
def test_top_k_equals_a_full_sort(rows: int, starts: int, levels: int, k: int, data: st.DataObject) -> None:
    # Few distinct score levels, so ties straddle the k-th place most of the time.
    values = data.draw(st.lists(st.integers(0, levels - 1), min_size=rows * starts, max_size=rows * starts))
    scores = np.array(values, dtype=np.float64).reshape(rows, starts)
    k = min(k, scores.size)
    flat = np.arange(scores.size)
    expected = sorted(flat.tolist(), key=lambda i: (scores.flat[i], i % starts, i // starts))[:k]
    assert _top_k(scores, k).tolist() == expected


@PROPERTY_SETTINGS
@given(starts=st.integers(1, 30), data=st.data())
def test_first_by_start_takes_exactly_the_needed_earliest(starts: int, data: st.DataObject) -> None:
    tied = np.array(sorted(data.draw(st.sets(st.integers(0, 5 * starts - 1), min_size=1))), dtype=np.int64)
    needed = data.draw(st.integers(1, tied.size))
    expected = sorted(tied.tolist(), key=lambda i: (i % starts, i // starts))[:needed]
    assert sorted(_first_by_start(tied, starts, needed).tolist()) == sorted(expected)


@settings(max_examples=200, deadline=None)
@given(case=cases(), fraction_us=st.sampled_from([0, 0, 250_000]))
def test_progression_means_are_bit_identical_to_the_general_path(case: Case, fraction_us: int) -> None:
    """The engine's progression path (scalars from four integers) equals the array path exactly.

    Covers strided starts, phase classes (15-minute starts on hourly data), the gather fallback
    (7-minute starts) and, with a fractional first start, the general path itself.
    """
    cands = case.candidates
    first_s = case.offset_s + fraction_us / 1e6
    spacing_s, duration_s = cands.start_step.total_seconds(), cands.duration.total_seconds()
    end_s = first_s + (cands.count - 1) * spacing_s + duration_s
    if end_s > case.step_s * len(case.rows[0]):
        return  # the fraction pushed the last window past the grid: both paths raise (checked below)
    fast = _progression_means(case.grid, first_s, spacing_s, cands.count, duration_s)
    general = _window_means_seconds(
        case.grid, first_s + spacing_s * np.arange(cands.count, dtype=np.float64), duration_s
    )
    assert fast.shape == general.shape
    assert np.array_equal(fast, general), np.abs(fast - general).max()


def test_progression_means_refuse_a_window_past_the_grid() -> None:
    grid = IntensityGrid(T0, timedelta(hours=1), np.ones((2, 4)))
    with pytest.raises(ValueError, match="window outside the intensity grid"):
        _progression_means(grid, 3600.0, 3600.0, 3, 2 * 3600.0)  # last window ends at 5 h of 4
