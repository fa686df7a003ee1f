"""`extensions.cache` in a GraphQL response: which fields came from the cache, and how old.

The cached loaders (loaders/cached.py) note their hits, misses and ages in the request's
`context.notes["cache"]`; this extension reports them.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions import SchemaExtension

DEBUG_HEADER = "x-cache-debug"


class CacheExtension(SchemaExtension):
    """Adds `extensions.cache` to a response: per field, whether it came from the cache and how
    old the oldest cached value was. Outside production always; in production only for a request
    with `X-Cache-Debug: 1`. Registered by `schema.schema.build_schema`."""

    def get_results(self) -> dict[str, Any]:
        return cache_report(self.execution_context.context)


def cache_report(context: Any) -> dict[str, Any]:
    """`{"cache": {...}}` for the request of `context`, or `{}` when there is nothing to report
    or the caller may not see it (shared with the compiled plans of schema/compiled.py)."""
    report = getattr(context, "notes", {}).get("cache")
    if not report or not _debug_wanted(context):
        return {}
    return {"cache": {
        field: {"hit": entry["misses"] == 0, "age": _age(entry["age"]),
                "hits": entry["hits"], "misses": entry["misses"]}
        for field, entry in report.items()}}


def _age(age: float | None) -> float | None:
    return None if age is None else round(age, 1)


def _debug_wanted(context: Any) -> bool:
    request = getattr(context, "request", None)
    if request is not None and request.headers.get(DEBUG_HEADER) == "1":
        return True
    resources = getattr(context, "resources", None)
    return resources is not None and not resources.settings.is_production
