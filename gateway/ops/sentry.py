"""Error reporting to Sentry when `SENTRY_DSN` is set (`pip install 'analytics-gateway[sentry]'`).

Only what `schema.extensions.errors` masks and what the request middleware catches unhandled is
sent, each tagged with the request id that the client got and the log has. The SDK's automatic
integrations stay off: they would wrap every request (costing time on the hot path) and send
the same exception twice. Nothing is imported or initialised when the DSN is unset.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

_sdk: Any = None  # the sentry_sdk module once initialised; the SDK itself is process-global


def init_sentry(settings: Settings, **options: Any) -> bool:
    """Initialise the SDK; False (and nothing done) without a DSN or without the package."""
    global _sdk
    if not settings.sentry_dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        log.warning("SENTRY_DSN is set but sentry-sdk is not installed; errors are not reported")
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.app_env,
        release=settings.app_version,
        default_integrations=False,
        auto_enabling_integrations=False,  # no PII either: the SDK sends none by default
        traces_sample_rate=0.0,
        **options,
    )
    _sdk = sentry_sdk
    return True


def capture(error: BaseException, request_id: str | None) -> None:
    """Report one exception, tagged with the request id; a no-op unless initialised."""
    if _sdk is None:
        return
    try:
        with _sdk.new_scope() as scope:
            if request_id:
                scope.set_tag("request_id", request_id)
            _sdk.capture_exception(error)
    except Exception:  # reporting must never break the request it reports on
        log.warning("could not report an error to Sentry", exc_info=True)


def close_sentry() -> None:
    """Flush and stop the SDK (graceful shutdown, and tests)."""
    global _sdk
    if _sdk is not None:
        client = _sdk.get_client()
        client.close(timeout=2.0)
        _sdk = None
