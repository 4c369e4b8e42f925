"""Plans: the client's logic written once, as generators that yield the steps to run.

A plan never touches a connection. It yields a step (a named query, a LISTEN, a wait for a
notification) and receives that step's result; a driver in `pgqueue._db.targets` runs the
steps on a sync or an async connection. So enqueue, the admin API and `wait` exist once, and
the sync and async public methods are one-line shells over the same plan (psycopg 3's
generators-plus-`wait()` split, at pgqueue's scale).

Steps are named tuples: one is built per statement, on the enqueue path too.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class Query(NamedTuple):
    """Run the named query (`sql/queries/<name>.sql`) with these parameters.

    The result sent back is the list of row tuples, or of dicts keyed by column name when
    `columns` is set (operator listings), or an empty list for a statement without rows.
    """

    name: str
    params: Mapping[str, Any] | None = None
    columns: bool = False


class Listen(NamedTuple):
    """LISTEN on a channel (the driver quotes it); the result is whether it listens now.

    A driver without a listening connection (behind a transaction-mode pooler with no
    `listen_dsn`) answers False, and the plan polls instead.
    """

    channel: str


class AwaitNotify(NamedTuple):
    """Wait until a notification arrives on a LISTENed channel, or `timeout` seconds pass.

    Without a listening connection the driver just sleeps for `timeout`."""

    timeout: float


class Pipeline(NamedTuple):
    """Run these queries in order, each sent without waiting for the one before where the
    driver can (psycopg's pipeline mode; other drivers run them one by one). The result is
    the list of each query's result, as for `Query`.

    `queries` may be an iterator that builds each query as it is consumed: the client then
    builds the next one while the server runs the one before. A query that fails ends the
    step with its error, and so does an error raised while building one; the queries sent
    before it have run, so a plan uses this step where the transaction that holds them is
    rolled back on an error."""

    queries: Iterable[Query]


Step = Query | Listen | AwaitNotify | Pipeline
#: A plan yields steps, receives each step's result, and returns its value.
Plan = Generator[Step, Any, T]


class DuplicateKey(Exception):
    """Thrown into a plan by a driver when a statement hit a unique constraint.

    Plans cannot catch driver exceptions (the core does not know the driver); this one they
    may turn into a meaningful error, such as a retry refused because of a `unique_key`."""


def run_pure(plan: Plan[T], results: list[Any]) -> tuple[list[Step], T]:
    """Drive a plan with canned results (unit tests): the steps it yielded and its value."""
    steps: list[Step] = []
    feed = iter(results)
    try:
        steps.append(next(plan))
        while True:
            steps.append(plan.send(next(feed)))
    except StopIteration as done:
        return steps, done.value
