"""Figure arithmetic, written once: rounding, the default windows, weeks, months and buckets.

The loaders (default ranges of the keys they warm), the resolvers (effective ranges, buckets,
rates) and the query-cost limits (schema/extensions/limits.py, what a range with no `from`
costs) all read these definitions, so that a fact such as "the default DAY trend is 30 days" is
written in one place. The definitions themselves are in docs/analytics.md.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from gateway.errors import BadUserInput

ONE_DECIMAL = Decimal("0.1")

DEFAULT_WINDOW = {"DAY": 30, "WEEK": 12, "MONTH": 12}
"""Buckets of the default range of each period, ending at `to` (today when `to` is omitted)."""
MAX_BUCKETS = 1000
"""The most buckets of its period a range may span (exactly 1000 is allowed)."""


def round1(numerator: int | Decimal, denominator: int | Decimal) -> Decimal:
    """numerator / denominator to 1 decimal, half up, computed exactly (no float on the way).
    Counts (non-negative ints) take integer arithmetic, `round1_tenths`: a dashboard rounds some
    hundred of them, and Decimal division cost a tenth of an uncached dashboard."""
    if type(numerator) is int and type(denominator) is int and numerator >= 0 \
            and denominator > 0:
        return tenths(round1_tenths(numerator, denominator))
    return (Decimal(numerator) / Decimal(denominator)).quantize(ONE_DECIMAL, ROUND_HALF_UP)


def round1_tenths(numerator: int, denominator: int) -> int:
    """`round1` in tenths, for numerator >= 0 and denominator > 0: floor(10 n / d + 1/2)."""
    return (20 * numerator + denominator) // (2 * denominator)


_TENTHS = tuple(Decimal(i).scaleb(-1) for i in range(10_001))  # 0.0 ... 1000.0


def tenths(count: int) -> Decimal:
    """`count` tenths as the Decimal `round1` gives (one decimal place: 12.3, 0.0)."""
    return _TENTHS[count] if 0 <= count <= 10_000 else Decimal(count).scaleb(-1)


# -- weeks and months -------------------------------------------------------------------------

def week_start(day: date) -> date:
    """The Monday of `day`'s ISO week."""
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    """The first of the month `months` after (or before) `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


# -- buckets ----------------------------------------------------------------------------------

def bucket_start(period: str, day: date) -> date:
    """The label of the bucket holding `day`: the day, its week's Monday or its month's 1st."""
    if period == "WEEK":
        return week_start(day)
    if period == "MONTH":
        return month_start(day)
    return day


def next_bucket(period: str, start: date) -> date:
    """The start of the bucket after the one that starts at `start`."""
    if period == "WEEK":
        return start + timedelta(weeks=1)
    if period == "MONTH":
        return add_months(start, 1)
    return start + timedelta(days=1)


def add_buckets(period: str, start: date, count: int) -> date:
    """The start of the bucket `count` buckets after (or before) the one holding `start`."""
    if period == "WEEK":
        return week_start(start) + timedelta(weeks=count)
    if period == "MONTH":
        return add_months(start, count)
    return start + timedelta(days=count)


def bucket_count(period: str, d_from: date, d_to: date) -> int:
    """How many buckets of `period` the local days [d_from, d_to] overlap."""
    if period == "WEEK":
        return (week_start(d_to) - week_start(d_from)).days // 7 + 1
    if period == "MONTH":
        return (d_to.year - d_from.year) * 12 + d_to.month - d_from.month + 1
    return (d_to - d_from).days + 1


# -- ranges -----------------------------------------------------------------------------------

def default_from(period: str, to: date) -> date:
    """The start of the default range ending at `to`: the first day of the bucket
    `DEFAULT_WINDOW[period] - 1` buckets before `to`'s (30 days, 12 weeks or 12 months)."""
    period = period if period in DEFAULT_WINDOW else "DAY"
    return add_buckets(period, to, 1 - DEFAULT_WINDOW[period])


def default_range(period: str, today: date) -> tuple[date, date]:
    """The range a field covers when neither `from` nor `to` is given."""
    return default_from(period, today), today


def resolve_range(period: str, d_from: date | None, d_to: date | None,
                  today: date) -> tuple[date, date]:
    """The effective [from, to]: `to` defaults to today, `from` to the default window ending at
    `to`. BAD_USER_INPUT (naming `from`) when from is after to or the range spans more than
    `MAX_BUCKETS` buckets of the period."""
    d_to = d_to or today
    d_from = d_from or default_from(period, d_to)
    if d_from > d_to:
        raise BadUserInput("from must not be after to", field="from")
    if bucket_count(period, d_from, d_to) > MAX_BUCKETS:
        raise BadUserInput(f"the range spans more than {MAX_BUCKETS} "
                           f"{period.lower()}s", field="from")
    return d_from, d_to


def seconds_to_midnight(timezone: str, now: datetime | None = None) -> float:
    """Seconds from `now` to the next local midnight in `timezone`."""
    zone = ZoneInfo(timezone)
    local = (now or datetime.now(zone)).astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
    # Timestamps, not `midnight - local`: Python subtracts two datetimes of one zone on the wall
    # clock, which is an hour off across a DST change.
    return max(0.0, midnight.timestamp() - local.timestamp())
