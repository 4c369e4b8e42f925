"""The feature workloads of the side-by-side harness (`benchmarks/peers.py`): fairness, rate
accuracy, the cost of a concurrency limit, topic fan-out and a workflow 1 -> N -> 1.

Each is run only for the libraries that have the feature, configured the way their own
documentation says (`CONFIGURED`); every other library is listed with the reason it does not
apply (`NOT_APPLICABLE`), never dropped. A workload is described by a plan, a small JSON
object that the harness hands to each library's setup, enqueue, worker and verification (the
peer apps read it as `--plan`), so that one definition drives every library. Every run that
executes jobs goes through the same exactly-once check as the drains (`check_exactly_once`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from bench_pgqueue import Run, analyze, fetch_one
from harness import (
    STAMP_TASK,
    Exit,
    HarnessError,
    Library,
    Peer,
    Pgqueue,
    Report,
    Target,
    Verify,
    WorkerSpec,
    _stop_all,
    _worker_exits,
    check_exactly_once,
    drain_run,
    percentile,
)
from psycopg import sql

Plan = dict[str, Any]

#: The topic every subscriber of the topics workload subscribes to.
TOPIC = "bench.topic"
#: The rate workload's workers run this much longer than its measured seconds: their start.
RATE_STARTUP_S = 2.0

#: How each library that has the feature is configured, per case (recorded with the results).
CONFIGURED: dict[str, dict[str, str]] = {
    "fairness/round-robin": {
        "pgqueue": "configure_queue(fair=True), group_key per tenant",
    },
    "fairness/tenant-limit": {
        "pgqueue": "configure_queue(group_concurrency=1), group_key per tenant",
        "procrastinate": "configure(lock=<tenant>): one running job per lock",
        "graphile-fast": "queueName=<tenant>: a named queue runs its jobs one at a time",
        "graphile": "queueName=<tenant>: a named queue runs its jobs one at a time",
        "pg-boss": "group {id: <tenant>}, work(groupConcurrency: 1), polled every 2 s (not"
        " the 30 s NOTIFY backstop: a group freeing up sends no NOTIFY)",
    },
    "rate": {
        "pgqueue": "configure_queue(rate='R/s'): across all worker processes",
        "celery": "task rate_limit 'R/P per s' in each of the P workers: Celery's limit is per"
        " worker instance, not global",
    },
    "concurrency": {
        "pgqueue": "configure_queue(concurrency=L)",
        "pgqueuer": "entrypoint(concurrency_limit=L): enforced in the database across workers",
        "pg-boss": "every job in one group, work(groupConcurrency: L): pg-boss's only limit"
        " above 1 across workers (policy 'singleton' allows 1); polled every 2 s",
    },
    "topics": {
        "pgqueue": "K x subscribe('bench.topic', task), publish('bench.topic', args)",
        "pg-boss": "K queues, subscribe('bench.topic', queue), publish('bench.topic', data);"
        " one fetch loop per queue, batches of max(2, ceil(C/K))",
    },
    "workflow": {
        "pgqueue": "the parent maps N children (current_job().map) and gathers them",
        "celery": "the parent starts chord(group of N children)(join), Redis result backend",
        "pg-boss": "the parent inserts flow() of N children and a join that dependsOn all;"
        " flowIntervalSeconds 1 and the join's queue polled every 0.5 s (each the minimum: an"
        " unblocked job gets no NOTIFY)",
    },
}

_NONE = "no such feature"
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "fairness/round-robin": {
        "procrastinate": f"{_NONE}: no round robin across keys (`lock` runs one job per key at"
        " a time: see tenant-limit; `queueing_lock` refuses a second waiting job per key)",
        "pgqueuer": f"{_NONE}: concurrency_limit is per entrypoint (a task), not per tenant",
        "celery": f"{_NONE}: a worker takes its queue's messages in order",
        "graphile-fast": f"{_NONE}: a named queue serialises a key (see tenant-limit)",
        "graphile": f"{_NONE}: a named queue serialises a key (see tenant-limit)",
        "pg-boss": f"{_NONE}: groupConcurrency caps each group (see tenant-limit)",
    },
    "fairness/tenant-limit": {
        "pgqueuer": f"{_NONE}: concurrency_limit is per entrypoint (a task), not per tenant",
        "celery": f"{_NONE}: no per-key concurrency limit",
    },
    "rate": {
        "procrastinate": f"{_NONE}: no rate limit",
        "pgqueuer": f"{_NONE}: 1.6.0 has no rate limit (no requests_per_second)",
        "graphile-fast": f"{_NONE}: no rate limit",
        "graphile": f"{_NONE}: no rate limit",
        "pg-boss": f"{_NONE}: throttling (singletonSeconds, sendThrottled) drops or defers"
        " sends to one per time slot; it does not pace a backlog",
    },
    "concurrency": {
        "procrastinate": f"{_NONE}: a `lock` allows one running job per key, no limit above 1",
        "celery": f"{_NONE}: concurrency is per worker process, no limit across workers",
        "graphile-fast": f"{_NONE}: a named queue runs one job at a time, no limit above 1",
        "graphile": f"{_NONE}: a named queue runs one job at a time, no limit above 1",
    },
    "topics": {
        "procrastinate": f"{_NONE}: no publish/subscribe",
        "pgqueuer": f"{_NONE}: no publish/subscribe",
        "celery": f"{_NONE}: no topic subscriptions of tasks (a broadcast queue copies a"
        " message to every worker, not to K tasks)",
        "graphile-fast": f"{_NONE}: no publish/subscribe",
        "graphile": f"{_NONE}: no publish/subscribe",
    },
    "workflow": {
        "procrastinate": f"{_NONE}: no job dependencies or fan-in",
        "pgqueuer": f"{_NONE}: no job dependencies or fan-in",
        "graphile-fast": f"{_NONE}: no job dependencies (a task can add jobs; nothing waits"
        " for them)",
        "graphile": f"{_NONE}: no job dependencies (a task can add jobs; nothing waits for them)",
    },
}


def case_key(plan: Plan) -> str:
    workload = str(plan["workload"])
    return f"{workload}/{plan['mode']}" if workload == "fairness" else workload


def not_applicable(plan: Plan, lib: Library) -> str | None:
    key = case_key(plan)
    if lib.name in CONFIGURED[key]:
        return None
    return NOT_APPLICABLE[key].get(lib.name, f"{_NONE} (not configured in the harness)")


def configured(plan: Plan) -> dict[str, str]:
    return CONFIGURED[case_key(plan)]


# --- the plans' jobs ---------------------------------------------------------------------------


def tenants(plan: Plan) -> Iterator[tuple[str, range]]:
    """The fairness backlog in enqueue order: the hot tenant's job numbers, then each small
    tenant's."""
    hot, small = plan["hot"], plan["small"]
    yield "hot", range(hot)
    for g in range(plan["tenants"]):
        yield f"t{g:03}", range(hot + g * small, hot + (g + 1) * small)


