"""arq workers: the jobs that keep the rollups, views and caches full.

`arq workers.WorkerSettings` runs a worker; `arq --check workers.WorkerSettings` checks one.
`WorkerSettings` is built on first access (PEP 562 `__getattr__`) rather than at import, so that
importing `workers` (the `jobs` CLI, the API enqueueing a repair) neither reads the settings nor
starts the embedded servers. A bad setting (e.g. an unsupported `AGGREGATION_SCHEDULE`) stops the
process with one line naming it, as the API's entry points do.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["WorkerSettings"]


def __getattr__(name: str) -> Any:
    if name != "WorkerSettings":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from gateway.ops.settings import SettingsError
    from workers.settings import build_worker_settings, load_settings

    try:
        worker_settings = build_worker_settings(load_settings(), configure_logging=True)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["WorkerSettings"] = worker_settings
    return worker_settings
