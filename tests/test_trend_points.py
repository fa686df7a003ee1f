"""The DAY trend's short way (`_day_points`, resolvers/analytics.py) gives exactly the points of
the general one (`_bucket_points`), for any series, range, today and daily goal."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.figures import DayCounts, DaySeries
from resolvers.analytics import _bucket_points, _day_points

START = date(2026, 1, 1)
counts = st.integers(min_value=0, max_value=40)


@st.composite
def cases(draw: st.DrawFn) -> tuple[DaySeries, date, date, date, int]:
    d_from = START + timedelta(days=draw(st.integers(0, 60)))
    d_to = d_from + timedelta(days=draw(st.integers(0, 45)))
    today = d_from + timedelta(days=draw(st.integers(-5, 50)))
    offsets = draw(st.lists(st.integers(0, (d_to - d_from).days), unique=True, max_size=46))
    days = tuple(DayCounts(day=d_from + timedelta(days=offset), tasks_created=draw(counts),
                           tasks_completed=draw(counts), tasks_due=draw(counts),
                           tasks_completed_on_time=draw(counts), half_points=draw(counts))
                 for offset in sorted(offsets))
    return DaySeries(d_from=d_from, d_to=d_to, days=days), d_from, d_to, today, \
        draw(st.integers(1, 100))


@given(case=cases())
def test_the_day_trend_equals_the_general_buckets(
        case: tuple[DaySeries, date, date, date, int]) -> None:
    series, d_from, d_to, today, goal = case
    short = _day_points(series, d_from, d_to, today, goal)
    general = _bucket_points(series, "DAY", d_from, d_to, today, goal)
    assert short == general
    # the same Decimals, down to their exponents (12.0 is not 12 in the JSON)
    assert [(p.completion_rate.as_tuple() if p.completion_rate is not None else None,
             p.productivity_score.as_tuple()) for p in short] == \
        [(p.completion_rate.as_tuple() if p.completion_rate is not None else None,
          p.productivity_score.as_tuple()) for p in general]
