"""Scalars whose bad input must be a `BAD_USER_INPUT` error, not a bare validation message.

`Date` replaces Strawberry's built-in scalar for `datetime.date` (through `SCALAR_MAP`, passed to
the schema's `StrawberryConfig`), so every `Date` argument of every domain, analytics ranges and
task due dates alike, rejects "2024-13-01" with `extensions.code = BAD_USER_INPUT`.
"""

from __future__ import annotations

import datetime
from typing import Any

import strawberry
from strawberry.types.scalar import ScalarDefinition

from gateway.errors import BadUserInput


def parse_date(value: Any) -> datetime.date:
    """A `YYYY-MM-DD` string as a date; anything else is the client's error."""
    if isinstance(value, str) and len(value) == 10:
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise BadUserInput(f"Expected a date as YYYY-MM-DD, got {value!r}")


def serialize_date(value: datetime.date) -> str:
    return value.isoformat()


Date = strawberry.scalar(name="Date", description="A calendar day, `YYYY-MM-DD`.",
                         serialize=serialize_date, parse_value=parse_date)

SCALAR_MAP: dict[object, ScalarDefinition] = {datetime.date: Date}
