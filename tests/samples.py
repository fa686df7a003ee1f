"""The process's Prometheus samples, as the tests read them (the app under test runs in the
same process, so its metrics are this registry's)."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The sample's value so far; 0 when it has none yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def statements_run(names: tuple[str, ...]) -> dict[str, float]:
    """How many times each named SQL statement (sql/queries/) has run in this process so far."""
    return {name: sample("analytics_db_query_duration_seconds_count", query_type=name)
            for name in names}
