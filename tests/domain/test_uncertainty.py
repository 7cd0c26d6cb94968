"""Uncertainty math: p_best, ties, intervals, pessimistic ranking, the lead-time error model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain import order_stats
from carbon_optimizer.domain import uncertainty as unc
from carbon_optimizer.forecast_data import load_error_model

HOURS = 24


def paths_from(p50: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(zones, 3, hours) paths with a symmetric band of ±spread around p50."""
    return np.stack([p50 - spread, p50, p50 + spread], axis=1)


def options(zone: list[int], start: list[int], hours: list[int]) -> unc.Options:
    return unc.Options(
        zone=np.array(zone, dtype=np.int64),
        start=np.array(start, dtype=np.int64),
        hours=np.array(hours, dtype=np.int64),
        scale=np.ones(len(zone)),
    )


zone_paths = st.integers(1, 3).flatmap(
    lambda z: st.tuples(
        st.just(z),
        st.lists(st.floats(100, 600), min_size=z * HOURS, max_size=z * HOURS),
        st.lists(st.floats(0, 80), min_size=z * HOURS, max_size=z * HOURS),
    )
)
option_sets = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, HOURS - 6), st.integers(1, 6)), min_size=1, max_size=6
)


def build(
    data: tuple[int, list[float], list[float]], opts: list[tuple[int, int, int]]
) -> tuple[np.ndarray, unc.Options]:
    z, mids, spreads = data
    paths = paths_from(np.array(mids).reshape(z, HOURS), np.array(spreads).reshape(z, HOURS))
    return paths, options([o[0] % z for o in opts], [o[1] for o in opts], [o[2] for o in opts])


@settings(max_examples=40, deadline=None)
@given(zone_paths, option_sets, st.floats(0, 1))
def test_p_best_is_a_distribution(
    data: tuple[int, list[float], list[float]], opts: list[tuple[int, int, int]], rho: float
) -> None:
    paths, o = build(data, opts)
    p = unc.p_best(unc.sample_emissions(paths, o, draws=300, rho=rho, seed=1))
    assert p.shape == (len(opts),)
    assert np.all(p >= 0)
    assert np.all(p <= 1)
    assert p.sum() == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(zone_paths, option_sets)
def test_identical_options_share_p_best(
    data: tuple[int, list[float], list[float]], opts: list[tuple[int, int, int]]
) -> None:
    paths, o = build(data, [*opts, opts[0]])
    p = unc.p_best(unc.sample_emissions(paths, o, draws=300, seed=2))
    assert p[0] == pytest.approx(p[-1])


@settings(max_examples=30, deadline=None)
@given(zone_paths, option_sets)
def test_zero_error_makes_p_best_the_indicator_of_the_best(
    data: tuple[int, list[float], list[float]], opts: list[tuple[int, int, int]]
) -> None:
    z, mids, _ = data
    paths, o = build((z, mids, [0.0] * len(mids)), opts)
    truth = unc.comonotone_interval(paths, o)[:, 1]
    p = unc.p_best(unc.sample_emissions(paths, o, draws=50, seed=3))
    best = truth <= truth.min() * (1 + 1e-12)
    np.testing.assert_allclose(p, best / best.sum(), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 50), st.floats(1, 80), st.floats(0, 1))
def test_lowering_an_option_never_lowers_its_p_best(shift: float, spread: float, rho: float) -> None:
    # Two zones, one option each; zone 0's whole forecast is lowered by `shift`. Common random
    # numbers (same seed) make the comparison exact, not statistical.
    p50 = np.full((2, HOURS), 300.0)
    paths = paths_from(p50, np.full((2, HOURS), spread))
    lowered = paths.copy()
    lowered[0] -= shift
    o = options([0, 1], [3, 3], [4, 4])
    before = unc.p_best(unc.sample_emissions(paths, o, draws=500, rho=rho, seed=4))[0]
    after = unc.p_best(unc.sample_emissions(lowered, o, draws=500, rho=rho, seed=4))[0]
    assert after >= before - 1e-12


