"""Which PostgreSQL and Redis to use: those the settings name, or the embedded ones."""

from __future__ import annotations

import os
from dataclasses import replace

from gateway.dev.embedded import Services, ensure_services
from gateway.ops.settings import Settings, SettingsError


def resolve_services(settings: Settings, *, export: bool = True) -> tuple[Settings, Services]:
    """Fill in `DATABASE_URL` / `REDIS_URL` from the embedded servers where they are unset.

    In production both must be set: nothing is ever started there. With `export`, the URLs are
    also put in `os.environ`, so that child processes (uvicorn workers, the arq worker) use them.
    """
    if settings.is_production:
        for name in ("database_url", "redis_url"):
            if not getattr(settings, name):
                raise SettingsError(f"{name.upper()}: required when APP_ENV=production")
    services = ensure_services(settings.database_url, settings.redis_url)
    settings = replace(settings, database_url=services.database_url, redis_url=services.redis_url)
    if export:
        os.environ["DATABASE_URL"] = services.database_url
        os.environ["REDIS_URL"] = services.redis_url
    return settings, services