def plan_jobs(plan: Plan, lib: Library) -> int:
    """How many jobs (executions) a run of `plan` completes for `lib`."""
    w = plan["workload"]
    if w == "fairness":
        return int(plan["hot"] + plan["tenants"] * plan["small"])
    if w in ("rate", "concurrency"):
        return int(plan["jobs"])
    if w == "topics":
        return int(plan["subscribers"] * plan["publishes"])
    # workflow: pgqueue's parent is also the join (one job that suspends); the peers run a
    # parent and a separate join task.
    return int(plan["children"]) + (1 if isinstance(lib, Pgqueue) else 2)


def worker_queues(plan: Plan) -> list[str]:
    """pgqueue's `-q` for the limited queues (as bench_flow.py: a worker named to the one
    queue holding every job is what a limited queue is served by)."""
    return {"fairness": ["fair"], "rate": ["rated"], "concurrency": ["limited"]}.get(
        plan["workload"], []
    )


# --- pgqueue's side ----------------------------------------------------------------------------


def _pg_setup(lib: Pgqueue, target: Target, plan: Plan) -> None:
    app = lib._app(target)
    w = plan["workload"]
    if w == "fairness" and plan["mode"] == "round-robin":
        app.configure_queue("fair", fair=True)
    elif w == "fairness":
        app.configure_queue("fair", group_concurrency=1)
    elif w == "rate":
        app.configure_queue("rated", rate=f"{plan['rate']}/s")
    elif w == "concurrency":
        app.configure_queue("limited", concurrency=plan["limit"])
    elif w == "topics":
        for k in range(plan["subscribers"]):
            app.subscribe(TOPIC, f"bench.sub{k}")


