"""Process-wide tuning of the Python runtime for a long-running server: the garbage collector.

CPython's cycle collector runs a young-generation pass every 700 net allocations of container
objects, and a full pass over every tracked object whenever the long-lived ones have grown by a
quarter. A server allocates a great many short-lived objects per request (GraphQL execution,
records, dataclasses; almost all freed by reference counting, never by the collector) while it
holds a large, stable heap (modules, the schema, pools, live subscriptions): the default
thresholds then spend the CPU on scanning that heap again and again. Measured with py-spy
(`--native`) on an API process pushing live dashboards: about half of its CPU was
`gc_collect_main`.

`tune_gc()`, once the application is built: `gc.freeze()` moves everything that exists then
(imports, the schema, the application) to the permanent generation, which no collection scans,
and the young generation is collected every `YOUNG_THRESHOLD` allocations instead of 700, so
that a collection finds mostly garbage instead of the requests in flight. Cycles are still
collected; memory held by garbage cycles between collections stays small beside what a request
allocates. docs/performance.md has the figures.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young-generation collections (default 700)
MIDDLE_THRESHOLD = 20     # young collections between middle-generation ones (default 10)
OLD_THRESHOLD = 10        # middle collections before a full one is considered (default 10)


def tune_gc() -> None:
    """Freeze what exists now and space collections out (see the module docstring)."""
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
