"""Service-level fields: what any client may ask without signing in."""

from __future__ import annotations

import strawberry

from resolvers.context import Info


@strawberry.type
class SystemQuery:
    @strawberry.field(description="The gateway's version (APP_VERSION).")
    def version(self, info: Info) -> str:
        return info.context.resources.settings.app_version