def test_same_zone_hours_with_perfectly_correlated_errors_are_ranked_with_certainty() -> None:
    # Equal bands, the median lower at 03:00 than at 15:00 by far less than the band: with errors
    # shared across the zone's hours (rho = 1) the ranking is certain; independent hours are not.
    p50 = np.full((1, HOURS), 300.0)
    p50[0, 3] = 290.0
    paths = paths_from(p50, np.full((1, HOURS), 60.0))
    o = options([0, 0], [3, 15], [1, 1])
    certain = unc.p_best(unc.sample_emissions(paths, o, draws=2000, rho=1.0, seed=5))
    np.testing.assert_allclose(certain, [1.0, 0.0])
    loose = unc.p_best(unc.sample_emissions(paths, o, draws=2000, rho=0.0, seed=5))
    assert 0.5 < loose[0] < 0.7


def test_assess_flags_a_tie_only_when_the_top_options_are_indistinguishable() -> None:
    p50 = np.full((2, HOURS), 300.0)
    p50[1] = 305.0  # zone 1 is 5 g worse on a ±60 band: a tie
    paths = paths_from(p50, np.full((2, HOURS), 60.0))
    o = options([0, 1], [0, 0], [3, 3])
    close = unc.assess(paths, o, draws=2000, seed=6)
    assert close.leader == 0
    assert close.tied
    assert 0.5 < close.p_best[0] < 0.75
    far = paths.copy()
    far[1] += 300.0
    apart = unc.assess(far, o, draws=2000, seed=6)
    assert not apart.tied
    assert apart.p_best[0] == pytest.approx(1.0)


def test_risk_p90_prefers_the_narrow_option_over_a_slightly_lower_wide_one() -> None:
    p50 = np.array([[290.0] * HOURS, [300.0] * HOURS])
    spread = np.array([[120.0] * HOURS, [10.0] * HOURS])
    paths = paths_from(p50, spread)
    o = options([0, 1], [0, 0], [2, 2])
    assert unc.assess(paths, o, risk="p50", seed=7).leader == 0
    pessimistic = unc.assess(paths, o, risk="p90", seed=7)
    assert pessimistic.leader == 1
    assert pessimistic.p90[1] < pessimistic.p90[0]
    with pytest.raises(ValueError, match="risk"):
        unc.assess(paths, o, risk="p99")


def test_sampled_interval_matches_one_hour_quantiles_and_sits_inside_the_comonotone_band() -> None:
    p50 = np.full((1, HOURS), 300.0)
    paths = np.stack([p50 - 30.0, p50, p50 + 90.0], axis=1)  # skewed band
    o = options([0, 0], [5, 5], [1, 6])
    out = unc.assess(paths, o, draws=20000, rho=0.9, seed=8)
    assert out.p10[0] == pytest.approx(270.0, abs=3)
    assert out.p50[0] == pytest.approx(300.0, abs=3)
    assert out.p90[0] == pytest.approx(390.0, abs=4)
    como = unc.comonotone_interval(paths, o)
    assert como[1, 0] - 1 <= out.p10[1] <= out.p90[1] <= como[1, 2] + 1


def test_ar1_normals_have_unit_variance_and_the_requested_correlations() -> None:
    z = unc.ar1_normals(np.random.default_rng(9), 20000, 2, 5, rho=0.8, cross_zone=0.3)
    assert z.shape == (5, 20000, 2)
    assert z[4].std() == pytest.approx(1.0, abs=0.03)
    assert np.corrcoef(z[0, :, 0], z[2, :, 0])[0, 1] == pytest.approx(0.64, abs=0.03)
    assert np.corrcoef(z[3, :, 0], z[3, :, 1])[0, 1] == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match="rho"):
        unc.ar1_normals(np.random.default_rng(0), 1, 1, 1, rho=1.5)


def test_sampling_is_deterministic_for_a_seed() -> None:
    paths = paths_from(np.full((1, HOURS), 300.0), np.full((1, HOURS), 40.0))
    o = options([0, 0], [0, 9], [3, 3])
    a = unc.sample_emissions(paths, o, draws=100, seed=10)
    np.testing.assert_array_equal(a, unc.sample_emissions(paths, o, draws=100, seed=10))
    assert not np.array_equal(a, unc.sample_emissions(paths, o, draws=100, seed=11))


def test_options_outside_the_paths_or_disordered_bands_are_refused() -> None:
    paths = paths_from(np.full((1, HOURS), 300.0), np.full((1, HOURS), 40.0))
    with pytest.raises(ValueError, match="inside"):
        unc.sample_emissions(paths, options([0], [HOURS - 2], [3]))
    with pytest.raises(ValueError, match="p10 <= p50"):
        unc.sample_emissions(paths[:, ::-1, :], options([0], [0], [1]))


