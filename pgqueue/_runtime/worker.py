"""The Worker: composes the services that claim, run and record jobs, and decides nothing.

One process runs one Worker. The Producer claims due jobs with SKIP LOCKED (several per
statement when several slots are free), the Notifier turns NOTIFY into an immediate claim
(polling every `poll_interval` is the safety net), the Executor runs tasks, the Completer
records outcomes in batches, the Heartbeat keeps the worker's row fresh, and the elected
leader runs maintenance. No transaction stays open while a task runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from .._core import schedules
from .._core.claiming import Ledger
from .._core.schedules import Schedule
from .._core.schema import check_schema
from .._db.claim import ClaimStatement
from .._db.errors import DatabaseError
from .._db.migrate import latest_version
from .._db.pools import Database
from .._db.queries import Queries
from .._db.worker import WorkerDb
from .._metrics import Metrics
from .._task import Task
from . import startup
from .completer import Completer
from .events import Events, Stats
from .executor import Executor
from .heartbeat import CancelWatcher, Heartbeat, QueueSampler
from .leadership import Elector
from .maintenance import FLOW_INTERVAL, Analyzer, FlowKeeper, Pruner, Rescuer
from .notifier import Notifier
from .producer import Producer
from .scheduler import Scheduler
from .service import Clock, CrashWatch, LeaderGroup, Service
from .settings import WorkerSettings

log = logging.getLogger("pgqueue.worker")


class WorkerHost(Protocol):
    """What a worker needs of its App (a protocol, so the runtime never imports the App)."""

    database: Database
    queries: Queries
    redact_keys: frozenset[str]

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...

    @property
    def declared_schedules(self) -> Mapping[str, Schedule]: ...


class Worker:
    """Runs the tasks of an App from the database until stopped.

    `burst=True` makes it exit once no job is due and none is running (jobs scheduled for
    later, including retries waiting out their backoff, are left for a later run).
    """

    def __init__(self, app: WorkerHost, *, clock: Clock | None = None, **settings: Any) -> None:
        self.app = app
        self.settings = s = WorkerSettings.from_kwargs(settings)
        self.id = uuid.uuid4()
        self.clock = clock or Clock()
        self.events = Events()
        self.stats = Stats()
        self.events.subscribe(self.stats)
        self.metrics: Metrics | None = None
        self.signals = 0
        #: Set when run() has returned or raised: nothing of this worker runs any more.
        self.finished = False
        database = app.database.derive(
            prepared_statements=s.prepared_statements, listen_dsn=s.listen_dsn
        )
        #: Listening needs a connection that can LISTEN: behind a transaction-mode pooler
        #: without a `listen_dsn`, the worker polls.
        self.listen = s.listen and database.listen_dsn is not None
        self.db = WorkerDb(
            database,
            app.queries,
            listen=self.listen,
            application_name=f"pgqueue worker {os.getpid()}",
            on_connect=self._on_connect,
        )
        self.ledger = Ledger(s.concurrency, *s.prefetch_range())
        statement = ClaimStatement(app.queries, self.id, s.queues, s.exclude_queues)
        self.completer = Completer(
            self.db, statement, self.ledger, self.events, written=self._slots_freed
        )
        self.executor = Executor(
            app.tasks,
            self.ledger,
            self.events,
            record=self.completer.record,
            slot_freed=lambda job_id: None,  # the Producer's own, once it exists (below)
            began=self.completer.started,
            worker_name=f"{socket.gethostname()}:{os.getpid()}",
            redact_keys=app.redact_keys,
            concurrency=s.concurrency,
            host=app,
        )
        self.producer = Producer(
            self.db,
            statement,
            self.ledger,
            self.executor,
            self.completer,
            self.events,
            s,
            self.clock,
        )
        self.executor.slot_freed = self.producer.slot_freed
        self.completer.claim_due = self.producer.carries_successes
        self.scheduler = Scheduler(self.db, self.clock)
        self.notifier = Notifier(
            self.db,
            s.queues,
            self.events,
            nudge=self.producer.nudge,
            excluded=s.exclude_queues,
            check_interval=s.listener_check_interval,
            ping=f"#ping {self.id}",
            schedules_changed=self.scheduler.changed,
        )
        self.heartbeat = Heartbeat(
            self.db,
            self.clock,
            worker_id=self.id,
            queues=s.queues,
            concurrency=s.concurrency,
            interval=s.heartbeat_interval,
            timeout=s.heartbeat_timeout,
            exclude_queues=s.exclude_queues,
        )
        self.analyzer = Analyzer(self.db, self.clock, interval=s.prune_interval)
        self.maintenance = LeaderGroup(
            [
                Rescuer(
                    self.db,
                    self.clock,
                    self.events,
                    interval=s.heartbeat_interval,
                    max_rescues=s.max_rescues,
                ),
                Pruner(self.db, self.clock, self.events, interval=s.prune_interval),
                self.analyzer,
                self.scheduler,
                FlowKeeper(
                    self.db,
                    self.clock,
                    self.events,
                    interval=min(FLOW_INTERVAL, s.heartbeat_interval),
                    idle_interval=s.heartbeat_interval,
                ),
            ]
        )
        self.elector = Elector(
            self.db,
            self.clock,
            self.maintenance,
            worker_id=self.id,
            interval=s.heartbeat_interval,
            ttl=s.heartbeat_timeout,
        )
        self.crash = CrashWatch(self.stop)
        self.services: list[Service] = [
            self.heartbeat,
            CancelWatcher(
                self.db, self.clock, self.executor, worker_id=self.id, interval=s.heartbeat_interval
            ),
            self.elector,
        ]
        if self.listen:
            self.services.append(self.notifier)

    @property
    def started(self) -> bool:
        return self.db.opened

    # --- wiring ---------------------------------------------------------------------------

    def _on_connect(self) -> None:
        """Every new pool connection may follow a server crash, which loses the commits not
        yet flushed: claims that recorded nothing (asynchronous by design), and, on a server
        running with `synchronous_commit = off`, outcomes too. A lost outcome leaves its row
        `running` under this live worker, which believes the job finished, so nothing would
        ever rescue it: the next claim first gives back every row it does not know of.
        A connection opened for another reason costs one query that matches nothing."""
        self.producer.orphans_possible = True

    def _slots_freed(self) -> None:
        self.producer.wakeup.wake()

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop claiming and finish within its grace period."""
        self.executor.releasing = True
        self.producer.stop()

    def _on_signal(self, signum: int) -> None:
        self.signals += 1
        if self.signals == 1:
            grace = self.settings.shutdown_grace
            log.info("signal %s: stopping; running jobs get %.0f s", signum, grace)
            self.stop()
        else:
            log.warning("second signal: stopping now")
            self.executor.abandon()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self.settings.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        await self.db.open(timeout=30)
        self.executor.open()
        s = self.settings
        if s.metrics_port is not None:
            self.metrics = Metrics(s.metrics_port, s.metrics_addr)
            self.events.subscribe(self.metrics)
            self.services.append(
                QueueSampler(
                    self.db,
                    self.clock,
                    self.metrics.queues,
                    interval=s.heartbeat_interval,
                    publish_flow=self.metrics.flow,
                )
            )
        try:
            await self.db.run(check_schema(self.app.queries.schema, latest_version()))
            await self.heartbeat.register()
            await self.announce()
            await self.analyzer.run_once()  # every worker, once: a claim planned blind is slow
            await startup.warn_unknown_queues(self.db, s.queues, s.exclude_queues)
            queues = s.queues or "all"
            log.info("worker %s started: queues=%s concurrency=%d", self.id, queues, s.concurrency)
            self.crash.attach(self.completer, *self.services, *self.maintenance.services)
            self.completer.start()
            for service in self.services:
                await service.start()
            await self.producer.run()
            if self.signals < 2:
                await self.executor.drain(s.shutdown_grace)
        finally:
            # However run() ends (a stop, an error, a cancellation from outside), no job may
            # still be executing when its row is released.
            self.stop()
            await self.executor.abandon_all()
            # Signal handlers stay installed until the end: a second signal during the final
            # flush must cut it short, not kill the process with rows left `running`.
            try:
                await self._finish()
            finally:
                self.finished = True
                for sig in installed:
                    loop.remove_signal_handler(sig)
        if self.crash.error is not None:
            raise self.crash.error

    async def announce(self) -> None:
        """Tasks, topics and schedules into the database; every App's redaction keys back."""
        name = self.executor.worker_name
        self.executor.redact_keys = await startup.announce(self.db, self.app, self.id, name)

    async def _finish(self) -> None:
        # Let the completer finish the write it may be in the middle of, then record the rest.
        await self.completer.stop(timeout=2 if self.signals > 1 else 30)
        for service in reversed(self.services):
            await service.stop()
        await self.completer.flush_all()
        try:
            await self.heartbeat.deregister()
            if self.app.declared_schedules:
                await self.db.run(schedules.undeclare(self.id))
            await self.elector.resign()
        except DatabaseError as exc:  # the database may be gone: the heartbeat timeout covers it
            log.debug("could not deregister: %s", exc)
        self.executor.shutdown()
        await self.db.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("worker %s stopped: %s", self.id, dict(self.stats))