def _pg_enqueue(lib: Pgqueue, target: Target, plan: Plan) -> dict[str, Any]:
    app = lib._app(target)
    stamp = app.tasks[STAMP_TASK]  # returns its start time: the task-side start, as the peers'
    w = plan["workload"]
    if w == "fairness":
        for tenant, numbers in tenants(plan):
            stamp.options(queue="fair", group_key=tenant).enqueue_many([{"n": n} for n in numbers])
    elif w == "rate":
        stamp.options(queue="rated").enqueue_many([{"n": n} for n in range(plan["jobs"])])
    elif w == "concurrency":
        app.tasks["bench.noop"].options(queue="limited").enqueue_many(
            [{"n": n} for n in range(plan["jobs"])]
        )
    elif w == "topics":
        durations: list[float] = []
        first = time.time()
        start = time.perf_counter()
        for m in range(plan["publishes"]):
            began = time.perf_counter()
            app.publish(TOPIC, {"n": m})
            durations.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - start
        return {
            "enqueued": lib._count(target),
            "publish_s": durations,
            "first_publish_at": first,
            "elapsed_s": elapsed,
        }
    else:  # workflow
        submitted = time.time()
        app.enqueue("bench.fan", {"n": plan["children"]})
        return {"enqueued": lib._count(target), "submitted_at": submitted}
    return {"enqueued": lib._count(target)}


def _pg_check(lib: Pgqueue, target: Target, plan: Plan) -> tuple[str | None, dict[str, float]]:
    """What the generic verification cannot see: every publish reached every subscriber
    once; the workflow's parent joined all its children."""
    jobs = lib._table(target, "jobs")
    with lib._app(target).pool.connection() as conn:
        conn.autocommit = True
        if plan["workload"] == "topics":
            (distinct,) = fetch_one(
                conn,
                sql.SQL(
                    "SELECT count(DISTINCT (task, args->>'n')) FROM {} WHERE state = 'completed'"
                ).format(jobs),
            )
            conn.autocommit = False
            expected = plan_jobs(plan, lib)
            if distinct != expected:
                return f"{distinct} distinct deliveries of {expected}", {}
            return None, {}
        row = fetch_one(
            conn,
            sql.SQL(
                "SELECT p.state, p.result,"
                "       extract(epoch FROM p.finished_at)::float8,"
                "       extract(epoch FROM min(c.started_at))::float8,"
                "       extract(epoch FROM max(c.finished_at))::float8"
                "  FROM {jobs} AS p, {jobs} AS c"
                " WHERE p.task = 'bench.fan' AND c.task = 'bench.noop'"
                " GROUP BY p.id"
            ).format(jobs=jobs),
        )
        conn.autocommit = False
    state, result, join_done, child_first, child_last = row
    if state != "completed" or result != plan["children"]:
        return f"the parent is {state} with result {result!r}", {}
    return None, {
        "join_done": join_done,
        "child_first_start": child_first,
        "child_last_done": child_last,
    }


# --- dispatch: pgqueue in this process, a peer through its app --------------------------------


def setup(lib: Library, target: Target, plan: Plan) -> None:
    if isinstance(lib, Pgqueue):
        _pg_setup(lib, target, plan)
    elif isinstance(lib, Peer):
        lib.run_app("setup", target.arg, "--plan", json.dumps(plan))
    else:
        raise HarnessError(f"{lib.name} has no feature workloads")


def enqueue(lib: Library, target: Target, plan: Plan) -> dict[str, Any]:
    if isinstance(lib, Pgqueue):
        return _pg_enqueue(lib, target, plan)
    if isinstance(lib, Peer):
        return lib.run_app("enqueue-feature", target.arg, "--plan", json.dumps(plan))
    raise HarnessError(f"{lib.name} has no feature workloads")