def test_shipped_error_model_is_ordered_widening_and_round_trips() -> None:
    model = load_error_model()
    widths = [e.q90 - e.q10 for e in model.leads]
    assert widths == sorted(widths)
    assert model.leads[0].first_hour == 1
    assert model.leads[-1].last_hour == 168
    assert 0.5 < model.hourly_correlation <= 1.0
    assert "backtest" in model.provenance
    assert unc.ErrorModel.from_json(model.to_json()) == model
    point = np.full(200, 400.0)
    band = model.quantile_paths(point)
    assert np.all(np.diff(band, axis=0) >= 0)
    np.testing.assert_array_equal(band[1], point)
    assert band[2, 0] - band[0, 0] < band[2, 100] - band[0, 100]


def test_malformed_error_model_is_refused() -> None:
    good = load_error_model().to_json()
    with pytest.raises(ValueError, match="malformed"):
        unc.ErrorModel.from_json({"leads": good["leads"]})
    bad = {**good, "leads": [{**good["leads"][0], "q10": 1.0}]}
    with pytest.raises(ValueError, match="ordered"):
        unc.ErrorModel.from_json(bad)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(100, 600), min_size=HOURS, max_size=HOURS), option_sets, st.integers(0, 99))
def test_zone_draw_sums_give_exactly_the_single_zone_monte_carlo(
    mids: list[float], opts: list[tuple[int, int, int]], seed: int
) -> None:
    """The memoisable prefix sums are the same draws as `sample_emissions`, read by index."""
    p50 = np.array(mids)
    paths = paths_from(p50[None, :], 0.15 * p50[None, :])
    o = options([0] * len(opts), [s for _, s, _ in opts], [h for _, _, h in opts])
    want = unc.sample_emissions(paths, o, draws=200, rho=0.9, seed=seed)
    sums = unc.zone_draw_sums(paths[0], draws=200, rho=0.9, seed=seed)
    np.testing.assert_allclose(unc.window_samples([sums], o), want, rtol=1e-12)
    assert not sums.flags.writeable
    via_sorting = unc.assess_samples(want, "p90")
    np.testing.assert_allclose(via_sorting.p90, np.quantile(want, 0.9, axis=0), rtol=1e-12)
    np.testing.assert_allclose(via_sorting.p10, np.quantile(want, 0.1, axis=0), rtol=1e-12)
    for risk, q in (("p50", 0.5), ("p90", 0.9)):
        lean = unc.assess_samples(want, risk, intervals=False)
        np.testing.assert_allclose(lean.p50, np.quantile(want, q, axis=0), rtol=1e-12)
        full = unc.assess_samples(want, risk)
        np.testing.assert_array_equal(lean.order, full.order)
        np.testing.assert_allclose(lean.p_best, full.p_best)


