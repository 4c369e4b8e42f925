"""Prometheus metrics for a worker process, through the official client library.

A subscriber of the worker's event stream. `prometheus-client` is imported only when a
worker starts with a metrics port, so it stays an optional dependency
(`pip install 'pgqueue[metrics]'`).
"""

from __future__ import annotations

from typing import Any

from ._runtime.events import Event, OutcomesWritten, Rescued
from .errors import ConfigurationError


class Metrics:
    """The worker's counters, histograms and gauges, served on `port`."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ConfigurationError(
                "metrics need prometheus-client: pip install 'pgqueue[metrics]'"
            ) from exc
        self.registry = prom.CollectorRegistry()
        labels = ["queue", "task"]
        self.completed = prom.Counter(
            "pgqueue_jobs_completed", "Jobs completed", labels, registry=self.registry
        )
        self.failed = prom.Counter(
            "pgqueue_jobs_failed", "Jobs failed for good", labels, registry=self.registry
        )
        self.retried = prom.Counter(
            "pgqueue_jobs_retried", "Failed attempts to be retried", labels, registry=self.registry
        )
        self.rescued = prom.Counter(
            "pgqueue_jobs_rescued",
            "Jobs rescued from dead workers",
            ["queue"],
            registry=self.registry,
        )
        self.duration = prom.Histogram(
            "pgqueue_job_duration_seconds",
            "Task run time per attempt",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.depth = prom.Gauge(
            "pgqueue_queue_depth",
            "Jobs per queue and state",
            ["queue", "state"],
            registry=self.registry,
        )
        self.lag = prom.Gauge(
            "pgqueue_queue_lag_seconds",
            "Age of the oldest due job",
            ["queue"],
            registry=self.registry,
        )
        # Flow control (DESIGN.md section 8), from the queue_limits view: group "" is the
        # queue's own row.
        flow_labels = ["queue", "group", "kind"]
        self.limit = prom.Gauge(
            "pgqueue_limit",
            "A concurrency limit (kind=concurrency) or a rate limit's starts per window"
            " (kind=rate)",
            flow_labels,
            registry=self.registry,
        )
        self.limit_used = prom.Gauge(
            "pgqueue_limit_in_use",
            "Slots held (kind=concurrency) or starts in the current window (kind=rate)",
            flow_labels,
            registry=self.registry,
        )
        self.max_depth = prom.Gauge(
            "pgqueue_queue_max_depth", "A queue's max_depth", ["queue"], registry=self.registry
        )
        self.rejected = prom.Gauge(
            "pgqueue_enqueues_rejected",
            "Enqueues refused with QueueFull by any client, since the schema was created",
            registry=self.registry,
        )
        try:
            self.server, self.thread = prom.start_http_server(
                port, addr=addr, registry=self.registry
            )
        except OSError as exc:  # in use, or an address this host does not have
            raise ConfigurationError(
                f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
            ) from None

    def __call__(self, event: Event) -> None:
        if isinstance(event, OutcomesWritten):
            for o in event.outcomes:
                if o.job.id in event.accepted:
                    self.outcome(o.job.queue, o.job.task, o.state.value, o.duration)
        elif isinstance(event, Rescued):
            for row in event.jobs:
                self.rescued.labels(row[2]).inc()

    def outcome(self, queue: str, task: str, state: str, duration: float) -> None:
        counter = {
            "completed": self.completed,
            "failed": self.failed,
            "retrying": self.retried,
        }.get(state)
        if counter is not None:
            counter.labels(queue, task).inc()
        self.duration.labels(queue, task).observe(duration)

    def queues(self, stats: list[Any]) -> None:
        for s in stats:
            for state in ("scheduled", "available", "claimed", "running", "retrying"):
                self.depth.labels(s.queue, state).set(getattr(s, state))
            self.lag.labels(s.queue).set(s.lag_seconds)

    def flow(self, limits: list[Any], rejected: int) -> None:
        self.rejected.set(rejected)
        for row in limits:
            group = row.group_key or ""
            if row.concurrency is not None:
                self.limit.labels(row.queue, group, "concurrency").set(row.concurrency)
                self.limit_used.labels(row.queue, group, "concurrency").set(row.running)
            if row.rate is not None:
                count = int(row.rate.split("/", 1)[0])
                self.limit.labels(row.queue, group, "rate").set(count)
                self.limit_used.labels(row.queue, group, "rate").set(row.starts or 0)
            if row.group_key is None and row.max_depth is not None:
                self.max_depth.labels(row.queue).set(row.max_depth)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
