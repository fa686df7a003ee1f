"""The pure part of `make bench`: results, ratios to baselines, targets, the table and the JSON.

No I/O beyond writing the result file, so that `tests/test_bench_report.py` can check it quickly.
Latencies are kept in milliseconds, memory in MiB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One measured scenario at one concurrency level on one dataset."""

    scenario: str                      # e.g. "dashboard cold"
    users: int                         # dataset size
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    statements_per_request: float | None = None  # pg_stat_statements calls / requests
    queries_per_request: float | None = None     # the same without the pool's reset statements
    peak_rss_mib: float | None = None  # of the process that served the scenario
    baseline: str | None = None        # the scenario this one is compared with
    rps_ratio: float | None = None     # rps / baseline rps
    p50_ratio: float | None = None     # p50 / baseline p50
    skipped: str | None = None         # why it did not run
    kind: str = "graphql"              # graphql, baseline, peer
    # user+sys CPU per request of the serving process (its process group) and of PostgreSQL
    # (the bench cluster's processes) over the run, in ms (None when it could not be read).
    cpu_ms_per_request: float | None = None
    pg_cpu_ms_per_request: float | None = None
    peer: str | None = None            # the peer's equivalent scenario (PEER_SCENARIOS)
    peer_rps_ratio: float | None = None  # rps / the peer's rps


@dataclass
class Job:
    """One timed piece of batch work (seeding, aggregation)."""

    name: str
    users: int
    seconds: float
    rows: int
    skipped: str | None = None

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and not self.skipped else None


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: could not be measured


@dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The cost of tracing (tracing_costs) and what the OTLP sink received per traced run.
    tracing: dict[str, Any] = field(default_factory=dict)
    # The live subscription scenarios' details (bench/live.py): writer, delays, memory.
    live: dict[str, Any] = field(default_factory=dict)
    # The peers measured beside the gateway (BENCH_PEERS, bench/peers/): versions, how they
    # were asked, and the comparisons of peer_comparisons.
    peers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "runs": [asdict(r) for r in self.runs],
            "jobs": [{**asdict(j), "rows_per_second": j.rows_per_second} for j in self.jobs],
            "targets": [asdict(t) for t in self.targets],
            "tracing": self.tracing,
            "live": self.live,
            "peers": self.peers,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        jobs = [Job(**{k: v for k, v in j.items() if k != "rows_per_second"})
                for j in data.get("jobs", [])]
        return cls(machine=data.get("machine", {}), config=data.get("config", {}),
                   runs=[Run(**r) for r in data.get("runs", [])], jobs=jobs,
                   targets=[Target(**t) for t in data.get("targets", [])],
                   notes=list(data.get("notes", [])), tracing=dict(data.get("tracing", {})),
                   live=dict(data.get("live", {})), peers=dict(data.get("peers", {})))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")


@dataclass(frozen=True)
class TracingLevel:
    """One sampling setting of the tracing scenarios and its throughput-cost goal."""

    label: str          # "10%"
    sampler: str        # OTEL_TRACES_SAMPLER
    sampler_arg: str    # OTEL_TRACES_SAMPLER_ARG ("" for none)
    max_cost: float     # the goal: at most this fraction of the untraced throughput lost


TRACING_LEVELS = (
    TracingLevel("10%", "parentbased_traceidratio", "0.1", 0.05),
    TracingLevel("100%", "parentbased_always_on", "", 0.15),
)
# The dashboard scenarios measured with and without tracing: (cache mode, how the report says it).
TRACING_MODES = (("warm", "cached"), ("cold", "uncached"))


def tracing_scenario(mode: str, level: str | None) -> str:
    """'dashboard warm, tracing 10%'; level None: the same server without tracing, measured next
    to the traced runs."""
    return f"dashboard {mode}, tracing {level or 'off'}"


# Each traced scenario is compared with the untraced one measured beside it.
TRACING_BASELINES = {tracing_scenario(mode, level.label): tracing_scenario(mode, None)
                     for mode, _ in TRACING_MODES for level in TRACING_LEVELS}