def _reference_draw_sums(path: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """`zone_draw_sums` as first written: `np.where` for the side of the band, `np.cumsum` down hours."""
    path = np.nan_to_num(path, nan=0.0)
    hours = path.shape[1]
    z = normals[:hours].copy()
    p10, p50, p90 = (path[i][:, None] for i in range(3))
    z *= np.where(z < 0.0, (p50 - p10) / unc.Z90, (p90 - p50) / unc.Z90)
    z += p50
    np.maximum(z, 0.0, out=z)
    sums = np.zeros((hours + 1, normals.shape[1]))
    np.cumsum(z, axis=0, out=sums[1:])
    return sums


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 60),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.05, 0.3, 2.0]),
    st.booleans(),
)
def test_zone_draw_sums_are_bit_identical_to_the_where_and_cumsum_form(
    hours: int, draws: int, seed: int, rho: float, spread: float, gaps: bool
) -> None:
    """The split-sign products and the row-by-row prefix sums change no bit of the draws.

    Bands from zero width to twice the value (so the clip at zero bites), missing hours as NaN,
    a draw count from 1 and normals longer than the path (a zone's kept normals serve shorter
    series).
    """
    rng = np.random.default_rng(seed)
    p50 = rng.uniform(0.0, 600.0, hours)
    path = np.stack([np.maximum(p50 * (1 - spread), 0.0), p50, p50 * (1 + spread)])
    if gaps:
        path[:, rng.integers(0, hours, max(1, hours // 5))] = np.nan
    normals = unc.ar1_normals(rng, draws, 1, hours + 7, rho)[:, :, 0]
    got = unc.zone_draw_sums(path, draws, rho, normals=normals)
    want = _reference_draw_sums(path, normals)
    assert got.shape == want.shape == (hours + 1, draws)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


def test_hours_without_an_error_model_do_not_leak_into_other_windows() -> None:
    path = paths_from(np.full((1, HOURS), 300.0), np.full((1, HOURS), 30.0))[0]
    path[:, :4] = np.nan  # e.g. replayed hours before the forecast starts
    sums = unc.zone_draw_sums(path, draws=100, seed=1)
    later = unc.window_samples([sums], options([0], [4], [6]))
    assert np.isfinite(later).all()
    assert 200.0 < float(np.median(later)) < 400.0
    with pytest.raises(ValueError, match="inside"):
        unc.window_samples([sums], options([0], [HOURS - 2], [3]))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 60),
    st.sampled_from(["p50", "p90", "mean"]),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_lean_assessment_equals_the_array_formulas_exactly(
    options_count: int, draws: int, risk: str, seed: int, coarse: bool
) -> None:
    """The answer step's lean path gives bit-identical p_best, beats_leader, order and tie flag.

    Coarse draws (a few integer levels) make ties within a draw common, so the tie branches of
    p_best and beats_leader are exercised as well as the usual tie-free case.
    """
    rng = np.random.default_rng(seed)
    samples = (
        rng.integers(0, 3, (draws, options_count)).astype(float)
        if coarse
        else rng.random((draws, options_count))
    )
    lean = unc.assess_samples(samples, risk, intervals=False)
    rows = np.ascontiguousarray(samples.T)
    is_min = rows <= rows.min(axis=0)
    want_p_best = (is_min / is_min.sum(axis=0)).mean(axis=1)
    lead = rows[lean.leader]
    want_beats = (rows < lead).mean(axis=1) + 0.5 * (rows == lead).mean(axis=1)
    assert np.array_equal(lean.beats_leader, want_beats)
    if int(is_min.sum(axis=0).max()) == 1:
        assert np.array_equal(lean.p_best, is_min.mean(axis=1))
    else:
        assert np.array_equal(lean.p_best, want_p_best)
    full = unc.assess_samples(samples, risk)
    np.testing.assert_array_equal(lean.order, full.order)  # partition and sort: the same quantile
    others = np.delete(want_beats, lean.leader)
    assert lean.tied == bool(others.size and others.max() >= unc.TIE_THRESHOLD)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 6),
    draws=st.integers(1, 1200),
    q=st.sampled_from([0.1, 0.5, 0.9, 0.0, 1.0]),
    levels=st.integers(1, 50),  # few distinct values: ties at the selected order statistics
    seed=st.integers(0, 2**32 - 1),
)
def test_partition_quantile_is_the_sorted_quantile_bit_for_bit(
    rows: int, draws: int, q: float, levels: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, levels, size=(rows, draws)) * 0.37 + rng.normal(size=(rows, 1))
    expected = unc._sorted_quantile(np.sort(values, axis=1), q)
    before = order_stats.pair_kth()
    try:
        for pair in (False, True):  # either np.partition form (`domain.order_stats`)
            order_stats.use_pair_kth(pair)
            assert np.array_equal(unc._partition_quantile(values, q), expected)
    finally:
        order_stats.use_pair_kth(before)
    assert np.allclose(expected, np.quantile(values, q, axis=1), rtol=0, atol=1e-12)


def test_option_rows_are_each_windows_two_row_difference_scaled() -> None:
    rng = np.random.default_rng(7)
    tables = {z: np.cumsum(rng.random((30, 50)), axis=0) for z in (0, 3)}
    zones, starts, spans, scales = [3, 0, 3], [2, 0, 10], [5, 1, 19], [1.5, 2.0, 0.25]
    got = unc.option_rows(tables, zones, starts, spans, scales)
    want = np.stack(
        [
            (tables[z][a + h] - tables[z][a]) * (s / h)
            for z, a, h, s in zip(zones, starts, spans, scales, strict=True)
        ]
    )
    assert got.flags.c_contiguous
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="inside its zone's draws"):
        unc.option_rows(tables, [0], [20], [10], [1.0])  # 20 + 10 > 29 rows of sums
    with pytest.raises(ValueError, match="at least one option"):
        unc.option_rows(tables, [], [], [], [])
