"""Side by side: pgqueue, Procrastinate, PgQueuer, Celery (Redis broker), Graphile Worker and
pg-boss (Node) on the same workloads.

One command installs each Python peer into its own virtualenv (benchmarks/.venvs/<peer>,
created on first use) and the Node peers, with their Node 22, into
benchmarks/peer_apps/node_modules (npm, versions pinned in benchmarks/peer_apps/package.json),
then runs every chosen workload for every chosen library: a fresh database (or
Redis queue) per run, one warm-up run that is not reported where it makes sense, then
`--repeats` runs summarised as median, min and max, every child process bounded in time and
every run that executes jobs checked for exactly-once completion (a run that loses or
duplicates jobs is FAILED, not timed). It prints a table per workload with ratios against
pgqueue and appends JSON lines (versions, PostgreSQL settings, machine) to the results file.
See benchmarks/README.md for the exact definition of every workload.

Usage:
    python benchmarks/peers.py [--workloads drain,drain-2p,enqueue-single,enqueue-bulk,
                                latency,held-xmin,memory] [--only pgqueue,procrastinate,
                                pgqueuer,celery,graphile-fast,graphile,pg-boss] [--repeats 3]
                                [--full] [--held-seconds 60]
    python benchmarks/peers.py --workloads features   # drain-4p,fairness,rate,concurrency,
                                                      # topics,workflow (`all`: every one)
        [--drain-4p-jobs 100000] [--fair-hot 5000 --fair-tenants 50 --fair-small 100]
        [--rate 200 --rate-seconds 30 --rate-processes 2] [--limit N] [--jobs 20000]
        [--subscribers 10 --publishes 1000] [--children 1000]

The feature workloads (benchmarks/features.py) run for the libraries that have the feature,
configured as their documentation says; every other chosen library is listed as n/a with the
reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import features  # noqa: E402
from bench_pgqueue import (  # noqa: E402
    DEFAULT_DSN,
    RESULTS_FILE,
    ROOT,
    Run,
    environment,
    git_state,
    source_fingerprint,
)
from harness import (  # noqa: E402
    PEER_ALIASES,
    PEER_SPECS,
    VENVS,
    HarnessError,
    HeldPlan,
    Library,
    Peer,
    PeerUnavailable,
    Pgqueue,
    Settings,
    drain_run,
    enqueue_run,
    ensure_node,
    ensure_venv,
    guarded,
    held_pair,
    latency_run,
    memory_pair,
    raw_insert_run,
    redis_problem,
    redis_version,
)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: What runs without --workloads (the workloads of issue 5).
BASIC_WORKLOADS = (
    "drain",
    "drain-2p",
    "enqueue-single",
    "enqueue-bulk",
    "latency",
    "held-xmin",
    "memory",
)
#: Issue 17's additions, asked for by name or as `--workloads features` (`all`: everything).
FEATURE_WORKLOADS = ("drain-4p", "fairness", "rate", "concurrency", "topics", "workflow")
WORKLOADS = BASIC_WORKLOADS + FEATURE_WORKLOADS
WORKLOAD_GROUPS = {"features": FEATURE_WORKLOADS, "all": WORKLOADS}
LIBRARIES = ["pgqueue", *(p.name for p in PEER_SPECS)]
#: The default --only: every library but Graphile's default configuration, a slow reference
#: that the fast one supersedes (ask for it by name).
DEFAULT_LIBRARIES = [name for name in LIBRARIES if name != "graphile"]
FULL_DRAIN_JOBS = 100_000


class Floor(Library):
    """The floor: autocommit psycopg INSERTs of a job-shaped row (one round trip, one commit
    each), in the enqueue-single table only."""

    name = "raw INSERT"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.version = f"psycopg {psycopg.__version__}"
        self.versions = {"psycopg": psycopg.__version__}


@dataclass
class Metric:
    key: str
    label: str
    unit: str


@dataclass
class Case:
    """One workload at one size (or mode): a table and one result line per library."""

    workload: str
    jobs: int
    title: str
    main: Metric
    higher_is_better: bool
    run: Callable[[Library], Run]
    params: dict[str, Any]
    warmup: Callable[[Library], Run] | None = None
    no_warmup_reason: str | None = None
    extras: list[Metric] = field(default_factory=list)
    not_applicable: Callable[[Library], str | None] = lambda lib: None
    note: Callable[[list[Run]], str] = lambda runs: ""
    libraries: list[Library] = field(default_factory=list)
    #: Reported runs for this case; None means --repeats.
    repeats: int | None = None
    #: Replaces "higher/lower is better" where neither is (rate accuracy: closest to 1).
    direction: str | None = None
    #: Lines printed under the table (how each library is configured).
    legend: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    library: Library
    status: str  # ok | FAILED | n/a | SKIPPED
    reason: str | None = None
    runs: list[Run] = field(default_factory=list)
    warmup: Run | None = None

    def median(self, key: str) -> float | None:
        summary = summarise(self.runs, key) if self.status == "ok" else {}
        value: float | None = summary.get("median")
        return value


# --- the workloads ---------------------------------------------------------------------------


def summarise(runs: list[Run], key: str) -> dict[str, Any]:
    """Median, min and max of one metric over the good runs that have it (a held-xmin run
    whose backlog ran dry has no ratio for the windows after that)."""
    samples = [r.metrics[key] for r in runs if r.error is None and key in r.metrics]
    if not samples:
        return {"samples": []}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def median_detail(runs: list[Run], key: str) -> float | None:
    values = [r.details[key] for r in runs if r.error is None and r.details.get(key) is not None]
    return statistics.median(values) if values else None


def drain_note(runs: list[Run]) -> str:
    parts = []
    ok = [r for r in runs if r.error is None]
    if ok:
        rss = statistics.median(r.metrics["peak_rss_mib"] for r in ok)
        parts.append(f"RSS {rss:.0f} MiB")
    startup = median_detail(runs, "startup_s")
    if startup is not None:
        parts.append(f"first job after {startup:.2f} s")
    span = median_detail(runs, "first_to_last_jobs_per_s")
    if span is not None:
        parts.append(f"{span:,.0f} jobs/s first-to-last")
    return ", ".join(parts)


class Planner:
    """Builds the cases from the command line; sizes held-xmin backlogs from drain results."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.drain_rates: dict[str, float] = {}
        self.plans: dict[str, HeldPlan] = {}

    def held_plan(self, lib: Library) -> HeldPlan:
        args = self.args
        if lib.name in self.plans:
            return self.plans[lib.name]
        window = min(10.0, args.held_seconds / 2)
        plan = HeldPlan(0, args.held_seconds, window, args.concurrency)
        if args.held_jobs:
            plan.backlog = args.held_jobs
        else:
            rate = self.drain_rates.get(lib.name)
            if rate is None:
                print(f"  held-xmin {lib.name}: sizing drain of {args.jobs} jobs", flush=True)
                sizing = drain_run(lib, args.jobs, args.concurrency, 1)
                if sizing.error:
                    raise HarnessError(f"sizing drain failed: {sizing.error}")
                rate = (
                    sizing.details.get("first_to_last_jobs_per_s") or sizing.metrics["jobs_per_s"]
                )
            plan.backlog = max(
                1_000, min(args.held_max_jobs, math.ceil(rate * plan.duration * 1.5))
            )
        self.plans[lib.name] = plan
        print(f"  held-xmin {lib.name}: backlog {plan.backlog:,} jobs", flush=True)
        return plan

    def cases(self, libraries: list[Library]) -> list[Case]:
        args = self.args
        chosen = args.workload_list
        out: list[Case] = []
        c = args.concurrency
        no_redis = "Celery uses Redis: there is no PostgreSQL horizon to pin"
        for workload, processes in (("drain", 1), ("drain-2p", 2), ("drain-4p", 4)):
            if workload not in chosen:
                continue
            sizes = [args.jobs] + ([FULL_DRAIN_JOBS] if args.full else [])
            if workload == "drain-4p":
                sizes = [args.drain_4p_jobs]
            for jobs in sizes:
                out.append(
                    Case(
                        workload=workload,
                        jobs=jobs,
                        title=f"{workload}: {jobs:,} no-op jobs pre-inserted with the bulk API,"
                        f" {processes} worker process{'es' if processes > 1 else ''} x"
                        f" concurrency {c}; jobs/s from the first worker spawn to the last"
                        " committed completion",
                        main=Metric("jobs_per_s", "jobs/s", "jobs/s"),
                        higher_is_better=True,
                        run=partial(drain_run, jobs=jobs, concurrency=c, processes=processes),
                        warmup=partial(
                            drain_run, jobs=min(jobs, 2_000), concurrency=c, processes=processes
                        ),
                        params={"concurrency": c, "worker_processes": processes},
                        note=drain_note,
                    )
                )
        # Every size is bound into its callable now (partial), never read from a variable
        # that a later block reassigns.
        if "enqueue-single" in chosen:
            n = args.single_jobs
            floor = Floor(self.settings)

            def single(lib: Library, jobs: int) -> Run:
                if isinstance(lib, Floor):
                    return raw_insert_run(args.dsn, jobs)
                return enqueue_run(lib, jobs, bulk=False)

            out.append(
                Case(
                    workload="enqueue-single",
                    jobs=n,
                    title=f"enqueue-single: {n:,} jobs, one transaction (or message) each,"
                    " from one client, timed inside the enqueuing process",
                    main=Metric("jobs_per_s", "jobs/s", "jobs/s"),
                    higher_is_better=True,
                    run=partial(single, jobs=n),
                    warmup=partial(single, jobs=min(n, 200)),
                    params={"transactions": "one per job", "client": "one, sequential"},
                    libraries=[*libraries, floor],
                )
            )
        if "enqueue-bulk" in chosen:
            n = args.bulk_jobs
            out.append(
                Case(
                    workload="enqueue-bulk",
                    jobs=n,
                    title=f"enqueue-bulk: {n:,} jobs through each library's bulk API"
                    " (Celery: no bulk API, one message per job over one producer)",
                    main=Metric("jobs_per_s", "jobs/s", "jobs/s"),
                    higher_is_better=True,
                    run=partial(enqueue_run, jobs=n, bulk=True),
                    warmup=partial(enqueue_run, jobs=min(n, 10_000), bulk=True),
                    params={"calls": 1},
                )
            )
        if "latency" in chosen:
            n, rate, poll = args.latency_jobs, args.latency_rate, args.poll_interval
            warm = max(1, min(100, n // 10))
            for listen in (True, False):
                mode = "notify" if listen else "poll-only"
                out.append(
                    Case(
                        workload="latency",
                        jobs=n,
                        title=f"latency ({mode}): idle worker (concurrency {c}), {n:,} jobs"
                        f" enqueued one at a time at {rate:g}/s after {warm} warm-up jobs;"
                        f" enqueue-commit to task-start, ms; poll interval {poll:g} s",
                        main=Metric("p99_ms", "p99 ms", "ms"),
                        higher_is_better=False,
                        extras=[
                            Metric("p50_ms", "p50", "ms"),
                            Metric("p95_ms", "p95", "ms"),
                            Metric("max_ms", "max", "ms"),
                        ],
                        run=partial(
                            latency_run,
                            jobs=n,
                            warmup=warm,
                            rate=rate,
                            concurrency=c,
                            listen=listen,
                            poll_interval=poll,
                        ),
                        no_warmup_reason=f"each run starts with {warm} unmeasured warm-up jobs"
                        " and a 1 s pause",
                        params={
                            "mode": mode,
                            "rate_per_s": rate,
                            "warmup_jobs": warm,
                            "poll_interval_s": poll,
                            "concurrency": c,
                        },
                        not_applicable=(
                            (lambda lib: None) if listen else (lambda lib: lib.no_poll_only)
                        ),
                    )
                )
        if "held-xmin" in chosen:
            h = args.held_seconds
            w = min(10.0, h / 2)
            out.append(
                Case(
                    workload="held-xmin",
                    jobs=args.held_jobs or 0,
                    title=f"held-xmin: one worker (concurrency {c}) on a large backlog while"
                    f" another session holds a REPEATABLE READ snapshot for {h:g} s;"
                    f" held/clean throughput in the last {w:g} s before release and"
                    f" {2 * w:g}-{3 * w:g} s after it",
                    main=Metric("pre_release_ratio", "held/clean", "ratio"),
                    higher_is_better=True,
                    extras=[
                        Metric("clean_pre_release_jobs_per_s", "clean jobs/s", "jobs/s"),
                        Metric("held_pre_release_jobs_per_s", "held jobs/s", "jobs/s"),
                        Metric("recovery_ratio", "recovered", "ratio"),
                    ],
                    run=lambda lib: held_pair(lib, self.held_plan(lib)),
                    no_warmup_reason="each repeat is a clean run plus a held run of about"
                    f" {h + 3 * w + 1:.0f} s each; the clean run is the reference",
                    params={"held_seconds": h, "window_s": w, "concurrency": c},
                    not_applicable=lambda lib: no_redis if lib.backend == "redis" else None,
                    note=lambda runs: held_note(runs),
                )
            )
        if "memory" in chosen:
            small, large, mc = args.memory_small_jobs, args.memory_jobs, args.memory_concurrency
            out.append(
                Case(
                    workload="memory",
                    jobs=large,
                    title=f"memory: peak RSS (MiB, the kernel's ru_maxrss) of one worker process"
                    f" draining {large:,} jobs at concurrency {mc}, and {small:,} for comparison",
                    main=Metric("rss_large_mib", f"MiB@{large:,}", "MiB"),
                    higher_is_better=False,
                    extras=[
                        Metric("rss_small_mib", f"MiB@{small:,}", "MiB"),
                        Metric("growth", "growth", "ratio"),
                        Metric("large_jobs_per_s", "jobs/s", "jobs/s"),
                    ],
                    run=partial(memory_pair, small=small, large=large, concurrency=mc),
                    no_warmup_reason="peak RSS of a fresh process: a warm-up run cannot change it",
                    params={"concurrency": mc, "small_jobs": small},
                    repeats=args.memory_repeats,
                )
            )
        out += self.feature_cases()
        for case in out:
            if not case.libraries:
                case.libraries = list(libraries)
            if args.no_warmup and case.warmup is not None:
                case.warmup = None
                case.no_warmup_reason = "--no-warmup"
        return out

    def feature_cases(self) -> list[Case]:
        """The feature workloads (benchmarks/features.py), each for the libraries that have
        the feature; the others are listed as n/a with the reason."""
        args, chosen, c = self.args, self.args.workload_list, self.args.concurrency
        out: list[Case] = []

        def case(
            plan: dict[str, Any], warm: dict[str, Any], runner: Any, title: str, **kw: Any
        ) -> Case:
            made = Case(
                workload=plan["workload"],
                jobs=features.plan_jobs(plan, Library(self.settings)),
                title=title,
                run=partial(runner, plan=plan, concurrency=c),
                warmup=partial(runner, plan={**plan, **warm}, concurrency=c),
                params={**plan, "concurrency": c, "configured": features.configured(plan)},
                not_applicable=partial(features.not_applicable, plan),
                legend=[f"{k}: {v}" for k, v in features.configured(plan).items()],
                **kw,
            )
            return made

        if "fairness" in chosen:
            hot, groups, small = args.fair_hot, args.fair_tenants, args.fair_small
            warm_t, warm_s = min(groups, 5), min(small, 20)
            for mode, how in (
                ("round-robin", "round robin across tenants"),
                ("tenant-limit", "at most 1 running job per tenant"),
            ):
                plan = {
                    "workload": "fairness",
                    "mode": mode,
                    "hot": hot,
                    "tenants": groups,
                    "small": small,
                }
                ideal = features.round_robin_small_share(plan)
                out.append(
                    case(
                        plan,
                        # As the real plan: at least as many small jobs as hot ones.
                        {"hot": min(hot, warm_t * warm_s), "tenants": warm_t, "small": warm_s},
                        features.fairness_run,
                        f"fairness ({how}): tenant 'hot' enqueues {hot:,} jobs, then {groups}"
                        f" tenants {small} each; one worker process (concurrency {c}) runs the"
                        " first half of the jobs and stops; index = the small tenants' share of"
                        f" those starts / their share under strict round robin ({ideal:.3f});"
                        " FIFO gives 0; jobs/s = first half / (its last start - spawn)",
                        main=Metric("fairness_index", "index", "ratio"),
                        higher_is_better=True,
                        extras=[
                            Metric("small_share_first_half", "small share", "ratio"),
                            Metric("small_started_by_half", "small started", "ratio"),
                            Metric("jobs_per_s", "jobs/s", "jobs/s"),
                        ],
                    )
                )
        if "rate" in chosen:
            rate, seconds, procs = args.rate, args.rate_seconds, args.rate_processes
            jobs = math.ceil(rate * seconds * 1.3)
            plan = {
                "workload": "rate",
                "rate": rate,
                "seconds": seconds,
                "jobs": jobs,
                "processes": procs,
            }
            out.append(
                case(
                    plan,
                    {"seconds": 3.0, "jobs": math.ceil(rate * 3 * 1.3)},
                    features.rate_run,
                    f"rate: a queue limited to {rate:g} starts/s with a backlog of {jobs:,} jobs;"
                    f" {procs} worker processes (concurrency {c} each) run for {seconds:g} s"
                    f" (+{features.RATE_STARTUP_S:g} s to start) and stop; accuracy = starts"
                    " per second from the first second on / the limit; max 1 s = the most"
                    " starts in any 1 s window / the limit (above 1.00 breaks the limit);"
                    " starts as the tasks saw them",
                    main=Metric("accuracy", "accuracy", "ratio"),
                    higher_is_better=True,
                    direction="closest to 1.00 is best, and max 1 s at most 1.00",
                    extras=[
                        Metric("max_1s_ratio", "max 1 s", "ratio"),
                        Metric("steady_per_s", "starts/s", "jobs/s"),
                        Metric("max_1s", "most in 1 s", "jobs"),
                    ],
                )
            )
        if "concurrency" in chosen:
            jobs, limit = args.jobs, args.limit or c
            plan = {"workload": "concurrency", "limit": limit, "jobs": jobs}
            out.append(
                case(
                    plan,
                    {"jobs": min(jobs, 2_000)},
                    features.concurrency_pair,
                    f"concurrency: {jobs:,} no-op jobs drained by one worker process"
                    f" (concurrency {c}), plainly and then on a queue limited to {limit} running"
                    " jobs across all workers, in each repeat; ratio = limited jobs/s / plain"
                    " jobs/s (spawn to last completion)",
                    main=Metric("ratio", "limited/plain", "ratio"),
                    higher_is_better=True,
                    extras=[
                        Metric("plain_jobs_per_s", "plain jobs/s", "jobs/s"),
                        Metric("limited_jobs_per_s", "limited jobs/s", "jobs/s"),
                    ],
                )
            )
        if "topics" in chosen:
            k, m = args.subscribers, args.publishes
            plan = {"workload": "topics", "subscribers": k, "publishes": m}
            out.append(
                case(
                    plan,
                    {"publishes": min(m, 50)},
                    features.topics_run,
                    f"topics: {m:,} publishes, one after another from one client, each to {k}"
                    f" subscriptions ({k * m:,} deliveries), one worker process (concurrency"
                    f" {c}) running; deliveries/s from the first publish to the last"
                    " delivery's completion; publish p50/p99 = one publish call",
                    main=Metric("deliveries_per_s", "deliveries/s", "jobs/s"),
                    higher_is_better=True,
                    extras=[
                        Metric("publish_p50_ms", "publish p50 ms", "ms"),
                        Metric("publish_p99_ms", "publish p99 ms", "ms"),
                        Metric("publishes_per_s", "publishes/s", "1/s"),
                    ],
                )
            )
        if "workflow" in chosen:
            n = args.children
            plan = {"workload": "workflow", "children": n}
            out.append(
                case(
                    plan,
                    {"children": min(n, 100)},
                    features.workflow_run,
                    f"workflow 1 -> {n:,} -> 1: a parent fans out {n:,} no-op children and one"
                    " join runs after all of them, submitted to an idle worker process"
                    f" (concurrency {c}); seconds from the submit call to the join's end",
                    main=Metric("workflow_s", "seconds", "s"),
                    higher_is_better=False,
                    extras=[
                        Metric("children_per_s", "children/s", "jobs/s"),
                        Metric("join_ms", "join ms", "ms"),
                    ],
                )
            )
        return out


def held_note(runs: list[Run]) -> str:
    ok = [r for r in runs if r.error is None]
    if not ok:
        return ""
    parts = []
    backlog = ok[0].details.get("held", {}).get("backlog")
    if backlog:
        parts.append(f"backlog {backlog:,}")
    dead = [r.details["held"].get("at_release", {}).get("n_dead_tup") for r in ok]
    dead = [d for d in dead if d is not None]
    if dead:
        parts.append(f"{statistics.median(dead):,.0f} dead tuples at release")
    if any("recovery_ratio" not in r.metrics for r in ok):
        parts.append("backlog ran dry before a window ended in some runs: raise --held-jobs")
    return ", ".join(parts)


# --- running and reporting -------------------------------------------------------------------


def targets(all_outcomes: list[tuple[Case, list[Outcome]]], args: argparse.Namespace) -> list[str]:
    """pgqueue's medians against the issue's targets, one line each."""
    lines: list[str] = []

    def check(label: str, value: float | None, ok: bool, target: str) -> None:
        if value is not None:
            lines.append(f"{'met ' if ok else 'MISSED'} {label}: {fmt(value)} (target {target})")

    for case, outcomes in all_outcomes:
        mine = next((o for o in outcomes if o.library.name == "pgqueue"), None)
        if mine is None or mine.status != "ok":
            continue
        if case.workload == "latency":
            p99 = mine.median("p99_ms")
            if case.params["mode"] == "notify":
                check("latency p99 with NOTIFY, ms", p99, p99 is not None and p99 < 10, "< 10")
            else:
                bound = args.poll_interval * 1000 + 10
                check(
                    "latency p99 poll-only, ms",
                    p99,
                    p99 is not None and p99 < bound,
                    f"< poll interval + 10 = {bound:g}",
                )
        elif case.workload == "held-xmin":
            held, back = mine.median("pre_release_ratio"), mine.median("recovery_ratio")
            check(
                f"held-xmin throughput after {args.held_seconds:g} s held, held/clean",
                held,
                held is not None and held >= 0.5,
                ">= 0.5",
            )
            w = case.params["window_s"]
            check(
                f"held-xmin {2 * w:g}-{3 * w:g} s after release, held/clean",
                back,
                back is not None and back >= 0.95,
                "full recovery, >= 0.95 allowing for noise",
            )
        elif case.workload == "memory":
            rss, growth = mine.median("rss_large_mib"), mine.median("growth")
            check(f"peak RSS at {case.jobs:,} jobs, MiB", rss, rss is not None and rss < 64, "< 64")
            check(
                f"RSS at {case.jobs:,} / at {case.params['small_jobs']:,} jobs",
                growth,
                growth is not None and growth <= 1.05,
                "no growth with the backlog, <= 1.05",
            )
    return lines


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return (
        f"{value:,.1f}"
        if abs(value) >= 10
        else f"{value:.3f}"
        if abs(value) < 1
        else f"{value:.2f}"
    )


def run_case(
    case: Case, args: argparse.Namespace, unavailable: dict[str, Outcome]
) -> list[Outcome]:
    size = f"{case.jobs:,} jobs" if case.jobs else "jobs sized per library"
    print(f"\n{case.workload} ({size}, {case.params}):", flush=True)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    active: list[Outcome] = []
    for lib in case.libraries:
        if lib.name in unavailable:
            gone = unavailable[lib.name]
            outcomes.append(Outcome(lib, gone.status, gone.reason))
            continue
        reason = case.not_applicable(lib)
        if reason:
            outcomes.append(Outcome(lib, "n/a", reason))
            print(f"  {lib.name}: n/a: {reason}", flush=True)
            continue
        outcome = Outcome(lib, "ok")
        outcomes.append(outcome)
        active.append(outcome)
    if case.warmup is not None:
        for outcome in active:
            warm = guarded(lambda o=outcome: case.warmup(o.library))  # type: ignore[misc]
            outcome.warmup = warm
            state = f"FAILED: {warm.error}" if warm.error else "done"
            print(f"  {outcome.library.name} warm-up: {state}", flush=True)
    repeats = case.repeats or args.repeats
    for i in range(repeats):
        for outcome in active:
            if outcome.status != "ok" and outcome.library.name != "pgqueue":
                continue  # a broken peer will not mend on the next repeat
            load = os.getloadavg()[0]
            run = guarded(lambda o=outcome: case.run(o.library))
            run.details["loadavg_1m_before"] = load
            outcome.runs.append(run)
            if run.error is not None:
                outcome.status = "FAILED"
                outcome.reason = outcome.reason or run.error
                shown = f"FAILED: {run.error}"
            else:
                shown = ", ".join(f"{k}={fmt(v)}" for k, v in run.metrics.items())
            print(f"  {outcome.library.name} run {i + 1}/{repeats}: {shown}", flush=True)
    print(f"  ({case.workload} took {time.monotonic() - started:,.1f} s)", flush=True)
    return outcomes


def table(case: Case, outcomes: list[Outcome]) -> str:
    base = next((o.median(case.main.key) for o in outcomes if o.library.name == "pgqueue"), None)
    direction = case.direction or (f"{'higher' if case.higher_is_better else 'lower'} is better")
    lines = [
        case.title,
        f"median of {max((len(o.runs) for o in outcomes), default=0)} runs;"
        f" 'x pgqueue' = library / pgqueue, {direction}",
    ]
    header = (
        f"{'library':<14} {'version':<10} {case.main.label:>11} {'(min, max)':>22}"
        f" {'x pgqueue':>9}" + "".join(f" {m.label:>13}" for m in case.extras) + "  notes"
    )
    lines += [header, "-" * len(header)]
    for o in outcomes:
        name, version = o.library.name, o.library.version
        if o.status != "ok":
            reason = (o.reason or "").strip().splitlines()[0] if o.reason else ""
            lines.append(f"{name:<14} {version:<10} {o.status:>11}  {reason}")
            continue
        s = summarise(o.runs, case.main.key)
        if not s.get("samples"):
            lines.append(f"{name:<14} {version:<10} {'-':>11}  {case.note(o.runs)}")
            continue
        spread = f"({fmt(s['min'])}, {fmt(s['max'])})"
        ratio = f"{s['median'] / base:.2f}" if base else "-"
        extras = "".join(f" {fmt(o.median(m.key)):>13}" for m in case.extras)
        lines.append(
            f"{name:<14} {version:<10} {fmt(s['median']):>11} {spread:>22} {ratio:>9}{extras}"
            f"  {case.note(o.runs)}"
        )
    if case.legend:
        lines.append("configured as: " + "; ".join(case.legend))
    return "\n".join(lines)


def record(
    case: Case,
    outcome: Outcome,
    args: argparse.Namespace,
    env: dict[str, Any],
    source_changed: bool,
) -> dict[str, Any]:
    metric_keys = [case.main, *case.extras]
    warm = outcome.warmup
    jobs = case.jobs
    if case.workload == "held-xmin":  # sized per library
        backlogs = [r.details.get("held", {}).get("backlog") for r in outcome.runs]
        jobs = next((b for b in backlogs if b), jobs)
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "harness": "benchmarks/peers.py",
        "workload": case.workload,
        "jobs": jobs,
        "params": case.params,
        "system": outcome.library.name,
        "library_version": outcome.library.version,
        "versions": outcome.library.versions,
        "status": outcome.status,
        "reason": outcome.reason,
        "repeats": len(outcome.runs),
        "warmup": (
            {"error": warm.error, "metrics": warm.metrics}
            if warm is not None
            else {"skipped": case.no_warmup_reason}
        ),
        "metrics": {m.key: {"unit": m.unit, **summarise(outcome.runs, m.key)} for m in metric_keys},
        "higher_is_better": case.higher_is_better,
        "runs": [
            {"metrics": r.metrics, "details": r.details, "error": r.error} for r in outcome.runs
        ],
        # pgqueue's worker is imported from the working tree when each process starts.
        "source_changed_during_run": source_changed,
        **env,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN),
        help="a database to connect to for CREATE/DROP DATABASE (default: %(default)s)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("PGQUEUE_BENCH_REDIS", DEFAULT_REDIS),
        help="Celery's broker (default: %(default)s)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(BASIC_WORKLOADS),
        help=f"comma-separated workloads, of {','.join(WORKLOADS)}; 'features' for"
        f" {','.join(FEATURE_WORKLOADS)}, 'all' for every one (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_LIBRARIES),
        help=f"comma-separated libraries, of {','.join(LIBRARIES)} (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="reported runs per case")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain run")
    parser.add_argument(
        "--full", action="store_true", help=f"also drain {FULL_DRAIN_JOBS:,} jobs (both drains)"
    )
    parser.add_argument("--concurrency", type=int, default=10, help="slots per worker process")
    parser.add_argument("--single-jobs", type=int, default=2_000, help="enqueue-single jobs")
    parser.add_argument("--bulk-jobs", type=int, default=100_000, help="enqueue-bulk jobs")
    parser.add_argument("--latency-jobs", type=int, default=1_000, help="measured latency jobs")
    parser.add_argument("--latency-rate", type=float, default=100.0, help="jobs/s offered")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between polls, for every library that has the setting (latency)",
    )
    parser.add_argument(
        "--held-seconds", type=float, default=60.0, help="how long the snapshot is held"
    )
    parser.add_argument(
        "--held-jobs",
        type=int,
        default=0,
        help="held-xmin backlog (default: sized from this run's drain rate, x1.5 margin)",
    )
    parser.add_argument("--held-max-jobs", type=int, default=1_500_000, help="backlog cap")
    parser.add_argument("--memory-jobs", type=int, default=100_000, help="memory backlog")
    parser.add_argument(
        "--memory-small-jobs", type=int, default=10_000, help="the smaller memory backlog"
    )
    parser.add_argument("--memory-concurrency", type=int, default=50)
    parser.add_argument(
        "--drain-4p-jobs", type=int, default=FULL_DRAIN_JOBS, help="drain-4p's backlog"
    )
    parser.add_argument("--fair-hot", type=int, default=5_000, help="the hot tenant's jobs")
    parser.add_argument("--fair-tenants", type=int, default=50, help="small tenants")
    parser.add_argument("--fair-small", type=int, default=100, help="jobs per small tenant")
    parser.add_argument("--rate", type=int, default=200, help="the rate limit, starts per s")
    parser.add_argument(
        "--rate-seconds", type=float, default=30.0, help="backlog: the limit x this many s"
    )
    parser.add_argument("--rate-processes", type=int, default=2, help="rate's worker processes")
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="concurrency workload: the queue's limit (default: --concurrency, so that it"
        " never binds and only the mechanism's cost shows)",
    )
    parser.add_argument("--subscribers", type=int, default=10, help="topics: subscriptions")
    parser.add_argument("--publishes", type=int, default=1_000, help="topics: publishes")
    parser.add_argument("--children", type=int, default=1_000, help="workflow: children")
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=None,
        help="runs of the memory workload (default: --repeats); each drains"
        " memory-jobs + memory-small-jobs, minutes per run for the slower peers",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="bound on every child process and wait, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_FILE,
        help="JSON lines file to append to (default: %(default)s)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write result lines")
    args = parser.parse_args(argv)
    for name in (
        "jobs",
        "repeats",
        "concurrency",
        "single_jobs",
        "bulk_jobs",
        "latency_jobs",
        "memory_jobs",
        "memory_small_jobs",
        "memory_concurrency",
        "drain_4p_jobs",
        "fair_hot",
        "fair_tenants",
        "fair_small",
        "rate",
        "rate_processes",
        "subscribers",
        "publishes",
        "children",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.fair_tenants * args.fair_small < args.fair_hot:
        # The fairness run stops at half the backlog: with fewer small jobs than hot ones, a
        # tenant limited to one running job would drain its tail one by one to get there.
        parser.error("--fair-tenants x --fair-small must be at least --fair-hot")
    if args.memory_repeats is not None and args.memory_repeats < 1:
        parser.error("--memory-repeats must be at least 1")
    for name in ("latency_rate", "poll_interval", "held_seconds", "timeout", "rate_seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    args.libraries = list(dict.fromkeys(PEER_ALIASES.get(name, name) for name in names))
    unknown = set(args.libraries) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries {sorted(unknown)}; choose from {LIBRARIES}")
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    args.workload_list = list(
        dict.fromkeys(w for name in names for w in WORKLOAD_GROUPS.get(name, (name,)))
    )
    unknown = set(args.workload_list) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    return args


def prepare_libraries(
    args: argparse.Namespace, settings: Settings
) -> tuple[list[Library], dict[str, Outcome]]:
    libraries: list[Library] = []
    unavailable: dict[str, Outcome] = {}
    for name in args.libraries:
        if name == "pgqueue":
            libraries.append(Pgqueue(settings))
            continue
        spec = next(p for p in PEER_SPECS if p.name == name)
        placeholder = Library(settings)
        placeholder.name = name
        placeholder.backend = spec.backend
        reason = redis_problem(args.redis) if spec.backend == "redis" else None
        if reason is not None:
            print(f"{name}: SKIPPED: {reason}", flush=True)
            unavailable[name] = Outcome(placeholder, "SKIPPED", reason)
            libraries.append(placeholder)
            continue
        where = (
            "benchmarks/peer_apps/node_modules"
            if spec.runtime == "node"
            else VENVS.relative_to(ROOT) / name
        )
        print(f"{name}: installing into {where} ...", flush=True)
        try:
            versions = ensure_node(spec) if spec.runtime == "node" else ensure_venv(spec)
        except PeerUnavailable as exc:
            print(f"{name}: SKIPPED: {exc}", flush=True)
            unavailable[name] = Outcome(placeholder, "SKIPPED", str(exc))
            libraries.append(placeholder)
            continue
        except HarnessError as exc:
            print(f"{name}: FAILED to install: {exc}", flush=True)
            unavailable[name] = Outcome(placeholder, "FAILED", f"install: {exc}")
            libraries.append(placeholder)
            continue
        print(f"{name}: {versions}", flush=True)
        libraries.append(Peer(settings, spec, versions))
    return libraries, unavailable


def _interrupted(signum: int, _frame: object) -> None:
    # Raised inside whatever step is running, so that its `finally` blocks still kill the
    # workers, close the holding session and drop the scratch databases.
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"\npeers.py: stopped by {signal.Signals(signum).name} at {stamp}", flush=True)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.monotonic()
    settings = Settings(admin_dsn=args.dsn, redis_url=args.redis, timeout=args.timeout)
    env = environment(args.dsn)
    if "celery" in args.libraries:
        env["redis_version"] = redis_version(args.redis)
    libraries, unavailable = prepare_libraries(args, settings)
    planner = Planner(args, settings)
    tables: list[str] = []
    failed = False
    all_outcomes: list[tuple[Case, list[Outcome]]] = []
    for case in planner.cases(libraries):
        source_before = source_fingerprint()
        env["git"] = git_state()  # the tree this workload starts with (it may change meanwhile)
        outcomes = run_case(case, args, unavailable)
        source_changed = source_fingerprint() != source_before
        if source_changed:
            print(f"  warning: pgqueue's sources changed while {case.workload} ran", flush=True)
        all_outcomes.append((case, outcomes))
        if case.workload == "drain" and case.jobs == args.jobs:
            for o in outcomes:
                rate = median_detail(o.runs, "first_to_last_jobs_per_s")
                if o.status == "ok" and rate:
                    planner.drain_rates[o.library.name] = rate
        text = table(case, outcomes)
        tables.append(text)
        print("\n" + text, flush=True)
        failed = failed or any(o.status == "FAILED" for o in outcomes)
        if not args.no_save:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with args.results.open("a", encoding="utf-8") as out:
                for o in outcomes:
                    line = record(case, o, args, env, source_changed)
                    out.write(json.dumps(line, default=str) + "\n")
    s, m = env["postgresql_settings"], env["machine"]
    print("\n" + "=" * 100)
    print(
        f"pgqueue {env['pgqueue_version']} (commit {(env['git']['commit'] or '-')[:10]}"
        f"{', dirty' if env['git']['dirty_paths'] else ''}) | PostgreSQL"
        f" {env['postgresql_version']} | synchronous_commit={s['synchronous_commit']}"
        f" shared_buffers={s['shared_buffers']} fsync={s['fsync']}"
        f" autovacuum={s['autovacuum']} | Redis {env.get('redis_version') or '-'}"
        f" | {m['nproc']} CPUs, {m['platform']} | Python {m['python']}"
    )
    versions = {lib.name: lib.versions for lib in libraries if lib.versions}
    print(f"versions: {versions}")
    print(f"total time {time.monotonic() - started:,.0f} s\n")
    print("\n\n".join(tables))
    verdicts = targets(all_outcomes, args)
    if verdicts:
        print("\npgqueue against the targets of issue 5 (reported, never asserted):")
        print("\n".join(f"  {line}" for line in verdicts))
    if not args.no_save:
        print(f"\nresult lines appended to {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
