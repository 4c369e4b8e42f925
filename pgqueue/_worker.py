"""The worker runtime: an asyncio core that claims, runs and records jobs.

One process runs one Worker: a fetch loop claims due jobs with SKIP LOCKED (several per query
when several slots are free), a listener connection turns NOTIFY into an immediate fetch
(polling every `poll_interval` is the safety net), a completer records outcomes in batches,
and a heartbeat keeps the worker's row fresh. No transaction stays open while a task runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import json
import logging
import os
import queue as queue_mod
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import AsyncConnectionPool

from . import _sql
from ._app import App, Task
from ._logging import job_extra, redact
from ._metrics import Metrics
from ._policy import DEFAULT_RETRY, RetryPolicy, decide_failure
from ._validate import check_int, check_name, check_seconds, encode_result
from .errors import JobTimeout, UnknownTask, ValidationError
from .types import QueueStats

log = logging.getLogger("pgqueue.worker")

#: Seconds a worker's claims continue after its previous one before starting from the front
#: of the claim order again: the longest a job that sorts earlier waits behind the cursor.
CURSOR_TTL = 1.0

#: Seconds between an idle worker's looks for rescued (suspect) jobs, when it found none.
SUSPECT_PROBE_INTERVAL = 1.0

#: Characters of traceback kept per failed attempt: enough to find the line, bounded so that
#: a job failing in deep recursion cannot bloat its row.
TRACEBACK_LIMIT = 8000


class ClaimedJob(NamedTuple):
    """A claimed row as the worker keeps it (a tuple: built once per job, on the hot path)."""

    id: int
    task: str
    queue: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    lease: str  # text: it only travels back to the database
    timeout: float | None

    @property
    def log_extra(self) -> dict[str, Any]:
        """Record attributes naming this job on every log line about it."""
        return job_extra(self.id, self.task, self.queue, self.attempt)


@dataclass(frozen=True)
class JobContext:
    """What a running task may ask about its own job (`pgqueue.current_job()`)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int


#: The claimed row itself; the JobContext is built only for a task that asks for it.
_current: contextvars.ContextVar[ClaimedJob] = contextvars.ContextVar("pgqueue_current_job")


def current_job() -> JobContext:
    """The job the calling task is running for; raises LookupError outside a task."""
    try:
        job = _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a running task") from None
    return JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts)


class Outcome(NamedTuple):
    """What one attempt came to, waiting in the completer's buffer."""

    job: ClaimedJob
    result: str | None = None  # JSON text, for a success
    error: dict[str, Any] | None = None
    state: str = "completed"  # completed | retrying | failed | cancelled
    duration: float = 0.0
    delay: float = 0.0


def _storable(text: str) -> str:
    """jsonb refuses NUL and lone surrogates; an error message must never be refused."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def error_record(exc: BaseException, kind: str = "error") -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "type": _storable(type(exc).__name__),
        "message": _storable(str(exc)[:2000]),
        "traceback": _storable(tb[-TRACEBACK_LIMIT:]),
        "kind": kind,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


class _DaemonThreads:
    """A fixed set of daemon threads for sync tasks.

    A sync task cannot be interrupted; with daemon threads, one that hangs past shutdown does
    not keep the process alive (concurrent.futures joins its threads at interpreter exit).

    Results come back to the event loop in batches: a thread appends to `_done` and wakes the
    loop only if no wake-up is already on its way. Waking the loop once per job (a write to its
    self-pipe, a GIL hand-off) costs more than running a short task.
    """

    def __init__(self, size: int) -> None:
        self._queue: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self._done = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._serve, name=f"pgqueue-task-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            try:
                self._done.append((future, fn(), None))
            except BaseException as exc:  # delivered to the waiting future, not lost
                self._done.append((future, None, exc))
            with self._lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False
        while self._done:
            future, result, exc = self._done.popleft()
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((future, fn))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


async def _generic_plans(conn: psycopg.AsyncConnection[Any]) -> None:
    """The worker's statements are written so that one plan fits every call (literal state
    filters matching the partial indexes): planning them again per call, which PostgreSQL's
    plan cache otherwise does for a while and then now and again, is wasted server CPU."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")


