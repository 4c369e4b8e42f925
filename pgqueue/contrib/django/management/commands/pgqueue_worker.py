"""`manage.py pgqueue_worker`: pgqueue's worker, running the Django tasks of the installed
apps for one task backend."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pgqueue import Worker, configure_logging
from pgqueue._db.errors import DatabaseError
from pgqueue.errors import PgQueueError, SchemaNotMigrated


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run a pgqueue worker for the Django tasks of the installed apps. It serves the"
        " backend's QUEUES unless --queue says otherwise; SIGINT/SIGTERM stop it gracefully"
        " (running tasks get a grace period), a second signal at once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "-q",
            "--queue",
            action="append",
            dest="queues",
            metavar="QUEUE",
            help="Queue to serve (repeatable; default: the backend's QUEUES, or every queue"
            " when QUEUES is empty).",
        )
        parser.add_argument(
            "-c", "--concurrency", type=int, default=16, help="Tasks run at once (default 16)."
        )
        parser.add_argument("--burst", action="store_true", help="Exit when no task is due.")
        parser.add_argument(
            "--backend", default="default", help="The TASKS alias to serve (default: default)."
        )
        parser.add_argument(
            "--log-level",
            default="INFO",
            help="pgqueue's log level, to stderr (default: INFO), unless LOGGING gives the"
            " pgqueue logger handlers of its own.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from pgqueue._runtime.settings import MAX_CONCURRENCY

        from ..._compat import task_backends
        from ..._worker import DjangoWorkerHost
        from ...backend import PgQueueBackend

        try:
            backend = task_backends[options["backend"]]
        except Exception as exc:
            raise CommandError(str(exc)) from None
        if not isinstance(backend, PgQueueBackend):
            raise CommandError(
                f"TASKS[{options['backend']!r}] is {type(backend).__name__}, not"
                " pgqueue.contrib.django.PgQueueBackend"
            )
        queues = options["queues"] or (sorted(backend.queues) or None)
        unknown = sorted(set(options["queues"] or ()) - backend.queues) if backend.queues else []
        if unknown:
            raise CommandError(
                f"queue {', '.join(map(repr, unknown))} is not in TASKS[{backend.alias!r}]"
                f"['QUEUES'] ({', '.join(sorted(backend.queues))})"
            )
        concurrency = options["concurrency"]
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CommandError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not logging.getLogger("pgqueue").handlers:  # Django's LOGGING did not route it
            try:
                configure_logging(options["log_level"].upper())
            except (ValueError, PgQueueError) as exc:
                raise CommandError(str(exc)) from None
        host = DjangoWorkerHost(backend)
        try:
            worker = Worker(host, queues=queues, concurrency=concurrency, burst=options["burst"])
            asyncio.run(worker.run())
        except SchemaNotMigrated as exc:
            raise CommandError(f"{exc}; with Django: `manage.py migrate`") from None
        except (PgQueueError, DatabaseError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            host.close()