def _spawn(lib: Library, target: Target, spec: WorkerSpec, processes: int) -> list[Exit]:
    timeout = lib.settings.timeout
    deadline = time.monotonic() + timeout
    procs = [lib.spawn_worker(target, spec) for _ in range(processes)]
    try:
        if spec.mode == "count":  # pgqueue's worker is stopped from here; a peer's stops itself
            for proc in procs:
                lib.stop_worker(target, proc, spec)
        exits, problem = _worker_exits(procs, deadline, timeout)
    finally:
        _stop_all(procs)
    if problem:
        # How far it got says whether it hung or crawled (a per-key limit that polls).
        with suppress(Exception):
            done = lib.verify(target, plan=spec.plan).completed
            wanted = spec.stop_after or spec.total
            problem = f"{done:,} of {wanted:,} jobs done when {problem}"
        raise HarnessError(problem)
    return exits


def _verified(
    lib: Library, target: Target, plan: Plan, reports: list[Report], drained: bool = True
) -> tuple[Verify, dict[str, float]]:
    """The library's record, checked for exactly-once; and the moments it (or its tasks)
    noted."""
    verify = lib.verify(target, plan=plan)
    marks: dict[str, float] = {}
    for r in reports:
        for name, when in r.marks.items():
            keep_first = name.endswith("first_start")
            if name not in marks or (when < marks[name] if keep_first else when > marks[name]):
                marks[name] = when
    marks |= {k: float(v) for k, v in (verify.details.pop("marks", None) or {}).items() if v}
    problem = check_exactly_once(plan_jobs(plan, lib), verify, reports, drained=drained)
    if problem is None and isinstance(lib, Pgqueue) and plan["workload"] in ("topics", "workflow"):
        problem, more = _pg_check(lib, target, plan)
        marks |= more
    if problem:
        raise HarnessError(problem)
    return verify, marks


def _prepared(lib: Library, target: Target, plan: Plan) -> dict[str, Any]:
    setup(lib, target, plan)
    enqueued = enqueue(lib, target, plan)
    jobs = plan_jobs(plan, lib)
    if enqueued["enqueued"] != jobs:
        raise HarnessError(f"enqueue left {enqueued['enqueued']} jobs, expected {jobs}")
    if target.dsn is not None:
        analyze(target.dsn)
    return enqueued


def _backlog_drain(
    lib: Library,
    plan: Plan,
    concurrency: int,
    processes: int,
    record_starts: bool,
    stop_after: int | None = None,
) -> tuple[float, Verify, list[Report], dict[int, float], list[Exit]]:
    """Set up and enqueue the plan's backlog, then drain it with `processes` workers (or, with
    `stop_after`, let one worker run that many jobs and stop): the time of the first spawn,
    the checked record, the workers' reports and each job's start."""
    with lib.target() as target:
        _prepared(lib, target, plan)
        spec = WorkerSpec(
            total=plan_jobs(plan, lib),
            concurrency=concurrency,
            mode="drain" if stop_after is None else "count",
            record_starts=record_starts,
            plan=plan,
            queues=worker_queues(plan),
            stop_after=stop_after,
        )
        t0 = time.time()
        exits = _spawn(lib, target, spec, processes)
        reports = [lib.report(target, e) for e in exits]
        verify, _ = _verified(lib, target, plan, reports, drained=stop_after is None)
        starts = lib.starts(target, reports) if record_starts else {}
    if record_starts:
        missing = (stop_after or plan_jobs(plan, lib)) - len(starts)
        if missing > 0:
            raise HarnessError(f"no start time for {missing} jobs")
    return t0, verify, reports, starts, exits


# --- fairness ----------------------------------------------------------------------------------


def round_robin_small_share(plan: Plan) -> float:
    """The small tenants' share of the first half of the starts under strict round robin
    across the tenants with waiting jobs."""
    sizes = [len(numbers) for _, numbers in tenants(plan)]
    half = sum(sizes) // 2
    small_in_half = position = 0
    for turn in range(max(sizes)):
        for index, size in enumerate(sizes):
            if turn < size:
                position += 1
                if index > 0 and position <= half:
                    small_in_half += 1
    return small_in_half / half