class Worker:
    """Runs the tasks of an App from the database until stopped.

    `burst=True` makes it exit once no job is due and none is running (jobs scheduled for
    later, including retries waiting out their backoff, are left for a later run).
    """

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        prefetch: int | None = None,
        burst: bool = False,
        poll_interval: float = 2.0,
        listen: bool = True,
        shutdown_grace: float = 30.0,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 30.0,
        max_rescues: int = 3,
        listener_check_interval: float = 30.0,
        prune_interval: float = 60.0,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        handle_signals: bool = True,
    ) -> None:
        self.app = app
        self.queues = None if not queues else [check_name("queue", q) for q in queues]
        self.concurrency = check_int("concurrency", concurrency, minimum=1)
        #: Jobs claimed ahead of free slots, so slots never wait for a claim's round trip.
        self.prefetch = check_int(
            "prefetch", concurrency if prefetch is None else prefetch, minimum=0
        )
        self.burst = burst
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        if self.poll_interval <= 0:
            raise ValidationError("poll_interval must be positive")
        self.listen = listen
        self.shutdown_grace = check_seconds("shutdown_grace", shutdown_grace)
        self.heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval)
        self.heartbeat_timeout = check_seconds("heartbeat_timeout", heartbeat_timeout)
        if self.heartbeat_timeout <= 2 * self.heartbeat_interval:
            # One late heartbeat must not get a live worker's jobs rescued under it.
            raise ValidationError("heartbeat_timeout must exceed twice heartbeat_interval")
        self.max_rescues = check_int("max_rescues", max_rescues, minimum=0)
        self.prune_interval = check_seconds("prune_interval", prune_interval)
        self.metrics_port = metrics_port
        self.metrics_addr = metrics_addr
        self.metrics: Metrics | None = None
        self.listener_check_interval = check_seconds(
            "listener_check_interval", listener_check_interval
        )
        self.handle_signals = handle_signals
        self.id = uuid.uuid4()
        self.redact_keys = app.redact_keys
        self.q = app.queries

        #: Each running job's asyncio Task (async tasks) or thread future (sync tasks).
        self._running: dict[int, asyncio.Future[Any]] = {}
        self._buffer: collections.deque[ClaimedJob] = collections.deque()
        self._claimed: dict[int, ClaimedJob] = {}
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._maybe_more = True
        self._nudged = False
        self._signals = 0
        self._abandoning = False
        self._closing = False
        self._orphans_possible = False
        self._claiming = False  # a claim statement is under way
        #: Where the next claim continues (priority, run_at, id), and until when.
        self._cursor: tuple[int, datetime, int] | None = None
        self._cursor_until = 0.0
        self.cursor_ttl = CURSOR_TTL
        self._next_suspect_probe = 0.0
        self._quarantined: int | None = None  # a suspect job running alone
        self._cancelling: set[int] = set()  # runs an operator asked to cancel
        self._next_prune = 0.0
        self._analyze_denied = False
        self._is_leader = False
        self._ping = f"#ping {self.id}"  # '#' cannot start a queue name
        self._pool: AsyncConnectionPool[Any] | None = None
        self._threads: _DaemonThreads | None = None
        #: Counters for tests and the CLI's summary line.
        self.stats = {
            "claimed": 0,
            "completed": 0,
            "failed": 0,
            "retried": 0,
            "stale": 0,
            "released": 0,
            "pruned": 0,
            "overdue": 0,
            "cancelled": 0,
            "rescued": 0,
            "listener_rebuilds": 0,
        }

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop claiming and finish within its grace period."""
        self._stop.set()
        self._wake.set()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal %s: stopping; running jobs get %.0f s", signum, self.shutdown_grace)
            self.stop()
        else:
            log.warning("second signal: stopping now")
            self.shutdown_grace = 0
            self._abandon_running()

    def _abandon_running(self) -> None:
        self._abandoning = True
        for task in self._running.values():
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        kwargs: dict[str, Any] = {
            **self.app.connect_kwargs,
            "autocommit": True,
            **self._application_name(),
        }
        if not self.listen:
            # Poll-only is the PgBouncer (transaction mode) setting: no session state at all,
            # so no server-side prepared statements either.
            kwargs["prepare_threshold"] = None
        self._pool = AsyncConnectionPool(
            self.app.dsn,
            min_size=1,
            max_size=3,
            open=False,
            name="pgqueue-worker",
            kwargs=kwargs,
            configure=self._on_connect,
        )
        await self._pool.open(wait=True, timeout=30)
        self._threads = _DaemonThreads(self.concurrency)
        if self.metrics_port is not None:
            self.metrics = Metrics(self.metrics_port, self.metrics_addr)
        helpers: list[asyncio.Task[None]] = []
        try:
            await self._check_schema()
            await self._register()
            await self._analyze_if_stale()
            log.info(
                "worker %s started: queues=%s concurrency=%d",
                self.id,
                self.queues or "all",
                self.concurrency,
            )
            helpers.append(asyncio.create_task(self._complete_loop(), name="pgqueue-completer"))
            helpers.append(asyncio.create_task(self._heartbeat_loop(), name="pgqueue-heartbeat"))
            if self.listen:
                helpers.append(asyncio.create_task(self._listen_loop(), name="pgqueue-listener"))
            await self._fetch_loop()
            await self._drain_running()
        finally:
            # However run() ends (a stop, an error, a cancellation from outside), no job may
            # still be executing when its row is released.
            self._stop.set()
            if self._running:
                self._abandon_running()
                await asyncio.gather(*self._running.values(), return_exceptions=True)
            # Signal handlers stay installed until the end: a second signal during the final
            # flush must cut it short, not kill the process with rows left `running`.
            try:
                await self._finish(helpers)
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

    async def _on_connect(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Every new pool connection may follow a server crash, which loses the commits not
        yet flushed: claims that recorded nothing (asynchronous by design), and, on a server
        running with `synchronous_commit = off`, outcomes too. A lost outcome leaves its row
        `running` under this live worker, which believes the job finished, so nothing would
        ever rescue it: the next claim first gives back every row it does not know of.
        A connection opened for another reason costs one query that matches nothing."""
        self._orphans_possible = True
        if self.listen:
            await _generic_plans(conn)

    def _application_name(self) -> dict[str, Any]:
        """Name our connections in pg_stat_activity, unless the DSN already names them."""
        if conninfo.conninfo_to_dict(self.app.dsn).get("application_name"):
            return {}
        return {"application_name": f"pgqueue worker {os.getpid()}"}

    async def _register(self) -> None:
        await self._execute(
            self.q["worker_register"],
            {
                "id": self.id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "heartbeat_timeout": self.heartbeat_timeout,
            },
        )

    async def _check_schema(self) -> None:
        async def fetch(query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
            return await self._fetch(query, params)

        await _sql.check_schema_async(fetch, self.q)

    async def _finish(self, helpers: list[asyncio.Task[None]]) -> None:
        # Let the completer finish the write it may be in the middle of, then record the rest.
        self._closing = True
        self._outcome_ready.set()
        if helpers:  # helpers[0] is the completer
            await asyncio.wait(helpers[:1], timeout=2 if self._signals > 1 else 30)
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await self._flush_all()
        with contextlib.suppress(psycopg.Error):
            await self._execute(self.q["worker_stop"], {"id": self.id})
            if self._is_leader:
                await self._execute(self.q["leader_resign"], {"worker_id": self.id})
        if self._threads is not None:
            self._threads.shutdown()
        if self._pool is not None:
            await self._pool.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("worker %s stopped: %s", self.id, self.stats)

    # --- database helpers -----------------------------------------------------------------

    async def _fetch(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def _execute(self, query: str, params: dict[str, Any] | None) -> None:
        await self._fetch(query, params)

    # --- claiming -------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while not self._stop.is_set():
            self._start_buffered()
            idle = not self._running and not self._buffer
            room = self.concurrency + self.prefetch - len(self._running) - len(self._buffer)
            # Refill before the buffer runs dry, so a claim's round trip overlaps with running
            # jobs instead of leaving slots idle; with prefetch 0, claim only for free slots.
            low = len(self._buffer) <= self.prefetch // 2
            # A burst worker whose jobs have all finished asks once more before it exits.
            want = self._maybe_more or (self.burst and idle)
            if room > 0 and low and want and self._quarantined is None:
                self._nudged = False
                try:
                    if self._orphans_possible:
                        await self._release_orphans()
                    jobs: list[ClaimedJob] = []
                    if idle and time.monotonic() >= self._next_suspect_probe:
                        jobs = await self._claim(1, suspects=True)
                        if jobs:
                            self._quarantined = jobs[0].id
                            log.info("running rescued job %d alone", jobs[0].id)
                        else:
                            # Rescued jobs are rare: an idle worker woken for a new job
                            # should not pay a round trip for them on every wake-up.
                            self._next_suspect_probe = time.monotonic() + SUSPECT_PROBE_INTERVAL
                    if not jobs:
                        jobs = await self._claim(room)
                except psycopg.Error as exc:
                    # The claim may have committed with its reply lost: check for orphans
                    # once the database answers again.
                    log.warning("claim failed, trying again shortly: %s", exc)
                    self._orphans_possible = True
                    await self._sleep(min(self.poll_interval, 0.5))
                    self._maybe_more = True
                    continue
                # Fewer than asked means the queue is dry for now: wait for a NOTIFY or the
                # next poll rather than re-querying each time a slot frees up.
                self._maybe_more = (
                    len(jobs) == room or self._quarantined is not None or self._nudged
                )
                for job in jobs:
                    self._claimed[job.id] = job
                self._buffer.extend(jobs)
                self._start_buffered()
                if not jobs and self.burst and idle:
                    log.info("burst: nothing left to do")
                    return
                if self._maybe_more and len(self._buffer) <= self.prefetch // 2:
                    continue  # the next turn claims again, or sleeps if there is no room
            await self._sleep(self.poll_interval)
            if not self._wake.is_set() and not self._stop.is_set():
                self._maybe_more = True  # poll timer fired
            self._wake.clear()

    def _start_buffered(self) -> None:
        # A slot frees when its task returns, while the outcome waits for the next batched
        # write; but no more than `concurrency` outcomes may wait, so a worker killed at any
        # moment has lost the outcomes of at most 2 x concurrency runs (running + waiting),
        # and only those can run again.
        while (
            self._buffer
            and len(self._running) < self.concurrency
            and len(self._claimed) - len(self._buffer) < 2 * self.concurrency
        ):
            if self._quarantined is not None and self._running:
                return  # a suspect runs alone
            self._start(self._buffer.popleft())

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _nudge(self) -> None:
        """Something may be claimable now (a NOTIFY, a reconnect): claim without waiting."""
        self._maybe_more = True
        self._nudged = True  # survives a claim that was already under way
        self._wake.set()

    async def _claim(self, limit: int, *, suspects: bool = False) -> list[ClaimedJob]:
        # Successes waiting for their write ride along with an ordinary claim: one round trip
        # and one commit for both.
        done = [] if suspects else self._take_successes()
        self._claiming = True
        try:
            if suspects or not self._cursor_fresh():
                return await self._claim_and_complete(limit, done, suspects=suspects)
            jobs = await self._claim_and_complete(limit, done, after=self._cursor)
            if len(jobs) < limit:
                # The continuation ran dry, or what is left sorts before it: from the front.
                self._cursor = None
                done = []
                jobs += await self._claim_and_complete(limit - len(jobs), [])
            return jobs
        except BaseException:
            # Kept, whatever went wrong: written again by the next claim or flush (if this
            # one did commit, the lease guard makes the second write a no-op).
            self._outcomes[:0] = done
            raise
        finally:
            self._claiming = False
            if self._outcomes:
                self._outcome_ready.set()  # what arrived meanwhile is the completer's

    def _cursor_fresh(self) -> bool:
        return self._cursor is not None and time.monotonic() < self._cursor_until

    async def _claim_and_complete(
        self,
        limit: int,
        done: list[Outcome],
        *,
        suspects: bool = False,
        after: tuple[int, datetime, int] | None = None,
    ) -> list[ClaimedJob]:
        """One job_claim statement: record `done`, then claim up to `limit` jobs (after the
        cursor `after`, in claim order, if given)."""
        kind = "_all" if self.queues is None else "_one" if len(self.queues) == 1 else "_some"
        name = ("job_claim_suspect" if suspects else "job_claim") + kind
        if after is not None:
            name = "job_claim_after" + kind
        params: dict[str, Any] = {
            "limit": limit,
            "queues": self.queues,
            "worker_id": self.id,
            "queue": self.queues[0] if self.queues else None,
            "ids": "{" + ",".join([str(o.job.id) for o in done]) + "}",
            "leases": "{" + ",".join([o.job.lease for o in done]) + "}",
            "results": "[" + ",".join([o.result or "null" for o in done]) + "]",
            "done_channel": self.q.done_channel,
        }
        if after is not None:
            params |= {"after_priority": after[0], "after_run_at": after[1], "after_id": after[2]}
        rows = await self._fetch(self.q[name], params)
        claimed = [row for row in rows if row[0]]
        jobs = [ClaimedJob(*row[1:9]) for row in claimed]
        if not suspects and limit and kind != "_some":
            self._advance_cursor(claimed, restarted=after is None)
        if done:
            accepted = {row[1] for row in rows if not row[0]}
            self.stats["completed"] += len(accepted)
            self._accept(done, accepted)
        self.stats["claimed"] += len(jobs)
        return jobs

    def _advance_cursor(self, claimed: list[tuple[Any, ...]], *, restarted: bool) -> None:
        """Remember the last claimed row in claim order (priority DESC, run_at, id), where
        the next claim continues (see job_claim.sql)."""
        if not claimed:
            if restarted:
                self._cursor = None
            return
        last = max(claimed, key=lambda row: (-row[9], row[10], row[1]))
        self._cursor = (last[9], last[10], last[1])
        if restarted:
            self._cursor_until = time.monotonic() + self.cursor_ttl

    def _take_successes(self) -> list[Outcome]:
        if not self._outcomes:
            return []
        done = [o for o in self._outcomes if o.state == "completed"]
        if done:
            self._outcomes = [o for o in self._outcomes if o.state != "completed"]
        return done

    async def _release_orphans(self) -> None:
        # Cleared first: a connection opened while this runs sets it again.
        self._orphans_possible = False
        rows = await self._fetch(
            self.q["job_release_orphans"],
            {
                "worker_id": self.id,
                "known": list(self._claimed),
            },
        )
        if rows:
            self.stats["released"] += len(rows)
            log.warning(
                "released %d jobs claimed by a lost reply: %s", len(rows), [r[0] for r in rows]
            )

    def _start(self, job: ClaimedJob) -> None:
        task = self.app.tasks.get(job.task)
        if task is not None and not task.is_async:
            self._start_sync(job, task)
            return
        runner = asyncio.create_task(self._run_job(job, task), name=f"pgqueue-job-{job.id}")
        self._running[job.id] = runner
        runner.add_done_callback(functools.partial(self._job_done, job.id))

    def _job_done(self, job_id: int, _run: asyncio.Future[Any]) -> None:
        self._running.pop(job_id, None)
        if self._quarantined == job_id:
            self._quarantined = None
        self._wake.set()

    # --- running --------------------------------------------------------------------------

    def _start_sync(self, job: ClaimedJob, task: Task[Any, Any]) -> None:
        """A sync task runs in a thread that works out the whole outcome; the event loop only
        sees a future settle. No asyncio Task per job: for short jobs its cost outweighed the
        job's own."""
        assert self._threads is not None
        # A copy of the loop's context per job, so current_job() sees exactly this job.
        run = contextvars.copy_context().run
        future = self._threads.submit(functools.partial(run, self._run_sync, job, task))
        self._running[job.id] = future
        timeout = job.timeout if job.timeout is not None else task.timeout
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                timeout, self._overdue, job, future, timeout
            )
        future.add_done_callback(functools.partial(self._sync_done, job, task.retry, timer))

    def _run_sync(self, job: ClaimedJob, task: Task[Any, Any]) -> Outcome:
        """Runs on a task thread; touches no worker state, only builds the Outcome."""
        _current.set(job)
        debug = self._log_start(job)
        started = time.monotonic()
        try:
            task.check_argument_names(job.args)
            result = task.fn(**job.args)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return self._failure(job, exc, task.retry)
        return self._success(job, result, started, task.retry, debug)

    def _sync_done(
        self,
        job: ClaimedJob,
        policy: RetryPolicy,
        timer: asyncio.TimerHandle | None,
        future: asyncio.Future[Outcome],
    ) -> None:
        if timer is not None:
            timer.cancel()
        self._job_done(job.id, future)
        if future.cancelled():
            # Cancelled by an operator or at shutdown. The thread cannot be stopped: its
            # eventual return is dropped.
            outcome = self._cancelled_outcome(job, policy)
            if outcome is not None:
                self._record(outcome)
        elif (exc := future.exception()) is not None:
            self._record(self._failure(job, exc, policy))
        else:
            self._record(future.result())

    def _overdue(self, job: ClaimedJob, future: asyncio.Future[Outcome], timeout: float) -> None:
        # A thread cannot be interrupted. Past its timeout the job is marked (a warning, and
        # the stuck_jobs view lists it "over timeout"), keeps its slot, and stays `running`
        # so that nothing runs it a second time alongside; its real outcome is recorded when
        # the thread returns. A process wedged for good stops heartbeating and is rescued.
        if future.done():
            return
        self.stats["overdue"] += 1
        log.warning(
            "job %d (%s on %s, attempt %d) passed its timeout of %g s; its thread cannot"
            " be interrupted, so it keeps running and its slot stays taken",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            timeout,
            extra=job.log_extra,
        )

    async def _run_job(self, job: ClaimedJob, task: Task[Any, Any] | None) -> None:
        """An async task (or a row naming no registered task), in its own asyncio Task."""
        policy = task.retry if task is not None else DEFAULT_RETRY
        debug = self._log_start(job)
        started = time.monotonic()
        try:
            result = await self._invoke(task, job)
        except asyncio.CancelledError:
            outcome = self._cancelled_outcome(job, policy)
            if outcome is None:
                raise  # shutdown: the job is released, not failed
            self._record(outcome)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self._record(self._failure(job, exc, policy))
        else:
            self._record(self._success(job, result, started, policy, debug))

    async def _invoke(self, task: Task[Any, Any] | None, job: ClaimedJob) -> Any:
        if task is None:
            raise UnknownTask(f"no task named {job.task!r} is registered in this worker")
        kwargs = job.args
        task.check_argument_names(kwargs)
        timeout = job.timeout if job.timeout is not None else task.timeout
        # Each job task has its own context copy, so this is visible to exactly this job.
        _current.set(job)
        if timeout is None:
            return await task.fn(**kwargs)
        try:
            return await asyncio.wait_for(task.fn(**kwargs), timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(
                f"task {job.task} exceeded its timeout of {timeout:g} s and was cancelled"
            ) from None

    def _log_start(self, job: ClaimedJob) -> bool:
        """Log the start at DEBUG; returns whether DEBUG is on (per-job lines cost nothing
        when it is off)."""
        if not log.isEnabledFor(logging.DEBUG):
            return False
        log.debug(
            "job %d (%s on %s, attempt %d) started: %s",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            redact(job.args, self.redact_keys),
            extra=job.log_extra,
        )
        return True

    def _success(
        self, job: ClaimedJob, result: Any, started: float, policy: RetryPolicy, debug: bool
    ) -> Outcome:
        try:
            encoded = encode_result(result)
        except ValidationError as exc:
            # The task ran but returned something that cannot be stored: running it again
            # would repeat its effects for the same outcome.
            return self._failure(job, exc, policy, retryable=False)
        duration = time.monotonic() - started
        if debug:
            log.debug(
                "job %d (%s on %s, attempt %d) completed in %.3f s",
                job.id,
                job.task,
                job.queue,
                job.attempt,
                duration,
                extra=job.log_extra,
            )
        return Outcome(job, result=encoded, duration=duration)

    def _cancelled_outcome(self, job: ClaimedJob, policy: RetryPolicy) -> Outcome | None:
        """What a cancelled run comes to; None at shutdown, where the job is released."""
        if job.id in self._cancelling:
            self._cancelling.discard(job.id)
            self.stats["cancelled"] += 1
            error = error_record(asyncio.CancelledError("cancelled by request"), "cancel")
            return Outcome(job, error=error, state="cancelled")
        if self._abandoning or self._stop.is_set():
            return None
        return self._failure(job, asyncio.CancelledError("task was cancelled"), policy)

    def _failure(
        self, job: ClaimedJob, exc: BaseException, policy: RetryPolicy, *, retryable: bool = True
    ) -> Outcome:
        """The outcome of a failed attempt; thread-safe (it only logs and builds a record)."""
        decision = decide_failure(job.attempt, job.max_attempts, policy, retryable=retryable)
        kind = "timeout" if isinstance(exc, JobTimeout) else "error"
        log.warning(
            "job %d (%s on %s, attempt %d/%d) failed: %s: %s -> %s",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            job.max_attempts,
            type(exc).__name__,
            exc,
            decision.state,
            extra=job.log_extra,
        )
        return Outcome(
            job, error=error_record(exc, kind), state=decision.state, delay=decision.delay
        )

    def _record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def _drain_running(self) -> None:
        """Shutdown: let running jobs finish within the grace period, then release the rest."""
        if not self._running:
            return
        log.info(
            "waiting up to %.0f s for %d running jobs", self.shutdown_grace, len(self._running)
        )
        _done, pending = await asyncio.wait(
            list(self._running.values()), timeout=self.shutdown_grace
        )
        if pending:
            self._abandon_running()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- recording outcomes -----------------------------------------------------------------

    async def _complete_loop(self) -> None:
        # Exits only between flushes (never cancelled mid-write), once the worker is closing.
        while not self._closing:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            # A claim about to start (woken by the same finished jobs) takes the successes
            # along; while one is under way, only failures are worth a statement of their own.
            await asyncio.sleep(0)
            if self._claiming and all(o.state == "completed" for o in self._outcomes):
                continue  # the claim wakes us again if anything is left when it returns
            try:
                await self._flush()
            except psycopg.Error:
                self._outcome_ready.set()  # the batch was kept; try again after the pause

    async def _flush_all(self) -> None:
        # Jobs claimed but never recorded (cancelled at shutdown) go back without using up
        # an attempt.
        recorded = {o.job.id for o in self._outcomes}
        unfinished = [job for job_id, job in self._claimed.items() if job_id not in recorded]
        for attempt in range(5):
            try:
                await self._flush()
                if unfinished:
                    await self._release(unfinished)
                    unfinished = []
                return
            except psycopg.Error as exc:
                log.warning("could not record outcomes at shutdown (try %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _release(self, jobs: list[ClaimedJob]) -> None:
        rows = await self._fetch(
            self.q["job_release_many"],
            {
                "ids": [j.id for j in jobs],
                "leases": [j.lease for j in jobs],
            },
        )
        for job in jobs:
            self._claimed.pop(job.id, None)
        log.info("released %d unfinished jobs", len(rows))

    async def _flush(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self._write_outcomes(batch)
            except BaseException as exc:
                # Keep what was not written, whatever went wrong (a lost connection, a
                # cancellation): the next flush, or the shutdown flush, writes it again.
                self._outcomes[:0] = [o for o in batch if o.job.id in self._claimed]
                if isinstance(exc, psycopg.Error):
                    log.warning("could not record %d outcomes, retrying: %s", len(batch), exc)
                    await asyncio.sleep(0.5)
                raise

    async def _write_outcomes(self, batch: list[Outcome]) -> None:
        done = [o for o in batch if o.state == "completed"]
        failed = [o for o in batch if o.state != "completed"]
        if done:
            # The claim statement with a limit of 0 records successes and claims nothing.
            await self._claim_and_complete(0, done)
        if failed:
            rows = await self._fetch(
                self.q["job_fail_many"],
                {
                    "ids": [o.job.id for o in failed],
                    "leases": [o.job.lease for o in failed],
                    "states": [o.state for o in failed],
                    "delays": [o.delay for o in failed],
                    "errors": [json.dumps(o.error) for o in failed],
                    "done_channel": self.q.done_channel,
                },
            )
            accepted = {r[0] for r in rows}
            for o in failed:
                if o.job.id in accepted and o.state in ("failed", "retrying"):
                    self.stats["failed" if o.state == "failed" else "retried"] += 1
            self._accept(failed, accepted)

    def _accept(self, written: list[Outcome], accepted: set[int]) -> None:
        """Bookkeeping once outcomes are written: `accepted` are the ids the lease guard let
        through; the others belonged to runs whose job had moved on."""
        if self.metrics is not None:
            for o in written:
                if o.job.id in accepted:
                    self.metrics.outcome(o.job.queue, o.job.task, o.state, o.duration)
        stale = [o.job.id for o in written if o.job.id not in accepted]
        if stale:
            # The lease moved on (the job was rescued and claimed again): this run's outcome
            # must not overwrite the newer one.
            self.stats["stale"] += len(stale)
            log.warning("ignored outcomes of jobs no longer leased to this worker: %s", stale)
        for o in written:
            self._claimed.pop(o.job.id, None)
        self._wake.set()  # their slots are free now

    # --- background helpers -----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat()
                await self._cancel_requested()
                await self._maintain()
                if self.metrics is not None:
                    rows = await self._fetch(self.q["queue_stats"], None)
                    self.metrics.queues([QueueStats(*row) for row in rows])
            except psycopg.Error as exc:
                log.warning("heartbeat or maintenance failed, retrying next beat: %s", exc)

    async def _heartbeat(self) -> None:
        if not await self._fetch(self.q["worker_heartbeat"], {"id": self.id}):
            log.warning("worker row was missing (cleaned up while we were cut off): re-registering")
            await self._register()

    async def _cancel_requested(self) -> None:
        """Cancel the runs an operator asked to stop (`pgqueue cancel` on a running job)."""
        if not self._running:
            return
        rows = await self._fetch(self.q["job_cancel_requested"], {"worker_id": self.id})
        for (job_id,) in rows:
            task = self._running.get(job_id)
            if task is not None and job_id not in self._cancelling:
                log.info("job %d: cancel requested, cancelling it", job_id)
                self._cancelling.add(job_id)
                task.cancel()

    async def _maintain(self) -> None:
        """Rescue the jobs of dead workers, in exactly one process: the elected leader."""
        elected = await self._fetch(
            self.q["leader_elect"],
            {
                "worker_id": self.id,
                "ttl": self.heartbeat_timeout,
            },
        )
        if bool(elected) != self._is_leader:
            log.info(
                "worker %s %s maintenance leader", self.id, "is now" if elected else "is no longer"
            )
        self._is_leader = bool(elected)
        if not self._is_leader:
            return
        rows = await self._fetch(
            self.q["job_rescue"],
            {"max_rescues": self.max_rescues},
        )
        if self.metrics is not None:
            for row in rows:
                self.metrics.rescued.labels(row[2]).inc()
        if rows:
            self.stats["rescued"] += len(rows)
            log.warning(
                "rescued %d jobs of dead workers: %s", len(rows), [(r[0], r[1]) for r in rows]
            )
        await self._prune()

    async def _analyze_if_stale(self) -> None:
        """ANALYZE the jobs table when its statistics are missing or stale.

        Autovacuum does this where it runs; where it is off (or a bulk load outran it), the
        claim would be planned on no statistics and sort the whole backlog on every call.
        Needs the table's owner; without the privilege it says so once and gives up.
        """
        if self._analyze_denied:
            return
        table = f"{sql.Identifier(self.q.schema).as_string()}.jobs"
        rows = await self._fetch(self.q["jobs_analyze_needed"], {"table": table})
        if not rows or not rows[0][0]:
            return
        try:
            await self._execute(
                sql.SQL("ANALYZE {}.jobs").format(sql.Identifier(self.q.schema)).as_string(),
                None,
            )
            log.info("analyzed %s: its planner statistics were missing or stale", table)
        except psycopg.errors.InsufficientPrivilege as exc:
            self._analyze_denied = True
            log.warning("cannot ANALYZE %s (%s); make sure autovacuum runs", table, exc)

    async def _prune(self) -> None:
        """Retention: the leader deletes finished jobs past their `retention`, a few small
        batches per interval, so history never grows without bound nor costs a long lock."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_prune:
            return
        self._next_prune = loop.time() + self.prune_interval
        await self._analyze_if_stale()
        for _ in range(10):
            rows = await self._fetch(self.q["job_prune"], {"older_than": None, "batch": 1000})
            self.stats["pruned"] += len(rows)
            if len(rows) < 1000:
                return

    async def _listen_loop(self) -> None:
        """Hold one LISTEN connection, rebuilding it when it breaks or goes silent.

        Every `listener_check_interval` seconds the worker notifies itself through the pool;
        if that ping has not come back by the next check, the connection is presumed
        half-open and replaced. After every (re)LISTEN the fetch loop polls once, because
        anything enqueued meanwhile was announced to nobody.
        """
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.q.jobs_channel))
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.app.dsn,
                    **{**self.app.connect_kwargs, "autocommit": True, **self._application_name()},
                )
                async with conn:
                    await conn.execute(listen)
                    backoff = 0.1
                    self._nudge()
                    await self._receive(conn)
                self.stats["listener_rebuilds"] += 1
                log.warning("listener went silent; rebuilding it")
            except psycopg.Error as exc:
                self.stats["listener_rebuilds"] += 1
                log.warning("listener lost its connection, reconnecting: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Deliver notifications until the self-ping goes unanswered."""
        ping_pending = False
        while True:
            async for note in conn.notifies(timeout=self.listener_check_interval):
                if note.payload == self._ping:
                    ping_pending = False
                elif self.queues is None or note.payload in self.queues:
                    self._nudge()
            if ping_pending:
                return
            try:
                await self._execute(
                    "SELECT pg_notify(%(channel)s, %(ping)s)",
                    {"channel": self.q.jobs_channel, "ping": self._ping},
                )
                ping_pending = True
            except psycopg.OperationalError as exc:
                log.warning("could not send the listener ping: %s", exc)
