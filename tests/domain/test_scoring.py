"""Analytic tests of the scoring engine: hand-computed window means, rankings and tie-breaks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np
import pytest

from carbon_optimizer.domain.models import CarbonSeries, Objective, ObjectiveMode, SourceRun
from carbon_optimizer.domain.scoring import (
    CandidateGrid,
    ScoringInput,
    ScoringResult,
    candidate_grid,
    evaluate_window,
    objective_score,
    rank_candidates,
    window_means,
)
from carbon_optimizer.domain.series import IntensityGrid, align_series

T0 = datetime(2026, 11, 24, tzinfo=UTC)
HOUR = timedelta(hours=1)
QUARTER = timedelta(minutes=15)


def hourly_grid(*rows: Sequence[float]) -> IntensityGrid:
    return IntensityGrid(T0, HOUR, np.array(rows, dtype=np.float64))


def rank(
    grid: IntensityGrid,
    candidates: CandidateGrid,
    objective: Objective,
    energy: list[float] | None = None,
    cost: list[float] | None = None,
    max_results: int = 100,
) -> ScoringResult:
    locations = grid.values.shape[0]
    return rank_candidates(
        ScoringInput(
            grid=grid,
            candidates=candidates,
            energy_kwh=np.array(energy if energy is not None else [1.0] * locations),
            cost_usd=np.array(cost if cost is not None else [1.0] * locations),
            objective=objective,
            max_results=max_results,
        )
    )


def picks(result: ScoringResult) -> list[tuple[int, int]]:
    return [(r.location_index, r.start_index) for r in result.ranked]


CARBON = Objective(mode=ObjectiveMode.CARBON)


class TestCandidateGrid:
    def test_last_start_may_end_exactly_at_the_deadline(self) -> None:
        grid = candidate_grid(T0, T0 + 6 * HOUR, 3 * HOUR, HOUR)
        assert grid.count == 4
        assert grid.start(3) + grid.duration == T0 + 6 * HOUR
        assert grid.last_end == T0 + 6 * HOUR

    def test_one_step_later_would_overrun_the_deadline(self) -> None:
        grid = candidate_grid(T0, T0 + 6 * HOUR - timedelta(minutes=1), 3 * HOUR, HOUR)
        assert grid.count == 3

    def test_duration_equal_to_the_window_gives_exactly_one_candidate(self) -> None:
        grid = candidate_grid(T0, T0 + 3 * HOUR, 3 * HOUR, QUARTER)
        assert grid.count == 1
        assert grid.start(0) == T0

    def test_window_shorter_than_duration_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="shorter than the duration"):
            candidate_grid(T0, T0 + 2 * HOUR, 3 * HOUR, HOUR)

    def test_steps_from_an_earliest_start_off_the_hour(self) -> None:
        earliest = T0 + timedelta(hours=10, minutes=7)
        grid = candidate_grid(earliest, earliest + 5 * HOUR, timedelta(minutes=100), QUARTER)
        # (300 - 100) / 15 = 13.33 -> k = 0..13
        assert grid.count == 14
        assert grid.start(13) == earliest + 13 * QUARTER

    @pytest.mark.parametrize(("duration", "step"), [(timedelta(0), HOUR), (HOUR, timedelta(0))])
    def test_non_positive_duration_or_step_is_rejected(self, duration: timedelta, step: timedelta) -> None:
        with pytest.raises(ValueError, match="positive"):
            candidate_grid(T0, T0 + 6 * HOUR, duration, step)


class TestWindowMeans:
    GRID = hourly_grid([100, 200, 300, 400], [0, 0, 0, 600])

    def test_windows_on_the_hour(self) -> None:
        means = window_means(self.GRID, np.array([0.0, 60.0, 120.0]), 120.0)
        np.testing.assert_allclose(means, [[150, 250, 350], [0, 0, 300]])

    def test_quarter_hour_starts_on_hourly_data(self) -> None:
        # 00:15 + 60 min = 45 min at 100 + 15 min at 200 = 125; 00:45 -> 15·100 + 45·200 = 175.
        means = window_means(self.GRID, np.array([15.0, 30.0, 45.0]), 60.0)
        np.testing.assert_allclose(means[0], [125, 150, 175])

    def test_duration_not_a_multiple_of_the_step(self) -> None:
        # 00:07 + 100 min: 53 min at 100, 47 min at 200 -> 147.
        # 00:30 + 100 min: 30 at 100, 60 at 200, 10 at 300 -> 180.
        means = window_means(self.GRID, np.array([7.0, 30.0]), 100.0)
        np.testing.assert_allclose(means[0], [147, 180])
        np.testing.assert_allclose(means[1], [0, 0])

    def test_window_ending_exactly_at_the_grid_end(self) -> None:
        means = window_means(self.GRID, np.array([180.0, 150.0]), 60.0)
        np.testing.assert_allclose(means, [[400, 350], [600, 300]])

    def test_whole_grid_in_one_window(self) -> None:
        np.testing.assert_allclose(window_means(self.GRID, np.array([0.0]), 240.0), [[250], [150]])

    def test_fractional_minutes(self) -> None:
        # 00:59:30 + 1 min: 30 s at 100 and 30 s at 200.
        np.testing.assert_allclose(window_means(self.GRID, np.array([59.5]), 1.0)[0], [150])

    def test_windows_outside_the_grid_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="outside"):
            window_means(self.GRID, np.array([181.0]), 60.0)
        with pytest.raises(ValueError, match="outside"):
            window_means(self.GRID, np.array([-1.0]), 60.0)
        with pytest.raises(ValueError, match="positive"):
            window_means(self.GRID, np.array([0.0]), 0.0)

    def test_five_minute_starts_on_hourly_data(self) -> None:
        starts = np.arange(0.0, 121.0, 5.0)
        means = window_means(self.GRID, starts, 60.0)
        # Between 00:00 and 02:00 a one-hour window mixes two neighbouring hours linearly.
        expected = [100 + 100 * s / 60 for s in starts]
        np.testing.assert_allclose(means[0], expected)

    def test_evaluate_window_matches_window_means(self) -> None:
        start = T0 + timedelta(minutes=7)
        value = evaluate_window(self.GRID, 0, start, timedelta(minutes=100))
        assert value == pytest.approx(147)
        assert value == window_means(self.GRID, np.array([7.0]), 100.0)[0, 0]
        with pytest.raises(ValueError, match="out of range"):
            evaluate_window(self.GRID, 2, start, HOUR)


class TestBestWindow:
    def test_v_shaped_series_has_its_minimum_at_the_known_hour(self) -> None:
        values = [abs(h - 13) * 10 + 50 for h in range(24)]
        grid = hourly_grid(values)
        one_hour = rank(grid, candidate_grid(T0, T0 + 24 * HOUR, HOUR, HOUR), CARBON, max_results=1)
        assert one_hour.ranked[0].start == T0 + 13 * HOUR
        assert one_hour.ranked[0].avg_intensity_g_per_kwh == pytest.approx(50)

    def test_v_shaped_three_hour_window_and_equal_neighbours(self) -> None:
        values = [abs(h - 13) * 10 + 50 for h in range(24)]
        result = rank(hourly_grid(values), candidate_grid(T0, T0 + 24 * HOUR, 3 * HOUR, HOUR), CARBON)
        # 12:00 → (60+50+60)/3; 11:00 and 13:00 tie at 60: the earlier start ranks first.
        assert [r.start for r in result.ranked[:3]] == [T0 + 12 * HOUR, T0 + 11 * HOUR, T0 + 13 * HOUR]
        assert result.ranked[0].avg_intensity_g_per_kwh == pytest.approx(170 / 3)
        assert result.ranked[1].score == result.ranked[2].score

    def test_quarter_hour_steps_on_hourly_data(self) -> None:
        # Hourly data, 90-minute job, 15-minute steps (aligned through align_series):
        #   01:45 → 15·300 + 60·50 + 15·200 = 10500 / 90;  02:00 → 60·50 + 30·200 = 9000 / 90;
        #   02:15 → 45·50 + 45·200 = 11250 / 90;           01:30 → 30·300 + 60·50 = 12000 / 90.
        series = CarbonSeries(
            zone="DE",
            start=T0,
            step=HOUR,
            values=np.array([400.0, 300.0, 50.0, 200.0, 400.0]),
            runs=(SourceRun(0, 5, "test"),),
        )
        grid = align_series([series], T0, T0 + 5 * HOUR)
        cands = candidate_grid(T0, T0 + 5 * HOUR, timedelta(minutes=90), QUARTER)
        result = rank(grid, cands, CARBON, max_results=4)
        assert [r.start_index for r in result.ranked] == [8, 7, 9, 6]
        assert [r.avg_intensity_g_per_kwh for r in result.ranked] == pytest.approx(
            [100, 10500 / 90, 125, 12000 / 90]
        )
        assert result.ranked[0].start == T0 + 2 * HOUR

    def test_earliest_start_off_the_hour_with_odd_duration(self) -> None:
        # Hourly data; earliest 10:07, 100-minute job, 15-minute steps, deadline 14:00.
        values = [500.0] * 10 + [400.0, 100.0, 300.0, 200.0] + [500.0] * 10
        grid = hourly_grid(values)
        earliest = T0 + timedelta(hours=10, minutes=7)
        cands = candidate_grid(earliest, T0 + 14 * HOUR, timedelta(minutes=100), QUARTER)
        assert cands.count == 9  # 10:07 ... 12:07 (12:07 + 100 min = 13:47)
        result = rank(grid, cands, CARBON, max_results=cands.count)
        by_start = {r.start_index: r.avg_intensity_g_per_kwh for r in result.ranked}
        # 10:07 → 53·400 + 47·100; 10:52 → 8·400 + 60·100 + 32·300; 11:07 → 53·100 + 47·300.
        assert by_start[0] == pytest.approx((53 * 400 + 47 * 100) / 100)
        assert by_start[3] == pytest.approx((8 * 400 + 60 * 100 + 32 * 300) / 100)
        assert by_start[4] == pytest.approx((53 * 100 + 47 * 300) / 100)
        # 10:52 → 8·400 + 60·100 + 32·300 = 188 is the minimum over the nine starts
        # (10:22 → 218, 10:37 → 203, 11:07 → 194, later ones ≥ 222).
        best = result.ranked[0]
        assert best.start == earliest + 3 * QUARTER
        assert best.avg_intensity_g_per_kwh == pytest.approx(188)
        assert best.end == best.start + timedelta(minutes=100)
        assert [r.start_index for r in result.ranked[:3]] == [3, 4, 2]

    def test_deadline_at_the_end_of_the_data(self) -> None:
        # The cheapest hour is the last one; a one-hour job may end exactly at the deadline.
        grid = hourly_grid([300, 200, 100])
        cands = candidate_grid(T0, T0 + 3 * HOUR, HOUR, HOUR)
        result = rank(grid, cands, CARBON, max_results=1)
        assert result.ranked[0].start == T0 + 2 * HOUR
        assert result.ranked[0].end == T0 + 3 * HOUR

    def test_duration_equal_to_the_window(self) -> None:
        grid = hourly_grid([300, 200, 100], [100, 100, 100])
        cands = candidate_grid(T0, T0 + 3 * HOUR, 3 * HOUR, HOUR)
        result = rank(grid, cands, CARBON)
        assert result.candidates_evaluated == 2
        assert picks(result) == [(1, 0), (0, 0)]

    def test_candidates_beyond_the_grid_are_rejected(self) -> None:
        grid = hourly_grid([300, 200, 100])
        with pytest.raises(ValueError, match="outside"):
            rank(grid, candidate_grid(T0, T0 + 4 * HOUR, HOUR, HOUR), CARBON)


class TestModes:
    # Three locations, two one-hour candidates (00:00, 01:00). Emissions (g):
    #   A (1 kWh, $3): 128, 384    B (2 kWh, $1): 512, 384    C (1 kWh, $2): 512, 64
    GRID = hourly_grid([128, 384], [256, 192], [512, 64])
    CANDS = candidate_grid(T0, T0 + 2 * HOUR, HOUR, HOUR)
    ENERGY: ClassVar[list[float]] = [1.0, 2.0, 1.0]
    COST: ClassVar[list[float]] = [3.0, 1.0, 2.0]
    A, B, C = 0, 1, 2

    def run(self, objective: Objective, max_results: int = 100) -> ScoringResult:
        return rank(self.GRID, self.CANDS, objective, self.ENERGY, self.COST, max_results)

    def test_carbon(self) -> None:
        result = self.run(CARBON)
        a, b, c = self.A, self.B, self.C
        # 384 ties at start 1 (A before B), 512 ties at start 0 (B before C).
        assert picks(result) == [(c, 1), (a, 0), (a, 1), (b, 1), (b, 0), (c, 0)]
        assert [r.score for r in result.ranked] == [64, 128, 384, 384, 512, 512]
        assert [r.emissions_g for r in result.ranked] == [64, 128, 384, 384, 512, 512]
        assert (result.min_emissions_g, result.min_cost_usd) == (64, 1.0)
        assert result.candidates_evaluated == result.candidates_eligible == 6

    def test_cost(self) -> None:
        result = self.run(Objective(mode=ObjectiveMode.COST))
        a, b, c = self.A, self.B, self.C
        assert picks(result) == [(b, 0), (b, 1), (c, 0), (c, 1), (a, 0), (a, 1)]
        assert [r.score for r in result.ranked] == [1, 1, 2, 2, 3, 3]
        assert [r.cost_usd for r in result.ranked] == [1, 1, 2, 2, 3, 3]

    def test_balanced(self) -> None:
        # 0.5·em/64 + 0.5·cost/1: A0 2.5, A1 4.5, B0 4.5, B1 3.5, C0 5, C1 1.5.
        result = self.run(Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5))
        a, b, c = self.A, self.B, self.C
        assert picks(result) == [(c, 1), (a, 0), (b, 1), (b, 0), (a, 1), (c, 0)]
        assert [r.score for r in result.ranked] == [1.5, 2.5, 3.5, 4.5, 4.5, 5.0]

    def test_balanced_weight_one_is_carbon_order(self) -> None:
        result = self.run(Objective(mode=ObjectiveMode.BALANCED, carbon_weight=1.0))
        assert picks(result) == picks(self.run(CARBON))
        assert result.ranked[0].score == 1.0

    def test_carbon_within_budget(self) -> None:
        # pct = 100 → limit $2: A ($3) is excluded, C ($2) is exactly on the limit and stays.
        result = self.run(Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET, max_cost_increase_pct=100))
        b, c = self.B, self.C
        assert picks(result) == [(c, 1), (b, 1), (b, 0), (c, 0)]
        assert result.candidates_evaluated == 6
        assert result.candidates_eligible == 4
        # The minima stay those of all candidates, not only of the eligible ones.
        assert result.min_emissions_g == 64

    def test_carbon_within_budget_tight(self) -> None:
        result = self.run(Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET, max_cost_increase_pct=50))
        assert picks(result) == [(self.B, 1), (self.B, 0)]
        assert result.candidates_eligible == 2
        assert all(r.cost_usd == 1.0 for r in result.ranked)

    def test_monetized(self) -> None:
        # $15,625/t = $1 per 64 g: score = cost + em/64 → A0 5, A1 9, B0 9, B1 7, C0 10, C1 3.
        result = self.run(Objective(mode=ObjectiveMode.MONETIZED, carbon_price_usd_per_tonne=15_625))
        a, b, c = self.A, self.B, self.C
        assert picks(result) == [(c, 1), (a, 0), (b, 1), (b, 0), (a, 1), (c, 0)]
        assert [r.score for r in result.ranked] == [3, 5, 7, 9, 9, 10]

    def test_monetized_needs_a_price(self) -> None:
        with pytest.raises(ValueError, match="carbon_price"):
            self.run(Objective(mode=ObjectiveMode.MONETIZED))

    @pytest.mark.parametrize(
        ("max_results", "expected"),
        [(1, [(2, 1)]), (3, [(2, 1), (0, 0), (0, 1)]), (4, [(2, 1), (0, 0), (0, 1), (1, 1)])],
    )
    def test_top_k_cut_inside_a_tie_keeps_the_tie_break(
        self, max_results: int, expected: list[tuple[int, int]]
    ) -> None:
        assert picks(self.run(CARBON, max_results)) == expected

    @pytest.mark.parametrize(
        "objective",
        [
            Objective(mode=ObjectiveMode.COST),
            Objective(mode=ObjectiveMode.BALANCED),
            Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET),
            Objective(mode=ObjectiveMode.MONETIZED, carbon_price_usd_per_tonne=100),
        ],
    )
    def test_cost_modes_reject_a_missing_price(self, objective: Objective) -> None:
        with pytest.raises(ValueError, match=r"missing \[1\]"):
            rank(self.GRID, self.CANDS, objective, self.ENERGY, [3.0, float("nan"), 2.0])

    def test_carbon_mode_accepts_missing_prices(self) -> None:
        result = rank(self.GRID, self.CANDS, CARBON, self.ENERGY, [float("nan"), 5.0, float("nan")])
        assert result.ranked[0].cost_usd is None
        assert result.min_cost_usd == 5.0
        assert [r.cost_usd for r in result.ranked if r.location_index == self.B] == [5.0, 5.0]
        all_missing = rank(self.GRID, self.CANDS, CARBON, self.ENERGY, [float("nan")] * 3)
        assert all_missing.min_cost_usd is None

    @pytest.mark.parametrize(
        "objective",
        [
            Objective(mode=ObjectiveMode.CARBON),
            Objective(mode=ObjectiveMode.COST),
            Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.3),
            Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET, max_cost_increase_pct=100),
            Objective(mode=ObjectiveMode.MONETIZED, carbon_price_usd_per_tonne=80),
        ],
    )
    def test_objective_score_reproduces_ranked_scores(self, objective: Objective) -> None:
        result = self.run(objective)
        for r in result.ranked:
            score = objective_score(
                objective, r.emissions_g, r.cost_usd, result.min_emissions_g, result.min_cost_usd
            )
            assert score == r.score

    def test_objective_score_of_a_baseline(self) -> None:
        objective = Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5)
        assert objective_score(objective, 128.0, 3.0, 64.0, 1.0) == 2.5
        with pytest.raises(ValueError, match="needs a cost"):
            objective_score(objective, 128.0, None, 64.0, 1.0)
        assert objective_score(CARBON, 128.0, None, 64.0, None) == 128.0

    def test_zero_minimum_emissions_uses_the_floor(self) -> None:
        # A zero-carbon location makes min_emissions 0: the floor keeps scores finite and ordered.
        grid = hourly_grid([0, 0], [100, 50])
        objective = Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5)
        result = rank(grid, self.CANDS, objective, [1.0, 1.0], [2.0, 1.0])
        assert result.min_emissions_g == 0.0
        assert all(np.isfinite(r.score) for r in result.ranked)
        assert picks(result) == [(0, 0), (0, 1), (1, 1), (1, 0)]

    def test_balanced_normalises_small_emissions_by_their_minimum(self) -> None:
        # A tiny job: 1 mWh. A: 0.1 g, $2; B: 0.2 g, $1.2. Normalised by min 0.1 g and $1.2:
        # A = 0.5·1 + 0.5·2/1.2 = 1.3333, B = 0.5·2 + 0.5·1 = 1.5 → A first. (A floor of 1 g
        # instead of 1e-9 would rank B first.)
        grid = hourly_grid([100], [200])
        cands = candidate_grid(T0, T0 + HOUR, HOUR, HOUR)
        objective = Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5)
        result = rank(grid, cands, objective, [0.001, 0.001], [2.0, 1.2])
        assert picks(result) == [(0, 0), (1, 0)]
        assert [r.score for r in result.ranked] == pytest.approx([0.5 + 1 / 1.2, 1.5])
        assert result.min_emissions_g == pytest.approx(0.1)

    @pytest.mark.parametrize(
        "objective",
        [
            Objective(mode=ObjectiveMode.BALANCED, carbon_weight=1.5),
            Objective(mode=ObjectiveMode.CARBON_WITHIN_BUDGET, max_cost_increase_pct=-1),
            Objective(mode=ObjectiveMode.MONETIZED, carbon_price_usd_per_tonne=-5),
        ],
    )
    def test_invalid_objective_parameters(self, objective: Objective) -> None:
        with pytest.raises(ValueError, match=r"must|needs"):
            self.run(objective)

    def test_input_shape_and_value_checks(self) -> None:
        with pytest.raises(ValueError, match="shape"):
            rank(self.GRID, self.CANDS, CARBON, [1.0, 1.0], self.COST)
        with pytest.raises(ValueError, match="energy_kwh"):
            rank(self.GRID, self.CANDS, CARBON, [1.0, -1.0, 1.0], self.COST)
        with pytest.raises(ValueError, match="max_results"):
            rank(self.GRID, self.CANDS, CARBON, self.ENERGY, self.COST, max_results=0)
        with pytest.raises(ValueError, match="cost_usd"):
            rank(self.GRID, self.CANDS, CARBON, self.ENERGY, [1.0, float("inf"), 1.0])


class TestTies:
    def test_flat_data_prefers_the_earliest_start_then_the_first_location(self) -> None:
        # 123.4 is not a dyadic number: plain float prefix sums would give windows that differ in
        # the last bits and an arbitrary winner. Off-lattice starts exercise the partial steps.
        grid = IntensityGrid(T0, QUARTER, np.full((7, 96), 123.4))
        earliest = T0 + timedelta(minutes=7, seconds=13)
        cands = candidate_grid(earliest, T0 + 24 * HOUR, timedelta(minutes=100), timedelta(minutes=5))
        result = rank(grid, cands, CARBON, max_results=5)
        assert picks(result) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]
        assert len({r.score for r in result.ranked}) == 1
        assert result.ranked[0].avg_intensity_g_per_kwh == pytest.approx(123.4, abs=1e-6)

    def test_flat_extension_after_a_forecast(self) -> None:
        # Real forecast for 6 h, then a flat extension at the last value (as 'latest' does).
        row = [300.7, 280.1, 250.3, 260.9, 270.2, 290.4] + [289.3] * 30
        grid = hourly_grid(row)
        cands = candidate_grid(T0 + 8 * HOUR, T0 + 36 * HOUR, 3 * HOUR, QUARTER)
        result = rank(grid, cands, CARBON, max_results=3)
        assert [r.start_index for r in result.ranked] == [0, 1, 2]

    def test_identical_rows_rank_by_location_order(self) -> None:
        rng = np.random.default_rng(7)
        row = rng.uniform(100, 500, 48)
        grid = IntensityGrid(T0, HOUR, np.stack([row + 50, row, row, row + 1]))
        result = rank(grid, candidate_grid(T0, T0 + 48 * HOUR, 5 * HOUR, HOUR), CARBON, max_results=2)
        assert [r.location_index for r in result.ranked] == [1, 2]
        assert result.ranked[0].start_index == result.ranked[1].start_index
        assert result.ranked[0].score == result.ranked[1].score

    def test_many_ties_beyond_max_results(self) -> None:
        # Every candidate ties: the pre-filter must keep them all and the lexsort must cut them.
        grid = IntensityGrid(T0, HOUR, np.full((3, 10), 77.0))
        result = rank(grid, candidate_grid(T0, T0 + 10 * HOUR, HOUR, HOUR), CARBON, max_results=4)
        assert picks(result) == [(0, 0), (1, 0), (2, 0), (0, 1)]