def fairness_run(lib: Library, plan: Plan, concurrency: int) -> Run:
    """One hot tenant's backlog enqueued first, then `tenants` small ones; one worker runs
    the first half of it and stops (a tenant limited to one running job drains its tail one
    by one, which says nothing about fairness and takes minutes). Who got those starts?"""
    total = plan_jobs(plan, lib)
    half, hot = total // 2, plan["hot"]
    t0, verify, _, starts, exits = _backlog_drain(
        lib, plan, concurrency, 1, record_starts=True, stop_after=half
    )
    order = sorted(starts, key=starts.__getitem__)[:half]
    small = sum(1 for n in order if n >= hot)
    ideal = round_robin_small_share(plan)
    return Run(
        metrics={
            "fairness_index": small / half / ideal,
            "small_share_first_half": small / half,
            "small_started_by_half": small / (total - hot),
            "jobs_per_s": half / (starts[order[-1]] - t0),
        },
        details={
            "round_robin_small_share": ideal,
            "hot_share_first_half": 1 - small / half,
            "first_start_after_s": starts[order[0]] - t0,
            "peak_rss_mib": exits[0].maxrss_kib / 1024,
            "completed": verify.completed,
            "left": verify.left,
        },
    )


# --- rate accuracy -----------------------------------------------------------------------------


def max_in_window(times: list[float], width: float) -> int:
    """The most of the sorted `times` in any half-open window [t, t + width)."""
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def rate_run(lib: Library, plan: Plan, concurrency: int) -> Run:
    """A backlog larger than `seconds` at `rate` can start, on a queue limited to `rate` per
    second; `processes` workers run for `seconds` and stop (time-boxed: a library that runs
    below its limit does not stretch the run). How close to the limit the starts ran, and the
    busiest second."""
    with lib.target() as target:
        _prepared(lib, target, plan)
        t0 = time.time()
        spec = WorkerSpec(
            total=plan_jobs(plan, lib),
            concurrency=concurrency,
            mode="until",
            until=t0 + RATE_STARTUP_S + plan["seconds"],
            record_starts=True,
            plan=plan,
            queues=worker_queues(plan),
        )
        timeout = lib.settings.timeout
        deadline = time.monotonic() + RATE_STARTUP_S + plan["seconds"] + timeout
        procs = [lib.spawn_worker(target, spec) for _ in range(plan["processes"])]
        try:
            for proc in procs:
                lib.stop_worker(target, proc, spec)
            exits, problem = _worker_exits(procs, deadline, plan["seconds"] + timeout)
        finally:
            _stop_all(procs)
        if problem:
            raise HarnessError(problem)
        reports = [lib.report(target, e) for e in exits]
        verify, _ = _verified(lib, target, plan, reports, drained=False)
        starts = lib.starts(target, reports)
        claims = _pg_claim_times(lib, target) if isinstance(lib, Pgqueue) else None
    if len(starts) != verify.completed:
        raise HarnessError(f"{len(starts)} start times for {verify.completed} completions")
    times = sorted(starts.values())
    first, last = times[0], times[-1]
    if last - first <= 2:
        raise HarnessError(f"the starts span {last - first:.2f} s: too few jobs for --rate")
    # Steady state: the first second is the window's start-up burst (a sliding-window limit
    # allows the whole second's budget at once); then whole seconds only, since a limited
    # queue's starts come in bursts and a fraction of a second would catch one burst too many.
    whole = int(last - first - 1)
    steady = sum(1 for t in times if first + 1 <= t < first + 1 + whole) / whole
    busiest = max_in_window(times, 1.0)
    rate = float(plan["rate"])
    return Run(
        metrics={
            "accuracy": steady / rate,
            "max_1s_ratio": busiest / rate,
            "steady_per_s": steady,
            "max_1s": float(busiest),
        },
        details={
            "span_s": last - first,
            "overall_per_s": (len(times) - 1) / (last - first),
            "completed": verify.completed,
            "left": verify.left,
            # pgqueue's limiter counts claims (started_at, the database's clock); the table's
            # starts are the tasks' own, a few milliseconds later and less evenly spaced.
            "claims_max_1s": max_in_window(claims, 1.0) if claims else None,
        },
    )


def _pg_claim_times(lib: Pgqueue, target: Target) -> list[float]:
    with lib._app(target).pool.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM started_at)::float8 FROM {}"
                " WHERE state = 'completed' ORDER BY 1"
            ).format(lib._table(target, "jobs"))
        ).fetchall()
        conn.rollback()
    return [float(t) for (t,) in rows]


# --- the cost of a concurrency limit -----------------------------------------------------------


