"""Named queries from `sql/queries`, rendered once per schema, and the claim variants.

Query files name the schema as `{schema}`; it is rendered once per App with
`psycopg.sql.Identifier`, so a schema name is always quoted and never formatted into text by
hand. Parameters stay `%(name)s` placeholders, which run unchanged on a psycopg cursor and
through SQLAlchemy's `exec_driver_sql`, so the caller's transaction is honoured either way.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from psycopg import sql


def sql_dir() -> Traversable:
    try:
        return resources.files("pgqueue.sql")
    except ModuleNotFoundError:  # running from a source tree that was never installed
        return Path(__file__).resolve().parent.parent.parent / "sql"


@functools.cache
def _query_texts() -> dict[str, str]:
    folder = sql_dir().joinpath("queries")
    return {
        entry.name.removesuffix(".sql"): strip_comments(entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    }


def strip_comments(text: str) -> str:
    """The statement without its `--` comments and blank lines.

    The query files explain themselves at length, but psycopg caches the parse of a query
    (placeholders to `$n`) only up to 4,096 characters: the claim statement, at 9,400 with
    its comments, was parsed again on every claim (a twentieth of a drain worker's CPU). A
    `--` inside a quoted literal or identifier is kept; the files use no other comment
    syntax and no dollar quoting."""
    lines = []
    for line in text.splitlines():
        quote = ""
        cut = len(line)
        for i, char in enumerate(line):
            if quote:
                if char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "-" and line.startswith("--", i):
                cut = i
                break
        kept = line[:cut].rstrip()
        if kept.strip():
            lines.append(kept)
    return "\n".join(lines) + "\n"


#: Queries rendered twice with different literal fragments (a parameter would hide the
#: predicate from the planner's partial-index matching): file -> {name: fragments}.
#:
#: No queue filter may be one whose selectivity the planner derives as "1 minus something"
#: from the statistics of `jobs.queue`: where one queue holds (nearly) every job, that
#: something is 1, the estimate 0 rows, the LIMIT saves nothing, and a Seq Scan of jobs plus
#: a sort of the whole backlog wins over the index (60-90 ms a claim at 100,000 jobs where
#: the index reads ten rows). The claim was planned that way for `-q NAME` of such a queue,
#: and for every claim of a one-queue database as soon as any queue was paused, while the
#: pause check was an anti-join against `queues` (with `queue = NAME` the planner inferred
#: `queues.name = NAME` too; with one distinct queue each side, that every job matches).
#: A negation is therefore NOT IN over a subquery (hashed once per claim, probed per row),
#: which the planner gives a fixed selectivity whatever the tables hold; `queues.name` is
#: the primary key and `jobs.queue` NOT NULL, so NOT IN meets no NULL.
_QUEUE_FILTERS = {
    # One queue: straight from jobs_claim_queue_idx, in its order. The array of one keeps
    # the queue out of the planner's equivalence classes, so `queue` leads the ORDER BY
    # (_CLAIM_ORDERS) and only that index yields the order: with `queue = NAME` both claim
    # indexes did, and jobs_claim_idx (its leading `priority` all one value, so perfectly
    # correlated by the statistics) often looked cheaper while it walks past every other
    # queue's backlog.
    "_one": "queue = ANY(ARRAY[%(queue)s::text])",
    "_some": "queue = ANY(%(queues)s::text[])",
    "_all": "true",
    # Every queue but these (`--exclude-queue`), queues added later included: the order of
    # jobs_claim_idx, with the exclusion a filter on its INCLUDEd queue column.
    "_except": "queue NOT IN (SELECT unnest(%(excluded)s::text[]))",
}
_CLAIM_ORDERS = {"_one": "queue, priority DESC, run_at, id"}
#: Paused queues, and queues with limits (claim_limited's), skipped by every claim. One
#: queue: a test of that queue alone, an InitPlan run once per claim (when it fails, the
#: scan stops before it reads a row); otherwise NOT IN, as above.
_BLOCKED_FILTERS = {
    "_one": "NOT EXISTS (SELECT 1 FROM {schema}.queues AS q"
    " WHERE q.name = %(queue)s::text AND (q.paused OR q.limited))",
    "": "queue NOT IN (SELECT q.name FROM {schema}.queues AS q WHERE q.paused OR q.limited)",
}


def _queue_fragments(queues: str) -> dict[str, str]:
    one = "_one" if queues == "_one" else ""
    return {
        "queue_filter": _QUEUE_FILTERS[queues],
        "blocked_filter": _BLOCKED_FILTERS[one],
        "claim_order": _CLAIM_ORDERS.get(queues, "priority DESC, run_at, id"),
    }


#: Suspects are jobs rescued at least twice: running when their worker died, and again when
#: the next one did, so likely the cause. They run alone, one per idle worker, so a killer
#: cannot take innocent jobs down with it. A job rescued once runs like any other: one crash
#: is as likely an OOM kill or a deploy as its own fault, and quarantining every job of a
#: dead worker stalled the survivors behind them (each ran alone, one after another). An
#: innocent job can collect at most the rescue of the first crash and of one ordinary rerun
#: of a killer beside it before it, too, runs alone: it never reaches `max_rescues` by
#: collateral alone.
QUARANTINE_AFTER = 2
_SUSPECT_FILTERS = {
    "": f"rescue_count < {QUARANTINE_AFTER}",
    "_suspect": f"rescue_count >= {QUARANTINE_AFTER}",
}
#: A claim continuing after the worker's previous one: equality on the leading key and a row
#: comparison on the rest, which the btree turns into the scan's starting point.
_CURSOR_FILTER = (
    "priority = %(after_priority)s::integer"
    " AND (run_at, id) > (%(after_run_at)s::timestamptz, %(after_id)s::bigint)"
)
#: The job listing's state filter per state, literal (see job_list.sql); the state is the one
#: `job_status` shows, where a scheduled job whose time has come reads as available.
_LIST_STATES = {
    "": "true",
    "_scheduled": "j.state = 'scheduled' AND j.run_at > now()",
    "_available": "(j.state = 'available' OR (j.state = 'scheduled' AND j.run_at <= now()))",
    # Claimed (in a worker's buffer) and running are both `running` in the table.
    "_claimed": "j.state = 'running' AND j.started_at IS NULL",
    "_running": "j.state = 'running' AND j.started_at IS NOT NULL",
    **{
        f"_{state}": f"j.state = '{state}'"
        for state in ("retrying", "completed", "failed", "cancelled", "waiting")
    },
}
_VARIANTS = {
    "job_list": {
        f"job_list{newer}{s}": {"state_filter": f, "direction": direction}
        for newer, direction in (("", "DESC"), ("_newer", "ASC"))
        for s, f in _LIST_STATES.items()
    },
    "job_claim": {
        f"job_claim{suspect}{queues}": {
            **_queue_fragments(queues),
            "suspect_filter": sf,
            "cursor_filter": "true",
        }
        for suspect, sf in _SUSPECT_FILTERS.items()
        for queues in _QUEUE_FILTERS
    }
    | {
        # Ordinary claims in one index order only: every queue (but some), or one queue.
        f"job_claim_after{queues}": {
            **_queue_fragments(queues),
            "suspect_filter": _SUSPECT_FILTERS[""],
            "cursor_filter": _CURSOR_FILTER,
        }
        for queues in ("_one", "_all", "_except")
    },
}


class Queries:
    """The named queries, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)
        self.schema = schema
        self._texts: dict[str, str] = {}
        for name, text in _query_texts().items():
            variants = _VARIANTS.get(name, {name: {}})
            for variant, fragments in variants.items():
                parts = {k: sql.SQL(v).format(schema=ident) for k, v in fragments.items()}
                self._texts[variant] = sql.SQL(text).format(schema=ident, **parts).as_string()
        self.jobs_channel = f"{schema}_jobs"
        self.done_channel = f"{schema}_done"
        self.jobs_table = f"{ident.as_string()}.jobs"
        #: A utility statement (it cannot be prepared, so it is no named query): planner
        #: statistics for the jobs table, when jobs_analyze_needed says they are missing or
        #: stale (autovacuum off, or a bulk load that outran it). Needs the table's owner.
        self.analyze_jobs = f"ANALYZE {self.jobs_table}"

    @staticmethod
    def listen(channel: str) -> str:
        """`LISTEN` on a channel, quoted as an identifier."""
        return sql.SQL("LISTEN {}").format(sql.Identifier(channel)).as_string()

    def __getitem__(self, name: str) -> str:
        return self._texts[name]

    def names(self) -> list[str]:
        return sorted(self._texts)