# The live subscription scenarios (bench/live.py) and the targets for them: a write's push
# within 250 ms (p99) under 1,000 subscriptions on 2 processes, and 10,000 idle subscriptions held
# by one process in under 500 MiB. A run at a smaller scale (BENCH_QUICK) is shown, not judged.
LIVE_LATENCY = "live push latency"
LIVE_IDLE = "live idle subscriptions"
LIVE_LATENCY_GOAL_MS = 250.0
LIVE_LATENCY_SUBSCRIPTIONS = 1000
LIVE_IDLE_GOAL_MIB = 500.0
LIVE_IDLE_SUBSCRIPTIONS = 10_000


def live_targets(runs: Sequence[Run], main_users: int) -> list[Target]:
    """The two live targets. In a live run, `concurrency` is the number of subscriptions (open,
    or asked for when it failed) and `requests` the delays measured (latency) or the
    subscriptions held (idle). Not measured when the scenario did not run or ran smaller than the
    target's scale; missed when writes never reached their subscriber or subscriptions failed."""
    targets = []
    found = _find(runs, LIVE_LATENCY, main_users)
    latency = found[-1] if found else None
    goal = f"p99 <= {LIVE_LATENCY_GOAL_MS:g} ms at {LIVE_LATENCY_SUBSCRIPTIONS} subscriptions"
    met: bool | None = None
    measured = "n/a"
    if latency is not None:
        measured = (f"p50 {_fmt(latency.p50_ms, ' ms')}, p99 {_fmt(latency.p99_ms, ' ms')} at "
                    f"{latency.concurrency} subscriptions, {latency.errors} errors")
        if latency.concurrency >= LIVE_LATENCY_SUBSCRIPTIONS and latency.p99_ms is not None:
            met = latency.p99_ms <= LIVE_LATENCY_GOAL_MS and latency.errors == 0
    targets.append(Target("live: write to push latency (2 API processes)", goal, measured, met))
    found = _find(runs, LIVE_IDLE, main_users)
    idle = found[-1] if found else None
    goal = f"{LIVE_IDLE_SUBSCRIPTIONS} held, RSS < {LIVE_IDLE_GOAL_MIB:g} MiB"
    met = None
    measured = "n/a"
    if idle is not None:
        measured = (f"{idle.requests} of {idle.concurrency} held, peak RSS "
                    f"{_fmt(idle.peak_rss_mib, ' MiB', 0)}, {idle.errors} errors")
        if idle.concurrency >= LIVE_IDLE_SUBSCRIPTIONS and idle.peak_rss_mib is not None:
            met = (idle.requests >= LIVE_IDLE_SUBSCRIPTIONS and idle.errors == 0
                   and idle.peak_rss_mib < LIVE_IDLE_GOAL_MIB)
    targets.append(Target("live: idle subscriptions in one process", goal, measured, met))
    return targets