def concurrency_pair(lib: Library, plan: Plan, concurrency: int) -> Run:
    """A plain drain and a drain of the same jobs under a concurrency limit, one after the
    other in one repeat: limited / plain."""
    plain = drain_run(lib, plan["jobs"], concurrency, 1)
    if plain.error:
        return Run(error=f"plain drain: {plain.error}")
    try:
        t0, verify, reports, _, exits = _backlog_drain(lib, plan, concurrency, 1, False)
    except HarnessError as exc:
        return Run(error=f"limited drain: {exc}", details={"plain": plain.metrics})
    last = verify.last_completion or max(r.last_done or 0.0 for r in reports)
    limited = plan["jobs"] / (last - t0)
    return Run(
        metrics={
            "ratio": limited / plain.metrics["jobs_per_s"],
            "plain_jobs_per_s": plain.metrics["jobs_per_s"],
            "limited_jobs_per_s": limited,
        },
        details={
            "plain": plain.details,
            "limited_peak_rss_mib": exits[0].maxrss_kib / 1024,
        },
    )


# --- an idle worker, then a burst of publishes or one workflow ---------------------------------


def _idle_worker_run(
    lib: Library, plan: Plan, concurrency: int
) -> tuple[dict[str, Any], Verify, dict[str, float], Exit]:
    """Start one worker on an empty queue, wait until it is ready, then enqueue the plan
    (publishes, a workflow) while it runs; stop it once every job has run."""
    timeout = lib.settings.timeout
    spec = WorkerSpec(total=plan_jobs(plan, lib), concurrency=concurrency, mode="count", plan=plan)
    with lib.target() as target:
        setup(lib, target, plan)
        deadline = time.monotonic() + timeout
        proc = lib.spawn_worker(target, spec)
        try:
            lib.wait_ready(target, proc)
            time.sleep(0.5)  # its LISTEN and first poll
            enqueued = enqueue(lib, target, plan)
            lib.stop_worker(target, proc, spec)
            exits, problem = _worker_exits([proc], deadline, timeout)
        finally:
            _stop_all([proc])
        if problem:
            raise HarnessError(problem)
        reports = [lib.report(target, exits[0])]
        verify, marks = _verified(lib, target, plan, reports)
    return enqueued, verify, marks, exits[0]


def topics_run(lib: Library, plan: Plan, concurrency: int) -> Run:
    """`publishes` publishes, one after another from one client, each to `subscribers`
    subscriptions, with one worker running: deliveries per second end to end, and what a
    publish costs its caller."""
    enqueued, verify, marks, exit = _idle_worker_run(lib, plan, concurrency)
    durations = sorted(1000 * d for d in enqueued["publish_s"])
    last = verify.last_completion or marks.get("last_done")
    if last is None:
        raise HarnessError("no completion time for the last delivery")
    deliveries = plan_jobs(plan, lib)
    return Run(
        metrics={
            "deliveries_per_s": deliveries / (last - enqueued["first_publish_at"]),
            "publish_p50_ms": percentile(durations, 50),
            "publish_p99_ms": percentile(durations, 99),
            "publishes_per_s": plan["publishes"] / enqueued["elapsed_s"],
        },
        details={
            "publish_mean_ms": statistics.fmean(durations),
            "publish_max_ms": durations[-1],
            "first_publish_to_last_delivery_s": last - enqueued["first_publish_at"],
            "peak_rss_mib": exit.maxrss_kib / 1024,
        },
    )


def workflow_run(lib: Library, plan: Plan, concurrency: int) -> Run:
    """One parent that fans out to `children` no-op children and one join after all of them,
    submitted to an idle worker: from the submit call to the join's end."""
    enqueued, _, marks, exit = _idle_worker_run(lib, plan, concurrency)
    needed = ("join_done", "child_first_start", "child_last_done")
    missing = [m for m in needed if m not in marks]
    if missing:
        raise HarnessError(f"the run noted no {', '.join(missing)}")
    submitted = enqueued["submitted_at"]
    children = plan["children"]
    return Run(
        metrics={
            "workflow_s": marks["join_done"] - submitted,
            "children_per_s": children / (marks["child_last_done"] - marks["child_first_start"]),
            "join_ms": 1000 * (marks["join_done"] - marks["child_last_done"]),
        },
        details={
            "first_child_after_s": marks["child_first_start"] - submitted,
            "peak_rss_mib": exit.maxrss_kib / 1024,
        },
    )
