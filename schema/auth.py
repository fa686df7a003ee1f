"""Accounts: sign-up, sign-in, token refresh, sign-out and profile changes."""

from __future__ import annotations

import strawberry

from resolvers import auth as resolve
from resolvers.context import Info
from schema.users import User


@strawberry.input
class RegisterInput:
    email: str
    password: str = strawberry.field(description="8 to 128 characters.")
    display_name: str
    timezone: str | None = strawberry.field(default="UTC",
                                            description="An IANA name such as 'Europe/Paris'.")


@strawberry.input(description="Omitted fields are left as they are.")
class ProfileInput:
    display_name: str | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    daily_goal: int | None = strawberry.field(default=strawberry.UNSET,
                                              description="Tasks a day, 1 to 100.")


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str = strawberry.field(
        description="Opaque; use once with refreshToken, which returns the next one.")
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: User

    @classmethod
    def from_session(cls, session: resolve.Session) -> AuthPayload:
        return cls(access_token=session.access_token, refresh_token=session.refresh_token,
                   expires_in=session.expires_in, user=User.from_row(session.user))


@strawberry.type
class AuthMutation:
    @strawberry.mutation(description="Create an account and sign in.")
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        return AuthPayload.from_session(await resolve.register(info, input))

    @strawberry.mutation(description="Sign in; starts a new refresh-token family.")
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        return AuthPayload.from_session(await resolve.login(info, email, password))

    @strawberry.mutation(description="Trade a refresh token for a new token pair. A token used "
                                     "twice revokes its whole family.")
    async def refresh_token(self, info: Info, refresh_token: str) -> AuthPayload:
        return AuthPayload.from_session(await resolve.refresh(info, refresh_token))

    @strawberry.mutation(description="Revoke the refresh token's family (sign out).")
    async def logout(self, info: Info, refresh_token: str) -> bool:
        return await resolve.logout(info, refresh_token)

    @strawberry.mutation(description="Change the caller's display name, timezone or daily goal.")
    async def update_profile(self, info: Info, input: ProfileInput) -> User:
        return User.from_row(await resolve.update_profile(info, input))
