"""The `User` type and its `Role`, `me`, and the admin `users` connection.

`User` carries the profile fields of docs/api.md and the user's nested analytics
(`overview`, `trends`, `productivity`), which go through the same loaders as the root queries, so a
page of 50 users with their figures costs one statement for all their figures. The accounts work
(issue 4) builds `User` from rows with `User.from_row`.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

import strawberry

from domain.figures import UserRow
from resolvers import analytics as resolve
from resolvers.context import Info
from schema.analytics import (
    FromArg,
    Overview,
    Period,
    Productivity,
    Trends,
    overview_of,
    productivity_of,
    trends_of,
)
from schema.pagination import DEFAULT_PAGE_SIZE, Connection, build_connection


@strawberry.enum
class Role(enum.Enum):
    USER = "user"
    ADMIN = "admin"


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    display_name: str
    timezone: str
    daily_goal: int
    role: Role

    @classmethod
    def from_row(cls, row: Any) -> User:
        """A `User` from a `users` row (id, email, display_name, timezone, daily_goal, role)."""
        return cls(id=strawberry.ID(str(row["id"])), email=row["email"],
                   display_name=row["display_name"], timezone=row["timezone"],
                   daily_goal=row["daily_goal"], role=Role(row["role"]))

    @classmethod
    def from_user(cls, user: UserRow) -> User:
        """A `User` from the analytics' user row (`me`, the user loader)."""
        return cls(id=strawberry.ID(str(user.id)), email=user.email,
                   display_name=user.display_name, timezone=user.timezone,
                   daily_goal=user.daily_goal, role=Role(user.role))

    # The nested figures check access like the root queries do (the caller themselves, or an
    # admin): a `User` reached through another path never leaks another user's analytics.
    @strawberry.field(description="Overview of this user's tasks.")
    async def overview(self, info: Info) -> Overview:
        return await overview_of(info, self.id)

    @strawberry.field(description="Trend buckets over local days [from, to] (default: the last "
                                  "30 days, 12 weeks or 12 months ending today).")
    async def trends(self, info: Info, period: Period = Period.DAY, from_: FromArg = None,
                     to: datetime.date | None = None) -> Trends:
        return await trends_of(info, self.id, period, from_, to)

    @strawberry.field(description="Productivity over local days [from, to] (default: the last "
                                  "30 days ending today).")
    async def productivity(self, info: Info, from_: FromArg = None,
                           to: datetime.date | None = None) -> Productivity:
        return await productivity_of(info, self.id, from_, to)


@strawberry.type
class UsersQuery:
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> User:
        return User.from_user(await resolve.me(info))

    @strawberry.field(description="Every user, oldest first (admins only).")
    async def users(self, info: Info, first: int | None = DEFAULT_PAGE_SIZE,
                    after: str | None = None) -> Connection[User]:
        rows, size = await resolve.users_page(info, first, after)
        return build_connection(rows, size, User.from_row, after=after)