def parse_wrk(summary: dict[str, Any], graphql_errors: int = 0) -> dict[str, Any]:
    """The figures of one wrk run from the JSON that `wrk.lua`'s `done()` prints.

    wrk reports latencies in microseconds and counts socket errors and non-2xx/3xx answers
    separately; a GraphQL error arrives with 200 and is counted by the script.
    """
    requests = int(summary["requests"])
    seconds = float(summary["duration_us"]) / 1e6
    errors = (int(summary.get("connect", 0)) + int(summary.get("read", 0))
              + int(summary.get("write", 0)) + int(summary.get("timeout", 0))
              + int(summary.get("status", 0)) + int(summary.get("graphql_errors", 0))
              + graphql_errors)

    def ms(key: str) -> float | None:
        value = summary.get(key)
        return round(float(value) / 1000, 2) if value is not None and requests else None

    return {
        "requests": requests,
        "seconds": round(seconds, 2),
        "rps": round(requests / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": ms("p50"),
        "p95_ms": ms("p95"),
        "p99_ms": ms("p99"),
        "errors": errors,
    }


def apply_baselines(runs: Sequence[Run], baselines: dict[str, str]) -> None:
    """Fill each GraphQL run's ratios from the baseline run of the same dataset and concurrency.

    `baselines` maps a scenario to its baseline scenario. A ratio needs figures on both sides;
    otherwise it stays None.
    """
    for run in runs:
        if run.scenario in baselines and not run.skipped:
            run.baseline = baselines[run.scenario]
    for run, base in _counterparts(runs, baselines):
        if base.rps > 0:
            run.rps_ratio = round(run.rps / base.rps, 3)
        if run.p50_ms is not None and base.p50_ms:
            run.p50_ratio = round(run.p50_ms / base.p50_ms, 2)


def _counterparts(runs: Sequence[Run], names: dict[str, str]) -> list[tuple[Run, Run]]:
    """Each run that `names` maps to another scenario, with that scenario's run of the same
    dataset and concurrency (when it ran)."""
    index = {(r.scenario, r.users, r.concurrency): r for r in runs if not r.skipped}
    pairs = []
    for run in runs:
        other_name = names.get(run.scenario)
        if other_name is None or run.skipped:
            continue
        other = index.get((other_name, run.users, run.concurrency))
        if other is not None:
            pairs.append((run, other))
    return pairs


# Each gateway scenario that has a peer's equivalent (bench/peers/), measured in the same run.
PEER_SCENARIOS = {"overview cold": "postgraphile overview"}


def apply_peers(runs: Sequence[Run], peers: dict[str, str]) -> None:
    """Fill each gateway run's throughput ratio to its peer's equivalent run of the same dataset
    and concurrency (`peers` maps a scenario to the peer's); None without figures on both sides.
    """
    for run in runs:
        if run.scenario in peers and not run.skipped:
            run.peer = peers[run.scenario]
    for run, other in _counterparts(runs, peers):
        if other.rps > 0:
            run.peer_rps_ratio = round(run.rps / other.rps, 3)


def _total_cpu(run: Run) -> float | None:
    if run.cpu_ms_per_request is None or run.pg_cpu_ms_per_request is None:
        return None
    return round(run.cpu_ms_per_request + run.pg_cpu_ms_per_request, 3)


def peer_comparisons(runs: Sequence[Run], peers: dict[str, str]) -> list[dict[str, Any]]:
    """For each gateway run that has a measured peer run beside it: both throughputs, their
    ratio, and the CPU per request of each side (its server, PostgreSQL, both)."""
    index = {(r.scenario, r.users, r.concurrency): r for r in runs if not r.skipped}
    found = []
    for run in runs:
        peer_name = peers.get(run.scenario)
        other = index.get((peer_name or "", run.users, run.concurrency))
        if peer_name is None or run.skipped or other is None:
            continue
        found.append({
            "scenario": run.scenario, "peer": peer_name, "users": run.users,
            "concurrency": run.concurrency, "rps": run.rps, "peer_rps": other.rps,
            "rps_ratio": round(run.rps / other.rps, 3) if other.rps > 0 else None,
            "cpu_ms": run.cpu_ms_per_request, "peer_cpu_ms": other.cpu_ms_per_request,
            "pg_cpu_ms": run.pg_cpu_ms_per_request,
            "peer_pg_cpu_ms": other.pg_cpu_ms_per_request,
            "total_cpu_ms": _total_cpu(run), "peer_total_cpu_ms": _total_cpu(other)})
    return found


def cpu_notes(runs: Sequence[Run], scenarios: Sequence[str]) -> list[str]:
    """One line per dataset and concurrency: the CPU per request of each of `scenarios` (the
    serving process, PostgreSQL, their sum), the figure that compares servers sharing one
    machine's cores."""
    lines = []
    keys = sorted({(r.users, r.concurrency) for r in runs
                   if r.scenario in scenarios and not r.skipped})
    for users, concurrency in keys:
        parts = []
        for scenario in scenarios:
            found = _find(runs, scenario, users, concurrency)
            if not found:
                continue
            run = found[-1]
            parts.append(f"{scenario} {_fmt(run.cpu_ms_per_request, ' ms', 2)} + PostgreSQL "
                         f"{_fmt(run.pg_cpu_ms_per_request, ' ms', 2)} = "
                         f"{_fmt(_total_cpu(run), ' ms', 2)}")
        lines.append(f"CPU per request (user+sys), {users} users, c={concurrency}: "
                     + "; ".join(parts))
    return lines


def _find(runs: Iterable[Run], scenario: str, users: int | None = None,
          concurrency: int | None = None) -> list[Run]:
    return [r for r in runs if r.scenario == scenario and not r.skipped
            and (users is None or r.users == users)
            and (concurrency is None or r.concurrency == concurrency)]


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def evaluate_targets(runs: Sequence[Run], jobs: Sequence[Job], main_users: int
                     ) -> list[Target]:
    """The issue's targets, judged on the main dataset. A target whose scenario did not run is
    reported as not measured (None), never as met."""
    targets: list[Target] = []

    def lowest_c(scenario: str) -> Run | None:
        found = sorted(_find(runs, scenario, main_users), key=lambda r: r.concurrency)
        return found[0] if found else None

    def highest_c(scenario: str) -> Run | None:
        found = sorted(_find(runs, scenario, main_users), key=lambda r: r.concurrency)
        return found[-1] if found else None

    cold = lowest_c("dashboard cold")
    targets.append(Target("uncached dashboard p50", "<= 15 ms",
                          _fmt(cold.p50_ms if cold else None, " ms"),
                          None if cold is None or cold.p50_ms is None else cold.p50_ms <= 15))
    warm_hi = highest_c("dashboard warm")
    ratio = warm_hi.rps_ratio if warm_hi else None
    targets.append(Target("cached dashboard throughput vs bare Redis endpoint", ">= 50%",
                          _fmt(ratio * 100 if ratio is not None else None, "%", 0)
                          + (f" at c={warm_hi.concurrency}" if warm_hi else ""),
                          None if ratio is None else ratio >= 0.5))
    warm = lowest_c("dashboard warm")
    speedup = (cold.p50_ms / warm.p50_ms if cold and warm and cold.p50_ms and warm.p50_ms
               else None)
    targets.append(Target("cached dashboard p50 vs uncached", ">= 5x faster",
                          _fmt(speedup, "x"), None if speedup is None else speedup >= 5))
    admin = lowest_c("admin cold")
    targets.append(Target("admin query (100 users) uncached p50", "<= 60 ms",
                          _fmt(admin.p50_ms if admin else None, " ms"),
                          None if admin is None or admin.p50_ms is None
                          else admin.p50_ms <= 60))
    dash_sql = cold.queries_per_request if cold else None
    admin_sql = admin.queries_per_request if admin else None
    targets.append(Target(
        "SQL statements per request independent of users asked for",
        "admin (100 users) <= dashboard (1 user) + 2",
        f"dashboard {_fmt(dash_sql)}, admin {_fmt(admin_sql)}",
        None if dash_sql is None or admin_sql is None else admin_sql <= dash_sql + 2))
    measured = [r for r in runs if not r.skipped and r.kind == "graphql"]
    errors = sum(r.errors for r in measured)
    targets.append(Target("no errors under load", "0", str(errors),
                          None if not measured else errors == 0))
    rss = [r.peak_rss_mib for r in measured if r.kind == "graphql" and r.peak_rss_mib]
    peak = max(rss) if rss else None
    targets.append(Target("API RSS", "< 200 MiB", _fmt(peak, " MiB"),
                          None if peak is None else peak < 200))
    for name, goal_s in (("aggregate one day", 5.0), ("backfill 365 days", 120.0)):
        job = next((j for j in jobs if j.name == name and j.users == main_users
                    and not j.skipped), None)
        targets.append(Target(f"{name} ({main_users} users)", f"< {goal_s:g} s",
                              _fmt(job.seconds if job else None, " s"),
                              None if job is None else job.seconds < goal_s))
    sizes = sorted({r.users for r in _find(runs, "dashboard cold")})
    if len(sizes) >= 2:
        small = sorted(_find(runs, "dashboard cold", sizes[0]), key=lambda r: r.concurrency)
        large = sorted(_find(runs, "dashboard cold", sizes[-1]), key=lambda r: r.concurrency)
        if small and large and small[0].p50_ms and large[0].p50_ms:
            growth = large[0].p50_ms / small[0].p50_ms
            figure = _fmt(growth, "x", 2)
            # The datasets run minutes apart; the bare Redis endpoint costs the same whatever the
            # data, so dividing by it takes out how busy the machine was at each time.
            floor_small = _find(runs, "baseline redis dashboard", sizes[0], small[0].concurrency)
            floor_large = _find(runs, "baseline redis dashboard", sizes[-1], large[0].concurrency)
            if floor_small and floor_large and floor_small[0].p50_ms and floor_large[0].p50_ms:
                growth = growth * floor_small[0].p50_ms / floor_large[0].p50_ms
                figure += f" raw, {growth:.2f}x relative to the bare Redis endpoint"
            targets.append(Target(
                f"uncached dashboard p50 flat from {sizes[0]} to {sizes[-1]} users",
                "<= 1.5x", figure, growth <= 1.5))
    targets += fast_path_targets(runs, main_users)
    targets += tracing_targets(runs, main_users)
    targets += live_targets(runs, main_users)
    return targets


def fast_path_targets(runs: Sequence[Run], main_users: int) -> list[Target]:
    """Issue 15's targets ("at the floor"), on the main dataset: the ratios at every concurrency
    of 16 or more (the worst one counts), the admin page's p50 at the lowest concurrency."""
    targets: list[Target] = []

    def busy(scenario: str) -> list[Run]:
        return [r for r in _find(runs, scenario, main_users) if r.concurrency >= 16]

    def worst_ratio(label: str, scenario: str, goal: float) -> None:
        found = [r for r in busy(scenario) if r.rps_ratio is not None]
        worst = min(found, key=lambda r: r.rps_ratio or 0.0) if found else None
        ratio = worst.rps_ratio if worst else None
        targets.append(Target(label, f">= {goal:.0%}",
                              _fmt(ratio * 100 if ratio is not None else None, "%", 1)
                              + (f" at c={worst.concurrency}" if worst else ""),
                              None if ratio is None else ratio >= goal))

    worst_ratio("uncached overview throughput vs its bare SQL endpoint", "overview cold", 0.6)
    cold = busy("dashboard cold")
    statements = max((r.queries_per_request for r in cold
                      if r.queries_per_request is not None), default=None)
    targets.append(Target("uncached dashboard SQL statements per request", "<= 2",
                          _fmt(statements), None if statements is None else statements <= 2.05))
    pg = [r.pg_cpu_ms_per_request for r in cold if r.pg_cpu_ms_per_request is not None]
    targets.append(Target("uncached dashboard PostgreSQL CPU per request", "<= 1 ms",
                          _fmt(max(pg) if pg else None, " ms", 2),
                          None if not pg else max(pg) <= 1.0))
    worst_ratio("uncached dashboard throughput vs its bare SQL endpoint", "dashboard cold", 0.6)
    worst_ratio("cached dashboard throughput vs bare Redis endpoint (issue 15)",
                "dashboard warm", 0.7)
    for scenario, goal in (("admin cold", 15.0), ("admin warm", 5.0)):
        found = sorted(_find(runs, scenario, main_users), key=lambda r: r.concurrency)
        p50 = found[0].p50_ms if found else None
        kind = "uncached" if scenario == "admin cold" else "cached"
        targets.append(Target(f"admin users(first: 100) with overviews, {kind} p50",
                              f"<= {goal:g} ms", _fmt(p50, " ms"),
                              None if p50 is None else p50 <= goal))
    compared = [r for r in _find(runs, "overview cold", main_users)
                if r.peer_rps_ratio is not None]
    judged = [r for r in compared if r.concurrency >= 16]  # as the other ratios
    if judged:  # only with BENCH_PEERS: no peer, no target
        worst = min(judged, key=lambda r: r.peer_rps_ratio or 0.0)
        peer = _find(runs, worst.peer or "", main_users, worst.concurrency)
        ours, theirs = _total_cpu(worst), _total_cpu(peer[0]) if peer else None
        cheaper = ours is not None and theirs is not None and ours < theirs
        # The lower concurrencies are shown beside, not judged: one request at a time shares
        # no statement with another (loaders/analytics.py, Coalescer).
        beside = "".join(f"; {_fmt(r.peer_rps_ratio, 'x', 2)} at c={r.concurrency}"
                         for r in sorted(compared, key=lambda r: r.concurrency)
                         if r.concurrency < 16)
        targets.append(Target(
            f"uncached overview vs {worst.peer} (c >= 16)",
            ">= 2x throughput, less CPU per request",
            f"{_fmt(worst.peer_rps_ratio, 'x', 2)} at c={worst.concurrency}, CPU "
            f"{_fmt(ours, ' ms', 2)} vs {_fmt(theirs, ' ms', 2)}{beside}",
            (worst.peer_rps_ratio or 0.0) >= 2 and cheaper))
    return targets


def merge_runs(parts: Sequence[Run], scenario: str | None = None) -> Run:
    """Several runs of one scenario (rounds measured at different moments) as one: requests,
    seconds and errors added, throughput over the whole, latency percentiles and SQL per request
    averaged weighted by requests (an approximation: percentiles do not add up), peak RSS the
    highest. Skipped parts are left out; all skipped gives the first part's skip."""
    measured = [r for r in parts if not r.skipped]
    if not measured:
        return replace(parts[0], scenario=scenario or parts[0].scenario)
    first = measured[0]
    requests = sum(r.requests for r in measured)
    seconds = sum(r.seconds for r in measured)

    def weighted(values: list[tuple[float | None, int]], digits: int = 2) -> float | None:
        known = [(v, n) for v, n in values if v is not None]
        weight = sum(n for _, n in known)
        if not known or not weight:
            return None
        return round(sum(v * n for v, n in known) / weight, digits)

    rss = [r.peak_rss_mib for r in measured if r.peak_rss_mib is not None]
    return Run(
        scenario or first.scenario, first.users, first.concurrency, requests=requests,
        seconds=round(seconds, 2), rps=round(requests / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=weighted([(r.p50_ms, r.requests) for r in measured]),
        p95_ms=weighted([(r.p95_ms, r.requests) for r in measured]),
        p99_ms=weighted([(r.p99_ms, r.requests) for r in measured]),
        errors=sum(r.errors for r in measured),
        statements_per_request=weighted([(r.statements_per_request, r.requests)
                                         for r in measured]),
        queries_per_request=weighted([(r.queries_per_request, r.requests) for r in measured]),
        cpu_ms_per_request=weighted([(r.cpu_ms_per_request, r.requests) for r in measured],
                                    4),
        pg_cpu_ms_per_request=weighted([(r.pg_cpu_ms_per_request, r.requests)
                                        for r in measured], 3),
        peak_rss_mib=max(rss) if rss else None, kind=first.kind)


def tracing_costs(runs: Sequence[Run], main_users: int) -> dict[str, Any]:
    """Per sampling level, the throughput of the cached and uncached dashboard with tracing as a
    ratio to the same scenario without tracing (measured beside it: apply_baselines), and the
    cost, 1 - ratio. A mode that did not run has None."""
    costs: dict[str, Any] = {}
    for level in TRACING_LEVELS:
        entry: dict[str, Any] = {"sampler": level.sampler, "sampler_arg": level.sampler_arg,
                                 "max_cost": level.max_cost}
        for mode, name in TRACING_MODES:
            found = sorted(_find(runs, tracing_scenario(mode, level.label), main_users),
                           key=lambda r: r.concurrency)
            run = found[-1] if found else None
            ratio = run.rps_ratio if run else None
            untraced = _find(runs, tracing_scenario(mode, None), main_users,
                             run.concurrency) if run else []
            cpu = run.cpu_ms_per_request if run else None
            cpu_untraced = untraced[0].cpu_ms_per_request if untraced else None
            entry[name] = {
                "concurrency": run.concurrency if run else None,
                "rps": run.rps if run else None,
                "rps_untraced": (round(run.rps / ratio, 1) if run and ratio else None),
                "ratio": ratio,
                "cost": None if ratio is None else round(1 - ratio, 3),
                "p50_ratio": run.p50_ratio if run else None,
                # The API's CPU per request (user + sys, over the rounds), traced and not: the
                # throughput a CPU-bound server loses is 1 - untraced / traced, a figure that
                # the other processes sharing the machine move far less than req/s.
                "cpu_ms": cpu, "cpu_ms_untraced": cpu_untraced,
                "cpu_cost": (round(1 - cpu_untraced / cpu, 3)
                             if cpu and cpu_untraced else None),
            }
        costs[level.label] = entry
    return costs


def tracing_targets(runs: Sequence[Run], main_users: int) -> list[Target]:
    """'tracing at 10% sampling: throughput cost' and the same at 100%: met when both the
    cached and the uncached dashboard lose at most the goal; not measured unless both ran (or
    one already misses)."""
    targets = []
    for label, entry in tracing_costs(runs, main_users).items():
        parts, verdicts, concurrency = [], [], set()
        for _, name in TRACING_MODES:
            cost = entry[name]["cost"]
            parts.append(f"{name} {_fmt(None if cost is None else cost * 100, '%', 1)}")
            if cost is not None:
                verdicts.append(cost <= entry["max_cost"])
                concurrency.add(entry[name]["concurrency"])
        ratios = ", ".join(_fmt(entry[name]["ratio"], "", 3) for _, name in TRACING_MODES)
        measured = ", ".join(parts)
        if verdicts:
            measured += f" (traced/untraced req/s {ratios})"
            measured += "".join(f" at c={c}" for c in sorted(concurrency))
            by_cpu = [entry[name]["cpu_cost"] for _, name in TRACING_MODES]
            if all(cost is not None for cost in by_cpu):
                measured += "; by API CPU per request " + ", ".join(
                    f"{name} {_fmt(cost * 100, '%', 1)}"
                    for (_, name), cost in zip(TRACING_MODES, by_cpu, strict=True))
        met: bool | None
        if False in verdicts:
            met = False
        elif len(verdicts) == len(TRACING_MODES):
            met = True
        else:
            met = None
        targets.append(Target(f"tracing at {label} sampling: throughput cost",
                              f"<= {entry['max_cost'] * 100:g}%", measured, met))
    return targets


COLUMNS = ("scenario", "users", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
           "SQL/req", "RSS MiB", "vs baseline (req/s, p50)")
# SQL/req shows "queries (statements)": statements include the pool's per-release reset.


def _ratio_text(run: Run) -> str:
    if run.baseline is None:
        text = ""
    elif run.rps_ratio is None and run.p50_ratio is None:
        text = f"{run.baseline}: n/a"
    else:
        text = (f"{_fmt(run.rps_ratio * 100 if run.rps_ratio is not None else None, '%', 0)}, "
                f"{_fmt(run.p50_ratio, 'x', 2)} of {run.baseline}")
    if run.peer is not None:  # the throughput ratio to the peer's equivalent, beside it
        text += f"{'; ' if text else ''}{_fmt(run.peer_rps_ratio, 'x', 2)} req/s of {run.peer}"
    return text


def _sql_text(run: Run) -> str:
    if run.queries_per_request is None:
        return _fmt(run.statements_per_request, "", 1)
    return (f"{_fmt(run.queries_per_request, '', 1)} "
            f"({_fmt(run.statements_per_request, '', 1)})")


def run_rows(runs: Sequence[Run]) -> list[list[str]]:
    rows = []
    for r in runs:
        if r.skipped:
            rows.append([r.scenario, str(r.users), str(r.concurrency), "skipped: " + r.skipped,
                         *[""] * (len(COLUMNS) - 4)])
            continue
        rows.append([r.scenario, str(r.users), str(r.concurrency), _fmt(r.rps, "", 0),
                     _fmt(r.p50_ms, "", 2), _fmt(r.p95_ms, "", 2), _fmt(r.p99_ms, "", 2),
                     str(r.errors), _sql_text(r),
                     _fmt(r.peak_rss_mib, "", 0), _ratio_text(r)])
    return rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
                 ) -> str:
    """A plain-text (aligned) or Markdown table. Skipped rows keep their reason in one cell."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [len(h) for h in header]
    for row in rows:
        if row[3].startswith("skipped: "):
            continue
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        if row[3].startswith("skipped: "):
            out.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=False))
                       + "  " + row[3])
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def job_rows(jobs: Sequence[Job]) -> list[list[str]]:
    return [[j.name, str(j.users), "skipped: " + j.skipped if j.skipped else _fmt(j.seconds, " s"),
             "" if j.skipped else f"{j.rows:,}",
             "" if j.skipped else _fmt(j.rows_per_second, "", 0)] for j in jobs]


def target_rows(targets: Sequence[Target]) -> list[list[str]]:
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    return [[t.name, t.goal, t.measured, verdict[t.met]] for t in targets]


def render(report: Report, markdown: bool = False) -> str:
    """The whole report as text: scenarios, batch jobs, targets."""
    parts = [format_table(COLUMNS, run_rows(report.runs), markdown)]
    if report.jobs:
        parts.append(format_table(("job", "users", "time", "rows", "rows/s"),
                                  job_rows(report.jobs), markdown))
    if report.targets:
        parts.append(format_table(("target", "goal", "measured", "verdict"),
                                  target_rows(report.targets), markdown))
    if report.notes:
        parts.append("\n".join(f"- {note}" for note in report.notes))
    return "\n\n".join(parts)
