"""The pure schedules: TWAP slices sum to qty and are evenly spaced, the VWAP profile is normalised and
U-shaped (or learned from bars), POV sizing tracks a volume series within tolerance without overshooting."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradesim.services.algos import (
    due,
    even_split,
    iceberg_child,
    learned_profile,
    pov_child,
    pov_target,
    twap_schedule,
    u_profile,
    vwap_schedule,
)
from tradesim.services.algos.schedules import DAY_NS, NS, default_slices
from tradesim.services.marketdata.messages import Bar


@given(lots=st.integers(1, 10_000), slices=st.integers(1, 200), lot=st.sampled_from([1, 10, 100]),
       start=st.integers(0, 10**18), duration=st.integers(1, 10**13))
def test_twap_slices_sum_to_qty_are_even_and_evenly_spaced(lots: int, slices: int, lot: int, start: int,
                                                           duration: int) -> None:
    slices = min(slices, lots)
    qty = lots * lot
    schedule = twap_schedule(qty, slices, start, duration, lot)
    assert len(schedule) == slices
    assert sum(s.qty for s in schedule) == qty
    sizes = [s.qty for s in schedule]
    assert max(sizes) - min(sizes) <= lot and all(q % lot == 0 for q in sizes)
    times = [s.ts for s in schedule]
    assert times[0] == start and times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert not gaps or max(gaps) - min(gaps) <= 1  # even spacing (integer ns)
    assert times[-1] < start + duration or duration < slices


def test_twap_remainder_is_spread_not_bunched() -> None:
    assert even_split(10, 4) == [2, 3, 2, 3]
    assert [s.qty for s in twap_schedule(103, 5, 0, 5 * NS)] == [20, 21, 20, 21, 21]
    assert [s.ts for s in twap_schedule(100, 4, 1_000, 4 * NS)] == [1_000, NS + 1_000, 2 * NS + 1_000, 3 * NS + 1_000]


def test_due_counts_slices_whose_time_has_come() -> None:
    schedule = twap_schedule(100, 4, 0, 4 * NS)
    assert due(schedule, -1) == (0, 0)
    assert due(schedule, 0) == (1, 25)
    assert due(schedule, 2 * NS + 5) == (3, 75)
    assert due(schedule, 10 * NS) == (4, 100)


@pytest.mark.parametrize("bins", [1, 2, 3, 5, 10, 39, 390])
def test_u_profile_is_normalised_symmetric_and_u_shaped(bins: int) -> None:
    w = u_profile(bins)
    assert sum(w) == pytest.approx(1.0)
    assert w == pytest.approx(w[::-1])
    mid = (bins - 1) // 2
    assert all(a >= b for a, b in itertools.pairwise(w[:mid + 1]))  # falls to the middle
    assert all(a <= b for a, b in itertools.pairwise(w[mid:]))  # rises to the close
    if bins >= 5:
        assert w[0] > 2 * w[mid]


@given(lots=st.integers(1, 5_000), weights=st.lists(st.floats(0, 100), min_size=1, max_size=50))
def test_vwap_slices_follow_the_weights_and_sum_to_qty(lots: int, weights: list[float]) -> None:
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)
    schedule = vwap_schedule(lots, weights, 0, 10 * NS)
    assert sum(s.qty for s in schedule) == lots and all(s.qty >= 0 for s in schedule)
    total = sum(weights)
    cum_w = cum_q = 0.0
    for w, s in zip(weights, schedule, strict=True):
        cum_w += w
        cum_q += s.qty
        assert abs(cum_q - lots * cum_w / total) <= 1 + 1e-6  # cumulative rounding: within one lot


def test_vwap_on_the_u_profile_is_heavier_at_both_ends() -> None:
    sizes = [s.qty for s in vwap_schedule(1_000, u_profile(10), 0, NS)]
    assert sum(sizes) == 1_000
    assert sizes[0] > sizes[4] < sizes[-1] and sizes[0] > 2 * sizes[5]


def test_learned_profile_reads_volume_by_time_of_day_from_bars() -> None:
    day0 = 10 * DAY_NS
    # yesterday: 09:00-09:01 quiet (100), 09:01-09:02 busy (300); the window is 09:00-09:02 today
    bars = [Bar(symbol="X.SIM", start_ts=day0 + 9 * 3600 * NS, interval_s=60, open=1, high=1, low=1, close=1,
                volume=100, turnover=100, trades=1),
            Bar(symbol="X.SIM", start_ts=day0 + 9 * 3600 * NS + 60 * NS, interval_s=60, open=1, high=1, low=1,
                close=1, volume=300, turnover=300, trades=1)]
    start = day0 + DAY_NS + 9 * 3600 * NS
    w = learned_profile(bars, start, 120 * NS, 4)
    assert w is not None
    assert w == pytest.approx([0.125, 0.125, 0.375, 0.375])
    assert learned_profile(bars, start + 3600 * NS, 120 * NS, 4) is None  # nothing known about 10:00
    sizes = [s.qty for s in vwap_schedule(80, w, start, 120 * NS)]
    assert sizes == [10, 10, 30, 30]


def test_pov_sizing_tracks_a_volume_series_within_tolerance() -> None:
    rate = 0.2
    others = filled = 0
    series = [50, 0, 120, 7, 300, 1, 1, 80, 500, 33] * 5
    for traded in series:
        others += traded
        child = pov_child(rate, others + filled, filled, 0, 10_000, min_child=5)
        filled += child  # filled at once (a market child)
        assert filled <= pov_target(rate, others + filled, filled) + 0  # never above the target
        share = filled / (others + filled)
        assert share <= rate + 1e-9
        assert rate - share <= 5 / (others + filled) + 1e-9  # behind by less than one min_child
    assert filled / (others + filled) == pytest.approx(rate, abs=0.001)


def test_pov_catches_up_counts_open_children_and_stops_at_qty() -> None:
    assert pov_target(0.25, 400, 0) == 133  # 25% of all volume: ours = p / (1 - p) * others
    assert pov_target(0.25, 400, 100) == 100
    assert pov_child(0.25, 400, 0, 0, 1_000) == 133
    assert pov_child(0.25, 400, 0, 100, 1_000) == 33  # an open child already counts
    assert pov_child(0.25, 400, 0, 0, 50) == 50  # never beyond the parent
    assert pov_child(0.25, 400, 130, 0, 1_000, min_child=10) == 0  # 3 short, below min_child: wait
    assert pov_child(0.25, 400, 130, 0, 2, min_child=10) == 0  # behind target by 0: nothing
    assert pov_child(0.5, 1_000, 0, 0, 1_000, lot=100) == 1_000
    assert pov_child(0.3, 1_000, 0, 0, 10_000, lot=100) == 400  # 428 rounded down to the lot


def test_iceberg_one_child_at_a_time() -> None:
    assert iceberg_child(20, 100, 0) == 20
    assert iceberg_child(20, 100, 5) == 0
    assert iceberg_child(20, 7, 0) == 7


def test_bad_schedule_input() -> None:
    assert default_slices(0) == 1 and default_slices(2_500) == 2
    with pytest.raises(ValueError):
        twap_schedule(0, 1, 0, NS)
    with pytest.raises(ValueError):
        twap_schedule(15, 1, 0, NS, lot=10)
    with pytest.raises(ValueError):
        vwap_schedule(10, [0.0, 0.0], 0, NS)
    with pytest.raises(ValueError):
        u_profile(0)
