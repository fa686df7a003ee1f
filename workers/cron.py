"""Cron strings from the settings, turned into the keyword arguments of arq's `cron()`.

arq schedules with sets of allowed values per field (month, day, weekday, hour, minute) and
matches a time when *every* field matches. Classic cron does the same except for one rule: when
both day-of-month and day-of-week are restricted, a time matches if *either* does. arq cannot say
that, so such an expression is refused rather than silently run on fewer days than written.

Supported: five fields `minute hour day-of-month month day-of-week`, each `*`, a number, a name
(`jan`..`dec`, `sun`..`sat`), a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, and comma lists of
these; day-of-week 0 and 7 are Sunday. Also `@yearly`/`@annually`, `@monthly`, `@weekly`,
`@daily`/`@midnight` and `@hourly`. Not supported: `@reboot`, `L`, `W`, `#`, `?`, seconds fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.ops.settings import SettingsError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the number of names[0]


# In cron's order. Day-of-week allows 7 as a second Sunday.
FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("weekday", 0, 7, WEEKDAYS, 0),
)


class CronError(ValueError):
    """A cron string this module cannot turn into arq arguments."""


def _value(token: str, spec: _Field) -> int:
    lowered = token.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + spec.name_base
    if not token.isdigit():
        raise CronError(f"{spec.name}: {token!r} is not a number")
    value = int(token)
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.name}: {value} is outside {spec.low}..{spec.high}")
    return value


def _parse_field(text: str, spec: _Field) -> set[int] | None:
    """The allowed values of one field, or None for "every value" (`*`, `*/1`)."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{spec.name}: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{spec.name}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            if step == 1 and len(text.split(",")) == 1:
                return None
            start, end = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, spec), _value(last, spec)
            if start > end:
                raise CronError(f"{spec.name}: range {base!r} runs backwards")
        else:
            start = _value(base, spec)
            end = spec.high if slash else start
        values.update(range(start, end + 1, step))
    return values


def _arq_weekdays(cron_days: set[int]) -> set[int]:
    """cron counts 0 = Sunday (7 too); arq (like `datetime.weekday()`) counts 0 = Monday."""
    return {(day - 1) % 7 for day in cron_days}


def parse_cron(expression: str) -> dict[str, Any]:
    """`month`, `day`, `weekday`, `hour`, `minute` and `second` for `arq.cron.cron()`.

    A field that allows every value is left out (arq's None), so that arq does not have to test it.
    Raises `CronError` for anything outside the subset described in the module docstring.
    """
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unsupported macro {text!r}")
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day month weekday), got {len(parts)}")
    parsed = {spec.name: _parse_field(part, spec) for part, spec in zip(parts, FIELDS, strict=True)}
    if parsed["day"] is not None and parsed["weekday"] is not None:
        raise CronError("day-of-month and day-of-week both restricted (cron ORs them; arq cannot)")
    if parsed["weekday"] is not None:
        parsed["weekday"] = _arq_weekdays(parsed["weekday"])
        if len(parsed["weekday"]) == 7:
            parsed["weekday"] = None
    kwargs: dict[str, Any] = {name: values for name, values in parsed.items() if values is not None}
    kwargs["second"] = 0
    return kwargs


def cron_arguments(setting_name: str, expression: str) -> dict[str, Any]:
    """`parse_cron` for a setting: an unsupported string becomes a `SettingsError` naming it."""
    try:
        return parse_cron(expression)
    except CronError as exc:
        raise SettingsError(f"{setting_name}: {exc} in {expression!r}") from None
